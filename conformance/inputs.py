"""Tensors of a case, rebuilt from its seed: the same case gives the same tensors on any machine.

This module needs only torch and the contract package (``lora_ref``), never the rest of the
harness: ``lora-conformance replay --emit-script`` copies it into standalone repro scripts.

Garbage regions hold ``case.poison`` (NaN or a huge finite value): ``A`` rows ``>= c*r`` of each
slot, ``B`` columns ``>= r``, the expand input's columns past each row's rank (and its extra
columns when ``extra_cols > 0``), every weight of an unused slot when ``poison_unused``, and the
parts of a wider buffer that a strided ``x`` does not cover.  A backend that reads any of them
fails.
"""

from __future__ import annotations

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


def overflow_threshold(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype`` (max + half an ulp)."""
    info = torch.finfo(dtype)
    top = float(info.max)
    return top + info.eps * 2.0 ** (math.frexp(top)[1] - 1) / 2
