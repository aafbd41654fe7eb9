"""Tensors of a case, rebuilt from its seed: the same case gives the same tensors on any machine.

This module needs only torch and the contract package (``lora_ref``), never the rest of the
harness: ``lora-conformance replay --emit-script`` copies it into standalone repro scripts.

Garbage regions hold ``case.poison`` (NaN or a huge finite value): ``A`` rows ``>= c*r`` of each
slot, ``B`` columns ``>= r``, the expand input's columns past each row's rank (and its extra
columns when ``extra_cols > 0``), every weight of an unused slot when ``poison_unused``, and the
parts of a larger buffer that a view (``case.layouts``: an offset, a column slice, every other
row, every other slot of a larger pool) does not cover.  The integer buffers of the batch
tensors and ``output_offset`` hold ``INDEX_GARBAGE`` where their views do not reach.  A backend
that reads any of them fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, NamedTuple

import torch

from lora_ref import LoRABatchInfo, make_batch_info, token_map
from lora_ref.token_map import Batch, TokenMapBatchInfo, batch_tensors

POISON_VALUES = {"nan": float("nan"), "huge": 3.0e4}
INDEX_GARBAGE = 7  # what an int32 buffer holds outside its view: a plausible slot, row and rank
# subnormal data: the exponent range (of 2) its results are drawn in: at least 8 subnormal
# spacings above zero (a flushed result is off by more than the tolerance), below the smallest
# normal number of the dtype
SUBNORMAL_EXPONENTS = {"float16": (-21, -15), "bfloat16": (-130, -127), "float32": (-146, -127)}


class Inputs(NamedTuple):
    """The tensors of one call.  ``args`` are the operation's positional arguments after ``x``;
    ``base`` is the ``base_output`` values (contiguous; the harness lays them out)."""

    batch_info: Batch
    x: torch.Tensor
    args: tuple[Any, ...]
    base: torch.Tensor | None


def _randn(gen: torch.Generator, shape: tuple[int, ...], scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def _overflow_scale(dtype: torch.dtype) -> float:
    """Input magnitude whose products pass the dtype's range (float32 accumulation included)."""
    return 16.0 if dtype == torch.float16 else 2.0**64


def _shape_values(t: torch.Tensor, case: Any, gen: torch.Generator, rows_exp: tuple[int, int]):
    """Apply the case's data mode to freshly drawn Gaussian values ``t`` (float64).  In
    ``subnormal`` mode only the input ``x`` and ``base`` are small (:func:`subnormal_scale`)."""
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


def subnormal_scale(case: Any) -> float:
    """The factor that puts a ``subnormal`` case's results in the subnormal range: a power of
    two drawn from the case's seed in :data:`SUBNORMAL_EXPONENTS`, by which the input ``x`` and
    ``base`` are multiplied.  Weights and scalings stay normal (as an adapter's ``alpha / r``
    does); the fused ops' intermediate ``x @ A^T`` falls into the subnormal range too."""
    lo, hi = SUBNORMAL_EXPONENTS[case.dtype]
    return 2.0 ** (lo + case.seed % (hi - lo + 1))


def _base_values(case: Any, gen: torch.Generator, T: int) -> torch.Tensor:
    base = _randn(gen, (T, case.out_dim), 1.0)
    if case.data == "subnormal":
        return base * subnormal_scale(case)
    if case.data == "overflow":
        dtype = getattr(torch, case.dtype)
        top = torch.finfo(dtype).max if dtype == torch.float16 else 1.0
        return (0.99 + 0.009 * base.abs().clamp(max=1.0)) * top
    return _shape_values(base, case, gen, (-10, 4))


def physical_row_slots(case: Any, perm: list[int] | None) -> list[int]:
    """The adapter slot of each physical row (logical row ``t`` is physical ``perm[t]``)."""
    return token_map.slots_by_row(case.seg_lens, case.weight_indices, perm)


