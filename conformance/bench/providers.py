"""Who gets timed: our Triton backend, the torch floor, the reference, SGLang, any backend by name.

A provider turns a workload's input set into a zero-argument call, or returns None when it
cannot run that workload (say, the reference on a large shape).  Every provider but the torch
floor is a backend of the registry, so a third-party backend is timed by its name.
"""

from __future__ import annotations

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
    rank = w.rank

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


def get_provider(name: str) -> Callable[[Workload, WorkloadInputs], Call | None]:
    """``torch`` or any backend name of the registry (``sglang-triton``, ``sglang-csgmv`` included:
    their adapters are entry points).  An unknown or uninstalled backend raises ``ValueError``."""
    if name == "torch":
        return torch_floor
    return backend_provider(name)
