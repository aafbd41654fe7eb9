"""The benchmark grid's names: model shapes, batch layouts and ops.  No torch import, so the
command line can offer them as choices without loading it."""

from __future__ import annotations

# (hidden, q_out, kv_out, intermediate) per model and tensor-parallel degree (per-GPU shards)
MODELS: dict[str, dict[str, int]] = {
    "llama3-8b": dict(hidden=4096, q=4096, kv=1024, inter=14336),
    "llama3-70b-tp1": dict(hidden=8192, q=8192, kv=1024, inter=28672),
    "llama3-70b-tp8": dict(hidden=8192, q=1024, kv=128, inter=3584),
    "qwen2.5-7b": dict(hidden=3584, q=3584, kv=512, inter=18944),
    "mistral-7b": dict(hidden=4096, q=4096, kv=1024, inter=14336),
}

# name -> (segment lengths, number of adapters); segment i uses adapter i % adapters
LAYOUTS: dict[str, tuple[list[int], int]] = {
    "prefill": ([1024] * 4, 4),
    "mixed": ([512] * 8 + [1] * 64, 8),
    "decode64": ([1] * 64, 8),
    "decode256": ([1] * 256, 32),
    "decode1": ([1] * 8, 1),
    "tiny": ([3, 0, 5, 1], 3),
}

# op -> what it runs: the shrink and expand stages alone, or the fused layers end to end
BENCH_OPS = ("shrink", "shrink_qkv", "expand", "qkv", "gate_up", "shrink_down")