def place(t: torch.Tensor, kind: str, fill: float | int) -> torch.Tensor:
    """``t`` (2-D or 3-D) copied into the memory layout ``kind`` (``case.LAYOUT_KINDS``): a
    view into a buffer whose every other element holds ``fill``."""
    shape = tuple(t.shape)
    if kind in ("contiguous", "views", "apart"):
        return t.contiguous()
    if kind == "offset":
        buf = torch.full((t.numel() + 1,), fill, dtype=t.dtype, device=t.device)
        view = buf[1:].view(shape) if t.numel() else buf[1:1].view(shape)
    elif kind == "col_slice":
        buf = torch.full((*shape[:-1], shape[-1] + 7), fill, dtype=t.dtype, device=t.device)
        view = buf[..., 3 : 3 + shape[-1]]
    elif kind == "row_stride":
        buf = torch.full((*shape[:-2], 2 * shape[-2] + 1, shape[-1]), fill, dtype=t.dtype,
                         device=t.device)  # fmt: skip
        view = buf[..., 1::2, :]
    elif kind == "transposed":
        swapped = (*shape[:-2], shape[-1], shape[-2])
        buf = torch.full(swapped, fill, dtype=t.dtype, device=t.device)
        view = buf.transpose(-1, -2)
    elif kind == "pool_view":
        L, rows, cols = shape
        buf = torch.full((2 * L + 1, rows + 3, cols + 5), fill, dtype=t.dtype, device=t.device)
        view = buf[1::2][:L, 2 : 2 + rows, 1 : 1 + cols]
    else:
        raise ValueError(f"layout: expected one of contiguous, offset, col_slice, row_stride, "
                         f"transposed, pool_view, got {kind!r}")  # fmt: skip
    view.copy_(t)
    return view


def place_index(t: torch.Tensor, kind: str) -> torch.Tensor:
    """A 1-D tensor of the batch (int32, or the float32 scalings) in the layout ``kind``
    (``contiguous``, or ``offset``: one element past the start of a buffer whose first
    element is garbage)."""
    if kind == "contiguous":
        return t
    buf = torch.full((t.numel() + 1,), INDEX_GARBAGE, dtype=t.dtype, device=t.device)
    buf[1:].copy_(t)
    return buf[1:]


def _batch_layout(info: Batch, kind: str) -> Batch:
    """Every tensor of the batch in the layout ``kind``."""
    if kind == "contiguous":
        return info
    fields = {name: place_index(t, kind) for name, t in batch_tensors(info)}
    return dataclasses.replace(info, **fields)


def _token_map(info: LoRABatchInfo, case: Any) -> TokenMapBatchInfo:
    """``info`` as a token map (``case.token_map``): each physical row's slot, about half of
    the rows of rank-0 slots given -1 (no LoRA) instead (the same result).  Its own generator:
    the tensor values stay those of the segment form."""
    slots = token_map.physical_slots(info)
    gen = torch.Generator().manual_seed(case.seed ^ 0x70CE)
    no_lora = torch.rand(len(slots), generator=gen).tolist()
    slots = [
        token_map.NO_LORA if case.lora_ranks[w] == 0 and u < 0.5 else w
        for w, u in zip(slots, no_lora, strict=True)
    ]
    return TokenMapBatchInfo(
        torch.tensor(slots, dtype=torch.int32, device=info.device), info.lora_ranks, info.scalings
    )


def row_slots(info: Batch) -> list[int]:
    """The slot of each physical row of either batch form (-1: no LoRA)."""
    if isinstance(info, TokenMapBatchInfo):
        return info.token_slots.tolist()
    return token_map.physical_slots(info)


