"""Two behaviours of vLLM's LoRA shrink op, shown with vLLM's own API and no adapter (GPU only).

1. Stale weight table.  ``lora_shrink`` looks up each weight list's pointers and strides in
   ``vllm.lora.ops.triton_ops.utils._LORA_A_PTR_DICT``, keyed by ``data_ptr()`` alone.  Weights
   of another shape that land at a freed weight's address (PyTorch's caching allocator hands the
   block back) get the old strides.  Shown with one block read as A1 ``(2, 16, 64)``, then as
   A2 ``(2, 32, 32)``, then A2 again after the table is cleared.
2. Determinism.  The same shrink call is repeated and the outputs compared bit for bit (a split-K
   launch adds partial sums with atomics in whatever order they arrive).
3. CUDA-graph capture of the ``vllm`` adapter's ``run_lora_b_sgemm`` (the benchmark fell back to
   eager timing): the exception, if any.

Usage (on the GPU machine, vLLM importable):  python3 benchmarks/repros/vllm_lut_repro.py
"""

from __future__ import annotations

import traceback

import torch
from vllm.lora.ops.triton_ops import LoRAKernelMeta, lora_shrink
from vllm.lora.ops.triton_ops import utils as vllm_lora_utils


def shrink(x: torch.Tensor, A: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """vLLM's shrink of ``x (T, K)`` by ``A (L, r, K)``, row ``t`` by slot ``slots[t]``."""
    T = x.shape[0]
    meta = LoRAKernelMeta.make(A.shape[0], T, x.device)
    meta.prepare_tensors(slots.to(torch.int32))
    out = torch.zeros(1, T, A.shape[1], dtype=torch.float32, device=x.device)
    lora_shrink(x, [A], out, *meta.meta_args(T, False), 1.0)
    return out[0]


def rel_err(x: torch.Tensor, A: torch.Tensor, slots: torch.Tensor) -> float:
    y = shrink(x, A, slots)
    ref = torch.einsum("tk,trk->tr", x.float(), A[slots.long()].float())
    return ((y - ref).abs().max() / ref.abs().max()).item()


def stale_table() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    slots = torch.zeros(8, dtype=torch.int32, device="cuda")
    # one block of memory read first as A1, then as A2: what PyTorch's caching allocator does
    # when it hands a freed weight's block to the next weight of the same byte size
    block = torch.empty(2 * 16 * 64, dtype=torch.float16, device="cuda")
    A1 = block.view(2, 16, 64).normal_(generator=gen)
    x1 = torch.randn(8, 64, generator=gen, device="cuda").half()
    print(f"A1 (2, 16, 64) at {A1.data_ptr():#x}: relative error {rel_err(x1, A1, slots):.2e}")
    A2 = block.view(2, 32, 32).normal_(generator=gen)
    x2 = torch.randn(8, 32, generator=gen, device="cuda").half()
    print(
        f"A2 (2, 32, 32) at {A2.data_ptr():#x} (same address: {A2.data_ptr() == A1.data_ptr()}): "
        f"relative error {rel_err(x2, A2, slots):.2e}"
    )
    vllm_lora_utils._LORA_A_PTR_DICT.clear()
    print(f"A2 after clearing _LORA_A_PTR_DICT: relative error {rel_err(x2, A2, slots):.2e}")


def determinism() -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    for T, K, r in [(256, 4096, 16), (4096, 4096, 16), (16, 4096, 64)]:
        x = torch.randn(T, K, generator=gen, device="cuda").bfloat16()
        A = torch.randn(4, r, K, generator=gen, device="cuda").bfloat16()
        slots = torch.randint(0, 4, (T,), generator=gen, device="cuda")
        outs = [shrink(x, A, slots) for _ in range(20)]
        distinct = len({o.cpu().numpy().tobytes() for o in outs})
        print(f"shrink T={T} K={K} r={r}: {distinct} distinct results in 20 identical calls")


def graph_capture() -> None:
    from conformance.case import Case
    from conformance.inputs import build_inputs
    from lora_ref import get_backend_from_name

    case = Case(
        op="expand", dtype="bfloat16", seg_lens=(64, 64), weight_indices=(0, 1),
        lora_ranks=(16, 16), scalings=(1.0, 0.5), R=16, K=0, N=4096, n_kv=0, stack=1,
        has_base=True, poison="nan", seed=0,
    )  # fmt: skip
    inputs = build_inputs(case, torch.device("cuda"))
    backend = get_backend_from_name("vllm")()
    backend.set_batch_info(inputs.batch_info)
    B, base = inputs.args[0], inputs.base

    def call() -> None:
        backend.run_lora_b_sgemm(inputs.x, B, base)

    call()
    torch.cuda.synchronize()
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            call()
        print("graph capture of the vllm adapter's expand: ok")
    except Exception:
        print("graph capture of the vllm adapter's expand failed:")
        traceback.print_exc(limit=-4)


if __name__ == "__main__":
    for part in (stale_table, determinism, graph_capture):
        print(f"== {part.__name__}", flush=True)
        try:
            part()
        except Exception:
            traceback.print_exc(limit=-3)
