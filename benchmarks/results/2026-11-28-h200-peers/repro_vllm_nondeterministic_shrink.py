#!/usr/bin/env python3
"""Reproduce a multi-LoRA backend finding: run_lora_a_sgemm(bfloat16, seg_lens=[193, 379, 0, 46, 21, 124, 3, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], weight_indices=[1, 8, 8, 1, 10, 11, 8, 4, 8, 7, 1, 3, 12, 3, 9, 1, 0, 3, 3, 3, 9, 8, 3, 5, 10, 5, 7, 5, 9, 7, 10, 1, 5, 7, 11, 7, 5, 0, 4, 10, 7, 3, 8, 9, 10, 9, 7, 2, 3, 7], lora_ranks=[2, 3, 117, 102, 128, 35, 0, 1, 77, 3, 1, 40, 0], scalings=[3.071204662322998, 0.0, -2.75, 0.0, 40.0, 0.41538363695144653, 3.6063928604125977, -2.75, -2.75, -2.8975043296813965, 0.5211302042007446, 2.583772659301758, -2.896808385848999], R=128, K=105, N=3, stack=2, permute=True, base=False, poison=nan, seed=17071)

Found by lora-conformance (diff check) on backend 'vllm'.  Needs torch,
the backend's package and the contract package lora_ref; run: python {this file} [cpu|cuda]
"""
# What the harness reported:
#   not deterministic: the same call twice gave different bits

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

from conformance.peers.vllm_backend import VLLMBackend as _backend_root
from lora_ref import ReferenceLoRABackend

Backend = _backend_root
BACKEND_TARGET = 'conformance.peers.vllm_backend:VLLMBackend'
DEVICE = 'cuda'
FLOAT32_MATMUL = getattr(Backend.capabilities, "float32_matmul", "tf32")
CASE = {'K': 105,
 'N': 3,
 'R': 128,
 'data': 'gaussian',
 'dtype': 'bfloat16',
 'extra_cols': 0,
 'has_base': False,
 'layout': 'random',
 'lora_ranks': (2, 3, 117, 102, 128, 35, 0, 1, 77, 3, 1, 40, 0),
 'n_kv': 0,
 'name': '',
 'op': 'shrink',
 'permute': True,
 'poison': 'nan',
 'poison_unused': False,
 'scalings': (3.071204662322998,
              0.0,
              -2.75,
              0.0,
              40.0,
              0.41538363695144653,
              3.6063928604125977,
              -2.75,
              -2.75,
              -2.8975043296813965,
              0.5211302042007446,
              2.583772659301758,
              -2.896808385848999),
 'seed': 17071,
 'seg_lens': (193,
              379,
              0,
              46,
              21,
              124,
              3,
              1,
              1,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              0),
 'split_b': False,
 'stack': 2,
 'strides': 'contiguous',
 'weight_indices': (1,
                    8,
                    8,
                    1,
                    10,
                    11,
                    8,
                    4,
                    8,
                    7,
                    1,
                    3,
                    12,
                    3,
                    9,
                    1,
                    0,
                    3,
                    3,
                    3,
                    9,
                    8,
                    3,
                    5,
                    10,
                    5,
                    7,
                    5,
                    9,
                    7,
                    10,
                    1,
                    5,
                    7,
                    11,
                    7,
                    5,
                    0,
                    4,
                    10,
                    7,
                    3,
                    8,
                    9,
                    10,
                    9,
                    7,
                    2,
                    3,
                    7)}


class Case(SimpleNamespace):
    """The case's fields, and the output width the harness derives from them."""

    @property
    def out_dim(self) -> int:
        """Columns of the result: ``c*R`` (shrink), ``N``, ``Nq+2*Nkv`` or ``2N``."""
        return {
            "shrink": self.stack * self.R,
            "expand": self.N,
            "qkv": self.N + 2 * self.n_kv,
            "gate_up": 2 * self.N,
        }[self.op]


# ---- the harness's input builder (conformance/inputs.py), verbatim ----
import math
from typing import Any, NamedTuple

import torch

from lora_ref import LoRABatchInfo, make_batch_info

POISON_VALUES = {"nan": float("nan"), "huge": 3.0e4}


class Inputs(NamedTuple):
    """The tensors of one call.  ``args`` are the operation's positional arguments after ``x``;
    ``base`` is the ``base_output`` values (contiguous; the harness lays them out)."""

    batch_info: LoRABatchInfo
    x: torch.Tensor
    args: tuple[Any, ...]
    base: torch.Tensor | None