def build_inputs(case: Any, device: torch.device | str) -> Inputs:
    """Expand ``case`` into tensors on ``device``.  Same case, same tensors, on every machine."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = getattr(torch, case.dtype)
    poison = POISON_VALUES[case.poison]
    T, L, R = sum(case.seg_lens), len(case.lora_ranks), case.R
    perm = torch.randperm(T, generator=gen).tolist() if case.permute else None
    scalings = case.scalings
    info = make_batch_info(
        case.seg_lens,
        case.weight_indices,
        case.lora_ranks,
        scalings,
        permutation=perm,
        device=device,
    )
    if getattr(case, "token_map", False):
        info = _token_map(info, case)
    info = _batch_layout(info, _layout(case, "batch"))
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
        if case.data == "subnormal":
            x = x * subnormal_scale(case)
        for t, w in enumerate(physical_row_slots(case, perm)):
            x[t, case.lora_ranks[w] :] = poison
        B = _expand_weights(gen, case, unused, poison)
        x_dev = place(to_device(x), _layout(case, "x"), poison)
        return Inputs(info, x_dev, (place(to_device(B), _layout(case, "b"), poison),), base)

    x = _shape_values(_randn(gen, (T, case.K), 1.0), case, gen, (-10, 4))
    if case.data == "subnormal":
        x = x * subnormal_scale(case)
    A = _randn(gen, (L, c * R, case.K), max(case.K, 1) ** -0.5)
    A = _shape_values(A, case, gen, (-4, 2))
    for w, r in enumerate(case.lora_ranks):
        A[w, c * r :] = poison
    for w in unused:
        A[w] = poison
    for w, j in _no_lora_slices(case):
        r = case.lora_ranks[w]
        A[w, j * r : (j + 1) * r] = 0.0
    x_dev = place(to_device(x), _layout(case, "x"), poison)
    A_dev = place(to_device(A), _layout(case, "a"), poison)
    if case.op == "shrink":
        return Inputs(info, x_dev, (A_dev, case.stack), None)
    B = to_device(_expand_weights(gen, case, unused, poison))
    if case.op == "gate_up":
        lora_b = _split(B, [case.N, case.N], case, poison) if case.split_b else B
        if not case.split_b:
            lora_b = place(B, _layout(case, "b"), poison)
        return Inputs(info, x_dev, (A_dev, lora_b), base)
    if case.split_b:
        q = case.N
        halves = _split(B, [q, case.n_kv, case.n_kv], case, poison)
        B = (halves[0][None], torch.stack([halves[1], halves[2]]))
    else:
        B = place(B, _layout(case, "b"), poison)
    bounds = _slice_bounds(case)
    offsets = torch.tensor(bounds, dtype=torch.int32, device=device)
    offsets = place_index(offsets, _layout(case, "offsets"))
    args = (A_dev, B, offsets, max(hi - lo for lo, hi in itertools.pairwise(bounds)))
    if getattr(case, "slice_widths", ()):
        args += (len(case.slice_widths),)  # n_slices, passed by keyword (``call``)
    return Inputs(info, x_dev, args, base)


def _layout(case: Any, arg: str) -> str:
    """The memory layout ``case.layouts`` names for ``arg`` (``Case.arg_layout``; written out
    here because the emitted repro scripts carry this module with a plain-namespace case)."""
    return (getattr(case, "layouts", None) or {}).get(arg, "contiguous")


def _split(
    B: torch.Tensor, widths: list[int], case: Any, poison: float
) -> tuple[torch.Tensor, ...]:
    """``B (L, sum(widths), R)`` cut into column blocks: views of one buffer (``views``), or
    each its own allocation in ``_layout(case, "b")`` (``apart``)."""
    blocks, start = [], 0
    for w in widths:
        blocks.append(B[:, start : start + w])
        start += w
    if _layout(case, "split") == "apart":
        return tuple(place(b.clone(), _layout(case, "b"), poison) for b in blocks)
    return tuple(blocks)


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
    bounds = _slice_bounds(case)
    for w, j in _no_lora_slices(case):
        B[w, bounds[j] : bounds[j + 1], : case.lora_ranks[w]] = 0.0
    return B


def _slice_bounds(case: Any) -> list[int]:
    """0, then the end of each qkv slice (``Case.slices``; written out here because the emitted
    repro scripts carry this module with a plain-namespace case)."""
    widths = getattr(case, "slice_widths", ()) or (case.N, case.n_kv, case.n_kv)
    return list(itertools.accumulate(widths, initial=0))


def _no_lora_slices(case: Any) -> list[tuple[int, int]]:
    """(slot, slice) pairs the adapter has no LoRA for (``case.no_lora``): zeros in the pool."""
    masks = getattr(case, "no_lora", ())
    return [
        (w, j) for w, m in enumerate(masks) for j in range(len(case.slice_widths)) if m >> j & 1
    ]


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
    if case.op == "qkv" and len(inputs.args) == 5:  # an n-slice call
        *args, n_slices = inputs.args
        return getattr(backend, method)(inputs.x, *args, base_output=base, n_slices=n_slices)
    return getattr(backend, method)(inputs.x, *inputs.args, base_output=base)


def overflow_threshold(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype`` (max + half an ulp)."""
    info = torch.finfo(dtype)
    top = float(info.max)
    return top + info.eps * 2.0 ** (math.frexp(top)[1] - 1) / 2
