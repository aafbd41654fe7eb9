"""How fast can a Triton shrink be on this card?  The rank-128 prefill shrink is a
``(4096, 4096) x (4096, c*R)`` product, compute-bound at cuBLAS speed, and the shipped kernel runs
it at about half of cuBLAS's rate.  This probe times, in one run and on the same inputs:

- ``torch.mm`` (cuBLAS) on one adapter's weights;
- the shipped shrink (``lora_triton``, the prefill workload of the off-grid bench);
- a probe kernel with one adapter per row tile, in several tile shapes, whose operands come
  either through pointer loads (``cp.async``, as the shipped kernel does: x rows gathered through
  the layout, weight rows masked by rank) or through Hopper TMA tensor descriptors (weights: a
  3-D descriptor over ``(L, c*R, K)``; x: a 2-D one, which assumes each tile's rows are
  contiguous, as they are in this workload).

The probe's results are compared with the shipped shrink's before they are timed.
Usage (on the device): python3 benchmarks/probes/gemm_ceiling.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from conformance.bench.providers import get_provider
from conformance.bench.runner import machine_info
from conformance.bench.timing import rotation_count, time_calls
from conformance.bench.workloads import Workload, make_inputs
from lora_triton.kernels.layout import group_rows

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # an older Triton: the pointer variants only
    TensorDescriptor = None


@triton.jit
def _probe_kernel(
    x_ptr, x_desc, w_ptr, w_desc, out_ptr, pos_slot_ptr, pos_row_ptr, ranks_ptr,
    K, STACK, N_TILES, stride_xm, stride_wl, stride_wn, stride_om,
    X_TMA: tl.constexpr, W_TMA: tl.constexpr, STAGES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    pid_m = pid // N_TILES
    pid_n = pid % N_TILES
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(pos_slot_ptr + offs_m)
    rows = tl.load(pos_row_ptr + offs_m, mask=slots >= 0, other=0).to(tl.int64)
    slot = tl.max(slots, axis=0)
    if slot >= 0:
        sel = slots == slot
        n0 = pid_n * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < STACK * tl.load(ranks_ptr + slot)
        row0 = tl.min(tl.where(sel, rows, 2**40), axis=0).to(tl.int32)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            if X_TMA:
                xt = x_desc.load([row0, k0])
            else:
                xt = tl.load(
                    x_ptr + rows[:, None] * stride_xm + offs_k[None, :],
                    mask=sel[:, None], other=0.0,
                )  # fmt: skip
            if W_TMA:
                wt = w_desc.load([slot, n0, k0]).reshape(BLOCK_N, BLOCK_K).T
            else:
                wt = tl.load(
                    w_ptr + slot.to(tl.int64) * stride_wl + offs_n[None, :] * stride_wn
                    + offs_k[:, None],
                    mask=n_mask[None, :], other=0.0,
                )  # fmt: skip
            acc = tl.dot(xt, wt, acc)
        tl.store(
            out_ptr + rows[:, None] * stride_om + offs_n[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=sel[:, None] & n_mask[None, :],
        )


def probe(inputs, layout, cfg, x_tma: bool, w_tma: bool):
    """A callable running the probe kernel once on ``inputs`` with tile ``cfg``."""
    bm, bn, bk, warps, stages = cfg
    x, w = inputs.x, inputs.A
    T, K = x.shape
    cR = w.shape[1]
    out = torch.zeros(T, cR, dtype=x.dtype, device=x.device)
    ranks = inputs.info.lora_ranks
    x_desc = TensorDescriptor.from_tensor(x, [bm, bk]) if x_tma else None
    w_desc = TensorDescriptor.from_tensor(w, [1, bn, bk]) if w_tma else None
    n_tiles = triton.cdiv(cR, bn)
    P = layout.pos_slot.numel()
    grid = (P // bm * n_tiles,)
    stack = 3

    def run():
        _probe_kernel[grid](
            x, x_desc, w, w_desc, out, layout.pos_slot, layout.pos_row, ranks,
            K, stack, n_tiles, x.stride(0), w.stride(0), w.stride(1), out.stride(0),
            X_TMA=x_tma, W_TMA=w_tma, STAGES=stages, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
            num_warps=warps,
        )  # fmt: skip
        return out

    return run


def layout_of(inputs, align: int):
    """The adapter-grouped positions of ``inputs``' batch, groups starting on ``align``."""
    info = inputs.info
    return group_rows(info.seg_indptr, info.weight_indices, info.permutation,
                      inputs.x.shape[0], info.lora_ranks.numel(), align)  # fmt: skip


CONFIGS = [
    (64, 128, 64, 4, 4),
    (128, 128, 64, 4, 4),
    (128, 128, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 128, 8, 2),
    (64, 256, 64, 4, 3),
]
CASES = [("llama3-8b", "shrink_qkv", "prefill", 128), ("llama3-8b", "shrink_qkv", "prefill", 64)]


def _reporter(wl: Workload, results: list[dict]):
    """A function recording and printing one timing of ``wl``."""

    def report(name: str, us: float | None, note: str = "") -> None:
        tf = wl.flops() / us / 1e6 if us else 0
        results.append(dict(case=wl.label, variant=name, us=us, tflops=tf, note=note))
        print(f"{wl.label:<36} {name:<40} {us or 0:8.1f} us {tf:6.0f} TFLOP/s {note}", flush=True)

    return report


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    machine = machine_info(dev)
    results = []
    for model, op, lay, rank in CASES:
        wl = Workload(model, op, lay, rank)
        sets = [make_inputs(wl, dev, seed=s) for s in range(rotation_count(10**8, cap=4))]
        first = sets[0]
        make = get_provider("triton")
        want = make(wl, first)().clone()
        report = _reporter(wl, results)
        report("shipped", time_calls([make(wl, s) for s in sets]) * 1e6)
        cublas = [(lambda s=s: torch.mm(s.x, s.A[0].T)) for s in sets]
        report("torch.mm one adapter", time_calls(cublas) * 1e6)
        c = wl.dims["c"]
        for cfg in CONFIGS:
            lays = [layout_of(s, cfg[0]) for s in sets]
            for x_tma, w_tma in ((False, False), (False, True), (True, True)):
                if (x_tma or w_tma) and TensorDescriptor is None:
                    continue
                name = f"{cfg} x:{'tma' if x_tma else 'ptr'} w:{'tma' if w_tma else 'ptr'}"
                try:
                    fn = probe(first, lays[0], cfg, x_tma, w_tma)
                    got = fn()
                    keep = torch.arange(got.shape[1], device=dev) < c * rank
                    ok = torch.allclose(got[:, keep].float(), want[:, keep].float(), 2e-2, 2e-2)
                    if not ok:
                        report(name, None, "WRONG")
                        continue
                    pairs = zip(sets, lays, strict=True)
                    calls = [probe(s, lo, cfg, x_tma, w_tma) for s, lo in pairs]
                    report(name, time_calls(calls) * 1e6)
                except Exception as e:  # a config this Triton cannot build: say so, go on
                    report(name, None, f"{type(e).__name__}: {str(e)[:200]}")
        del sets
        torch.cuda.empty_cache()
    text = json.dumps(dict(machine=str(machine), rows=results), indent=1)
    (out / "ceiling.json").write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