def _randn(gen: torch.Generator, shape: tuple[int, ...], scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def _overflow_scale(dtype: torch.dtype) -> float:
    """Input magnitude whose products pass the dtype's range (float32 accumulation included)."""
    return 16.0 if dtype == torch.float16 else 2.0**64


def _shape_values(t: torch.Tensor, case: Any, gen: torch.Generator, rows_exp: tuple[int, int]):
    """Apply the case's data mode to freshly drawn Gaussian values ``t`` (float64)."""
    if case.data == "same_sign":
        return t.abs()
    if case.data == "overflow":
        return (1.0 + t.abs()) * _overflow_scale(getattr(torch, case.dtype))
    if case.data == "dynamic" and t.numel():
        lo, hi = rows_exp
        lead = t.shape[:-1] if t.dim() > 1 else t.shape
        exps = torch.randint(lo, hi + 1, lead, generator=gen, dtype=torch.int64).double()
        return t * torch.pow(2.0, exps).reshape(*lead, *([1] if t.dim() > 1 else []))
    return t


def _base_values(case: Any, gen: torch.Generator, T: int) -> torch.Tensor:
    base = _randn(gen, (T, case.out_dim), 1.0)
    if case.data == "overflow":
        dtype = getattr(torch, case.dtype)
        top = torch.finfo(dtype).max if dtype == torch.float16 else 1.0
        return (0.99 + 0.009 * base.abs().clamp(max=1.0)) * top
    return _shape_values(base, case, gen, (-10, 4))


def physical_row_slots(case: Any, perm: list[int] | None) -> list[int]:
    """The adapter slot of each physical row (logical row ``t`` is physical ``perm[t]``)."""
    slots = [0] * sum(case.seg_lens)
    t = 0
    for n, w in zip(case.seg_lens, case.weight_indices, strict=True):
        for _ in range(n):
            slots[perm[t] if perm is not None else t] = w
            t += 1
    return slots


def _strided(t: torch.Tensor, strides: str, poison: float) -> torch.Tensor:
    """``t`` laid out as the case asks: a column slice of a wider buffer, or every other row of
    a taller one; the rest of the buffer holds poison."""
    rows, cols = t.shape
    if strides == "col_slice":
        buf = torch.full((rows, cols + 7), poison, dtype=t.dtype, device=t.device)
        buf[:, 3 : 3 + cols] = t
        return buf[:, 3 : 3 + cols]
    if strides == "row_stride" and rows:
        buf = torch.full((2 * rows, cols), poison, dtype=t.dtype, device=t.device)
        buf[::2] = t
        return buf[::2]
    return t


def build_inputs(case: Any, device: torch.device | str) -> Inputs:
    """Expand ``case`` into tensors on ``device``.  Same case, same tensors, on every machine."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = getattr(torch, case.dtype)
    poison = POISON_VALUES[case.poison]
    T, L, R = sum(case.seg_lens), len(case.lora_ranks), case.R
    perm = torch.randperm(T, generator=gen).tolist() if case.permute else None
    info = make_batch_info(
        case.seg_lens,
        case.weight_indices,
        case.lora_ranks,
        case.scalings,
        permutation=perm,
        device=device,
    )
    unused = [w for w in range(L) if w not in _used_slots(case)] if case.poison_unused else []

    def to_device(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).to(device)

    c = case.stack
    base = None
    if case.has_base and case.op != "shrink":
        base = to_device(_base_values(case, gen, T))

    if case.op == "expand":
        # expand input: row t holds its adapter's r values, then garbage
        x = _shape_values(_randn(gen, (T, R + case.extra_cols), 1.0), case, gen, (-10, 4))
        for t, w in enumerate(physical_row_slots(case, perm)):
            x[t, case.lora_ranks[w] :] = poison
        B = _expand_weights(gen, case, unused, poison)
        x_dev = _strided(to_device(x), case.strides, poison)
        return Inputs(info, x_dev, (to_device(B),), base)

    x = _shape_values(_randn(gen, (T, case.K), 1.0), case, gen, (-10, 4))
    A = _randn(gen, (L, c * R, case.K), max(case.K, 1) ** -0.5)
    A = _shape_values(A, case, gen, (-4, 2))
    for w, r in enumerate(case.lora_ranks):
        A[w, c * r :] = poison
    for w in unused:
        A[w] = poison
    x_dev = _strided(to_device(x), case.strides, poison)
    if case.op == "shrink":
        return Inputs(info, x_dev, (to_device(A), case.stack), None)
    B = to_device(_expand_weights(gen, case, unused, poison))
    if case.op == "gate_up":
        lora_b = (B[:, : case.N], B[:, case.N :]) if case.split_b else B
        return Inputs(info, x_dev, (to_device(A), lora_b), base)
    if case.split_b:
        q, k = case.N, case.N + case.n_kv
        B = (B[None, :, :q], torch.stack([B[:, q:k], B[:, k:]]))
    offsets = torch.tensor(
        [0, case.N, case.N + case.n_kv, case.N + 2 * case.n_kv], dtype=torch.int32, device=device
    )
    return Inputs(info, x_dev, (to_device(A), B, offsets, max(case.N, case.n_kv)), base)


def _used_slots(case: Any) -> set[int]:
    return {w for n, w in zip(case.seg_lens, case.weight_indices, strict=True) if n > 0}


def _expand_weights(
    gen: torch.Generator, case: Any, unused: list[int], poison: float
) -> torch.Tensor:
    B = _randn(gen, (len(case.lora_ranks), case.out_dim, case.R), max(case.R, 1) ** -0.5)
    B = _shape_values(B, case, gen, (-4, 2))
    for w, r in enumerate(case.lora_ranks):
        B[w, :, r:] = poison
    for w in unused:
        B[w] = poison
    return B


def call(backend: Any, case: Any, inputs: Inputs, base: torch.Tensor | None) -> Any:
    """Invoke ``case.op`` on ``backend`` with ``inputs`` and the given ``base_output``."""
    method = {
        "shrink": "run_lora_a_sgemm",
        "expand": "run_lora_b_sgemm",
        "qkv": "run_qkv_lora",
        "gate_up": "run_gate_up_lora",
    }[case.op]
    if case.op == "shrink":
        return getattr(backend, method)(inputs.x, *inputs.args)
    return getattr(backend, method)(inputs.x, *inputs.args, base_output=base)


def max_finite(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def overflow_threshold(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype`` (max + half an ulp)."""
    info = torch.finfo(dtype)
    top = float(info.max)
    return top + info.eps * 2.0 ** (math.frexp(top)[1] - 1) / 2


# ---- the harness's tolerance model (conformance/oracle.py), verbatim ----
ALPHA = 2.0
U32 = 2.0**-24
TF32 = 2.0**-10
UNIT_ROUNDOFF = {torch.float16: 0.00048828125, torch.bfloat16: 0.00390625, torch.float32: 5.960464477539063e-08}
SUBNORMAL_SPACING = {torch.float16: 5.960464477539063e-08, torch.bfloat16: 9.183549615799121e-41, torch.float32: 1.401298464324817e-45}


def magnitudes(case: Case, inputs: Inputs, ref: ReferenceLoRABackend):
    """The exact result and the two magnitude bounds of the tolerance model, all float64.

    ``M``: the same call on absolute values (``|x|``, ``|A|``, ``|B|``, ``|s|``, no base).
    ``M_B`` (fused ops only, else None): ``|s| * sum_k |B[w, n, k]|`` over the adapter's rank,
    which scales the absolute rounding error of a shrink result that falls in the subnormal
    range of the input dtype.  ``ref`` must be inside its ``exact()`` block.
    """
    info = inputs.batch_info
    exact = call(ref, case, inputs, inputs.base)
    absolute = dataclasses.replace(info, scalings=info.scalings.abs())
    args = tuple(
        tuple(a.abs() for a in arg) if isinstance(arg, tuple)
        else arg.abs() if isinstance(arg, torch.Tensor) and arg.is_floating_point()
        else arg
        for arg in inputs.args
    )  # fmt: skip
    ref.set_batch_info(absolute)
    magnitude = call(ref, case, Inputs(absolute, inputs.x.abs(), args, None), None)
    b_magnitude = None
    if case.op in ("qkv", "gate_up"):
        # an intermediate of ones: x (T, 1) @ A (L, c*R, 1)^T
        ones_x = torch.ones(inputs.x.shape[0], 1, dtype=inputs.x.dtype, device=inputs.x.device)
        ones_a = torch.ones(*args[0].shape[:2], 1, dtype=args[0].dtype, device=args[0].device)
        b_args = (ones_a, *args[1:])
        b_magnitude = call(ref, case, Inputs(absolute, ones_x, b_args, None), None)
    ref.set_batch_info(info)
    return exact, magnitude, b_magnitude


def chain_roundoff(case: Case, float32_matmul: str, device: torch.device) -> float:
    """The relative error accumulated before the final rounding (see the module docstring)."""
    dtype = getattr(torch, case.dtype)
    tf32 = (
        2 * TF32
        if dtype == torch.float32 and float32_matmul == "tf32" and device.type == "cuda"
        else 0.0
    )
    if case.op == "shrink":
        return case.K * U32 + tf32
    if case.op == "expand":
        return case.R * U32 + tf32 + U32
    return (case.K + case.R) * U32 + 2 * tf32 + UNIT_ROUNDOFF[dtype] + U32


def tolerance(
    case: Case,
    magnitude: torch.Tensor,
    base: torch.Tensor | None,
    float32_matmul: str,
    device: torch.device,
    b_magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each element's bound from ``M``, ``|base|`` and, for the fused ops, ``M_B`` (the module
    docstring)."""
    dtype = getattr(torch, case.dtype)
    u = UNIT_ROUNDOFF[dtype]
    spacing = SUBNORMAL_SPACING[dtype]
    chain = chain_roundoff(case, float32_matmul, device)
    base_mag = base.double().abs() if base is not None else torch.zeros_like(magnitude)
    tol = ALPHA * (chain * magnitude + u * (base_mag + magnitude)) + 2 * spacing
    if b_magnitude is not None:  # a shrink result rounded into the subnormal range
        tol = tol + ALPHA * spacing * b_magnitude
    return tol


def run_backend(case, device):
    """One call on a fresh backend; returns the result (a copy) and the inputs."""
    made = build_inputs(case, device)
    base = made.base.clone() if made.base is not None else None
    backend = Backend()
    backend.set_batch_info(made.batch_info)
    out = call(backend, case, made, base)
    return out.clone() if isinstance(out, torch.Tensor) else out, made


def reference(case, made, float32_matmul, device):
    """The float64 result and each element's tolerance (the harness's oracle)."""
    ref = ReferenceLoRABackend(batch_info=made.batch_info)
    with ref.exact():
        exact, magnitude, b_magnitude = magnitudes(case, made, ref)
    return exact, tolerance(case, magnitude, made.base, float32_matmul, device, b_magnitude)


def main() -> int:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else DEVICE)
    case = Case(**CASE)
    print(f"backend {BACKEND_TARGET}, {case.op} in {case.dtype} on {device}")
    out, made = run_backend(case, device)
    T, D = sum(case.seg_lens), case.out_dim
    dtype = getattr(torch, case.dtype)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (T, D) or out.dtype != dtype:
        print(f"REPRODUCED: returned {getattr(out, 'shape', type(out))}, expected ({T}, {D}) {dtype}")
        return 1
    exact, tol = reference(case, made, FLOAT32_MATMUL, device)
    perm = made.batch_info.permutation
    slots = physical_row_slots(case, perm.tolist() if perm is not None else None)
    ranks = torch.tensor([case.lora_ranks[w] for w in slots], dtype=torch.int64, device=device)
    specified = torch.ones(T, D, dtype=torch.bool, device=device)
    if case.op == "shrink":
        cols = torch.arange(D, device=device)
        specified = cols[None, :] < (case.stack * ranks)[:, None]
    got = out.double()
    err = (got - exact).abs()
    beyond = exact.abs() + tol >= overflow_threshold(dtype)
    inf_ok = torch.isinf(got) & beyond & (torch.sign(got) == torch.sign(exact))
    bad = specified & ~((err <= tol) | inf_ok)
    if case.op != "shrink":
        zero_rows = (ranks == 0).nonzero().flatten()
        want = made.base[zero_rows] if made.base is not None else torch.zeros_like(out[zero_rows])
        if not torch.equal(out[zero_rows].view(torch.uint8), want.contiguous().view(torch.uint8)):
            print("REPRODUCED: a rank-0 row differs from base_output (it must be bit-exact)")
            return 1
    if bad.any():
        t, j = bad.nonzero()[0].tolist()
        print(
            f"REPRODUCED: out[{t}, {j}] = {got[t, j].item():.6g}, but the float64 reference is "
            f"{exact[t, j].item():.6g} ± {tol[t, j].item():.3g} "
            f"({int(bad.sum())} of {int(specified.sum())} elements off)"
        )
        return 1
    again, _ = run_backend(case, device)
    same = out.view(torch.uint8) == again.view(torch.uint8)
    if isinstance(again, torch.Tensor) and not bool(same.all()):
        print("REPRODUCED: the same call twice gave different bits (not deterministic)")
        return 1
    print("not reproduced: every element is within its tolerance and the call is deterministic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
