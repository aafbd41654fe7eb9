"""Who gets timed: our Triton backend, the torch floor, the reference, SGLang, any backend by name.

A provider turns a workload's input set into a zero-argument call, or returns None when it
cannot run that workload (say, the reference on a large shape).  Every provider but the torch
floor is a backend of the registry, so a third-party backend is timed by its name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from conformance.bench.workloads import Workload, WorkloadInputs
from lora_ref import BaseLoRABackend, get_backend_from_name

Call = Callable[[], Any]
REFERENCE_MAX_TOKENS = 64


def _backend_call(backend: BaseLoRABackend, w: Workload, i: WorkloadInputs) -> Call:
    backend.set_batch_info(i.info)
    d = w.dims
    if w.op in ("shrink", "shrink_qkv", "shrink_down"):
        return lambda: backend.run_lora_a_sgemm(i.x, i.A, d["c"])
    if w.op == "expand":
        return lambda: backend.run_lora_b_sgemm(i.x, i.B, i.base)
    if w.op == "qkv":
        max_dim = max(d["Nq"], d["Nkv"])
        return lambda: backend.run_qkv_lora(i.x, i.A, i.B, i.offsets, max_dim, i.base)
    return lambda: backend.run_gate_up_lora(i.x, i.A, i.B, i.base)


def backend_provider(name: str) -> Callable[[Workload, WorkloadInputs], Call | None]:
    cls = get_backend_from_name(name)

    def make(w: Workload, i: WorkloadInputs) -> Call | None:
        if name == "reference" and w.T > REFERENCE_MAX_TOKENS:
            return None
        if (
            i.x.device.type not in cls.capabilities.devices
            or w.dtype not in cls.capabilities.dtypes
        ):
            return None
        return _backend_call(cls(), w, i)

    return make


def torch_floor(w: Workload, i: WorkloadInputs) -> Call | None:
    """One adapter's dense GEMMs at the same shape: what cuBLAS does with the same bytes."""
    d = w.dims
    A0 = i.A[0] if i.A is not None else None
    B0 = i.B[0] if i.B is not None else None
    if w.op in ("shrink", "shrink_qkv", "shrink_down"):
        return lambda: torch.mm(i.x, A0.T)
    if w.op == "expand":
        return lambda: i.base.addmm_(i.x, B0.T, alpha=0.5)
    c = d["c"]
    rank = w.pool_rank

    def fused() -> torch.Tensor:
        xa = torch.mm(i.x, A0.T)
        # one GEMM per slice, as the fused LoRA layer computes
        bounds = (
            [0, d["Nq"], d["Nq"] + d["Nkv"], d["N"]] if w.op == "qkv" else [0, d["N"] // 2, d["N"]]
        )
        for j in range(c):
            i.base[:, bounds[j] : bounds[j + 1]].addmm_(
                xa[:, j * rank : (j + 1) * rank], B0[bounds[j] : bounds[j + 1]].T, alpha=0.5
            )
        return i.base

    return fused


def grouped_mm(w: Workload, i: WorkloadInputs) -> Call | None:
    """PyTorch's grouped GEMM, as a mixture-of-experts user would apply it to LoRA: rows sorted
    by adapter and the weights laid out at the pool rank with the scaling folded into ``B``
    (done once, untimed, as a server converts adapters when it loads them); timed: the shrink,
    one grouped GEMM per expand slice, and each slice added into ``base`` (kept in the sorted
    order).  bfloat16 on CUDA only, as ``torch.nn.functional.grouped_mm`` is."""
    gmm = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    if gmm is None or i.x.device.type != "cuda" or w.dtype != torch.bfloat16:
        return None
    d, R, c = w.dims, w.pool_rank, w.dims["c"]
    ranks = w.slot_ranks()
    row_slot = torch.tensor(
        [s for s, n in zip(w.slots(), w.seg_lens, strict=True) for _ in range(n)],
        device=i.x.device,
    )
    order = torch.argsort(row_slot, stable=True)
    offs = torch.cumsum(torch.bincount(row_slot, minlength=w.adapters), 0).to(torch.int32)
    x = i.x[order].contiguous()
    A = B = None
    if i.A is not None:  # slice j of each adapter at rows j*R, zero past its rank
        A = torch.zeros(w.adapters, c * R, d["K"], dtype=w.dtype, device=i.x.device)
        for s, r in enumerate(ranks):
            for j in range(c):
                A[s, j * R : j * R + r] = i.A[s, j * r : (j + 1) * r]
        A = A.transpose(1, 2)  # (L, K, c*R), column-major as grouped GEMMs want
    if i.B is not None:
        mask = torch.tensor([[1.0] * r + [0.0] * (R - r) for r in ranks], device=i.x.device)
        B = (i.B.float() * 0.5 * mask[:, None, :]).to(w.dtype)  # scaling 0.5 folded in
    groups = list(zip([0, *offs.tolist()[:-1]], offs.tolist(), strict=True))
    if w.op in ("shrink", "shrink_qkv", "shrink_down"):
        _verify(lambda: gmm(x, A, offs=offs), lambda: _per_group(x, A, groups))
        return lambda: gmm(x, A, offs=offs)
    base = i.base[order].contiguous()
    if w.op == "expand":
        Bt = B.transpose(1, 2)
        _verify(lambda: base.clone().add_(gmm(x, Bt, offs=offs)),
                lambda: base.float() + _per_group(x, Bt, groups))  # fmt: skip
        return lambda: base.add_(gmm(x, Bt, offs=offs))
    bounds = [0, d["Nq"], d["Nq"] + d["Nkv"], d["N"]] if w.op == "qkv" else [0, d["N"] // 2, d["N"]]
    pairs = list(itertools.pairwise(bounds))
    slices = [B[:, lo:hi].transpose(1, 2) for lo, hi in pairs]

    def fused(out: torch.Tensor) -> torch.Tensor:
        inter = gmm(x, A, offs=offs)
        for j, (lo, hi) in enumerate(pairs):
            out[:, lo:hi].add_(gmm(inter[:, j * R : (j + 1) * R], slices[j], offs=offs))
        return out

    def expected() -> torch.Tensor:
        inter = _per_group(x, A, groups).to(w.dtype)
        out = base.float()
        for j, (lo, hi) in enumerate(pairs):
            out[:, lo:hi] += _per_group(inter[:, j * R : (j + 1) * R], slices[j], groups)
        return out

    _verify(lambda: fused(base.clone()), expected)
    return lambda: fused(base)


def _per_group(x: torch.Tensor, w_t: torch.Tensor, groups) -> torch.Tensor:
    """``x[rows of g] @ w_t[g]`` per group in float32: what the grouped GEMM should give."""
    out = torch.zeros(x.shape[0], w_t.shape[2], dtype=torch.float32, device=x.device)
    for g, (lo, hi) in enumerate(groups):
        out[lo:hi] = x[lo:hi].float() @ w_t[g].float()
    return out


def _verify(run: Callable[[], torch.Tensor], expected: Callable[[], torch.Tensor]) -> None:
    """A provider times only what computes the right thing: relative error under 2%."""
    got, want = run().float(), expected()
    err = (got - want).norm() / want.norm().clamp_min(1e-30)
    if not bool(err < 2e-2):
        raise RuntimeError(f"grouped_mm gave a wrong result (relative error {float(err):.3g})")


def get_provider(name: str) -> Callable[[Workload, WorkloadInputs], Call | None]:
    """``torch``, ``grouped_mm``, or any backend name of the registry (``sglang-triton``,
    ``sglang-csgmv``, ``vllm``, ``flashinfer`` included: their adapters are entry points).  An
    unknown or uninstalled backend raises ``ValueError``."""
    if name == "torch":
        return torch_floor
    if name == "grouped_mm":
        return grouped_mm
    return backend_provider(name)
