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
    # K and N not multiples of 64 (multiples of 8, so 16-byte rows), timed in float16
    "odd-fp16": dict(hidden=4000, q=4000, kv=1000, inter=10000),
    # the CPU smoke mode's shapes (the benchmark suite without CUDA)
    "tiny-model": dict(hidden=48, q=48, kv=16, inter=40),
}
# models timed in another dtype than bfloat16
MODEL_DTYPES: dict[str, str] = {"odd-fp16": "float16", "tiny-model": "float16"}

# name -> (segment lengths, number of adapters); segment i uses adapter i % adapters
LAYOUTS: dict[str, tuple[list[int], int]] = {
    "prefill": ([1024] * 4, 4),
    "mixed": ([512] * 8 + [1] * 64, 8),
    "decode64": ([1] * 64, 8),
    "decode256": ([1] * 256, 32),
    "decode1": ([1] * 8, 1),
    "decode128x64": ([1] * 128, 64),  # many-adapter decode: 64 adapters, 2 tokens each
    "decode256-rank0": ([1] * 256, 8),  # most tokens carry no adapter (see RANK0_SHARE)
    "tiny": ([3, 0, 5, 1], 3),
}
# layouts where slot 0 has rank 0 and this share of the segments use it
RANK0_SHARE: dict[str, float] = {"decode256-rank0": 0.75}

# rank 0 in a workload's rank field means: heterogeneous ranks, these in turn over the adapters
HETERO = 0
HETERO_RANKS = (8, 16, 32, 64, 96, 128)

# op -> what it runs: the shrink and expand stages alone, or the fused layers end to end
BENCH_OPS = ("shrink", "shrink_qkv", "expand", "qkv", "gate_up", "shrink_down")

# the cases off the first grid: rank 128 and mixed ranks in prefill, many-adapter and
# rank-0-heavy decode, float16 with K and N not multiples of 64
OFF_GRID: list[tuple[str, str, str, int]] = (
    [("llama3-8b", op, lay, r) for op in ("qkv", "gate_up", "shrink_qkv")
     for lay in ("prefill", "mixed") for r in (128, HETERO)]
    + [("llama3-8b", op, lay, r) for op in ("qkv", "gate_up", "shrink_qkv", "expand")
       for lay in ("decode128x64", "decode256-rank0") for r in (8, 64)]
    + [("odd-fp16", op, lay, r) for op in ("qkv", "gate_up", "shrink_qkv")
       for lay in ("prefill", "mixed", "decode64") for r in (16, 96)]
)  # fmt: skip


# the targets, by workload: prefill and mixed batches move at least this share of the copy
# bandwidth (the shrink alone: SHRINK_BW_TARGET); decode, where many adapters' weights must be
# read, takes at most DECODE_TARGET times the larger of the bytes floor and one adapter's cuBLAS
BW_TARGET = 60.0
SHRINK_BW_TARGET = 75.0
DECODE_TARGET = 1.5


def target(layout: str, op: str, floor_us: float, torch_us: float | None) -> tuple[str, float]:
    """A workload's target, as text, and its bound: a time in us (decode layouts) or a share of
    the copy bandwidth in % (the others)."""
    if layout.startswith("decode"):
        bound = DECODE_TARGET * max(floor_us, torch_us or 0.0)
        return f"<= {bound:.1f} us", bound
    need = SHRINK_BW_TARGET if op.startswith("shrink") else BW_TARGET
    return f">= {need:.0f}% BW", need


def meets(layout: str, us: float, pct_of_copy_bw: float, bound: float) -> bool:
    """Whether a time (us, or % of copy bandwidth) meets the bound :func:`target` gave."""
    return us <= bound if layout.startswith("decode") else pct_of_copy_bw >= bound
