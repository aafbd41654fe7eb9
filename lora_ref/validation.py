"""Argument checks of the four operations, shared by every backend unchanged.

Each ``check_*`` function reads shapes, dtypes and devices only (no device sync), compares them
with the :class:`~lora_ref.batch_info.BatchSummary` taken when the batch was set, and raises
``TypeError`` (dtypes) or ``ValueError`` (everything else) before anything is written.

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``c`` stack count,
``N`` output dim.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import NamedTuple

import torch

from lora_ref.batch_info import INDEX_DTYPE, BatchSummary
from lora_ref.errors import check_dtype, check_plain, fail
from lora_ref.runtime import capturing

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

QkvB = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
GateUpB = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class ShrinkDims(NamedTuple):
    T: int
    K: int
    R: int
    c: int


class ExpandDims(NamedTuple):
    T: int
    R: int
    N: int


def _tensor(arg: str, t: object, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(arg, "a torch.Tensor", type(t).__name__)
    check_plain(arg, t)
    if t.dim() != ndim:
        fail(arg, f"a {ndim}-D tensor", f"shape {tuple(t.shape)}")
    return t


def _same_device(arg: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        fail(arg, f"a tensor on {device} (where the batch info lives)", f"one on {t.device}")


def _float_input(arg: str, t: torch.Tensor, dtype: torch.dtype | None) -> None:
    if dtype is None:
        check_dtype(arg, t, *FLOAT_DTYPES)
    else:
        check_dtype(arg, t, dtype)


def _slots_and_rank(arg: str, L: int, R: int, summary: BatchSummary) -> None:
    if summary.num_slots != L:
        fail(arg, f"{summary.num_slots} adapter slots (len(lora_ranks)) in dim 0", f"{L}")
    if summary.max_rank > R:
        fail(arg, f"a pool rank R >= max(lora_ranks) = {summary.max_rank}", f"R={R}")


def _operand(
    arg: str, t: object, ndim: int, dtype: torch.dtype | None, device: torch.device
) -> None:
    """A tensor of ``ndim`` dims, of ``dtype`` (any float dtype when None), on ``device``."""
    _tensor(arg, t, ndim)
    _float_input(arg, t, dtype)  # type: ignore[arg-type]
    _same_device(arg, t, device)  # type: ignore[arg-type]


def _rows(arg: str, t: torch.Tensor, summary: BatchSummary) -> int:
    if t.shape[0] != summary.num_tokens:
        fail(arg, f"{summary.num_tokens} rows (T = seg_indptr[-1])", f"{t.shape[0]}")
    return t.shape[0]


def _address_range(t: torch.Tensor) -> tuple[int, int] | None:
    """``[first, last + 1)`` byte addresses spanned by ``t``'s elements (None when empty)."""
    if t.numel() == 0:
        return None
    last = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
    start = t.data_ptr()
    return start, start + (last + 1) * t.element_size()


def overlaps_itself(t: torch.Tensor) -> bool:
    """True when two indices of ``t`` may name one element (an ``expand``-ed view, say).

    The test is the sufficient condition for a one-to-one layout: sorted by stride, each stride
    reaches past everything the smaller ones span.  A rare legal layout that fails it is
    reported as overlapping; a conservative answer is the safe one for an output.
    """
    if t.numel() == 0:
        return False
    span = 1
    for stride, size in sorted((abs(s), n) for n, s in zip(t.shape, t.stride(), strict=True)):
        if size <= 1:
            continue
        if stride < span:
            return True
        span += stride * (size - 1)
    return False


def _tensors(operands: Mapping[str, object]) -> list[tuple[str, torch.Tensor]]:
    out: list[tuple[str, torch.Tensor]] = []
    for name, value in operands.items():
        if isinstance(value, torch.Tensor):
            out.append((name, value))
        elif isinstance(value, tuple):
            out += [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, torch.Tensor)]
    return out


def check_base_output(
    base_output: torch.Tensor | None,
    x: torch.Tensor,
    T: int,
    N: int,
    operands: Mapping[str, object] | None = None,
) -> None:
    """``base_output``: None or ``(T, N)`` with ``x``'s dtype and device, overlapping neither
    itself nor any of ``operands`` (name -> tensor, or tuple of tensors), ``x`` included."""
    if base_output is None:
        return
    _tensor("base_output", base_output, 2)
    check_dtype("base_output", base_output, x.dtype)
    _same_device("base_output", base_output, x.device)
    if tuple(base_output.shape) != (T, N):
        fail("base_output", f"shape ({T}, {N})", f"shape {tuple(base_output.shape)}")
    if overlaps_itself(base_output):
        fail(
            "base_output",
            "a tensor whose elements do not overlap (not an expanded or self-aliasing view)",
            f"shape {tuple(base_output.shape)} with strides {tuple(base_output.stride())}",
        )
    out_range = _address_range(base_output)
    if out_range is None:
        return
    for name, t in _tensors({"x": x, **(operands or {})}):
        in_range = _address_range(t)
        if in_range is not None and in_range[0] < out_range[1] and out_range[0] < in_range[1]:
            fail(
                "base_output", f"memory of its own, not shared with {name}", f"overlap with {name}"
            )


def check_shrink(
    summary: BatchSummary,
    device: torch.device,
    x: torch.Tensor,
    weights: torch.Tensor,
    stack_num: int,
) -> ShrinkDims:
    """``x (T, K)``, ``weights (L, c*R, K)``, ``stack_num = c`` in 1..3."""
    _operand("x", x, 2, None, device)
    _operand("weights", weights, 3, x.dtype, device)
    if not isinstance(stack_num, int) or isinstance(stack_num, bool) or stack_num not in (1, 2, 3):
        fail("stack_num", "1, 2 or 3", repr(stack_num))
    T = _rows("x", x, summary)
    L, cR, K = weights.shape
    if cR % stack_num:
        fail("weights", f"dim 1 (c*R) divisible by stack_num={stack_num}", f"{cR}")
    if x.shape[1] != K:
        fail("weights", f"dim 2 (K) equal to x.shape[1] = {x.shape[1]}", f"{K}")
    R = cR // stack_num
    _slots_and_rank("weights", L, R, summary)
    return ShrinkDims(T, K, R, stack_num)


class EmbeddingDims(NamedTuple):
    T: int
    R: int
    V: int
    E: int


def check_embedding(
    summary: BatchSummary,
    device: torch.device,
    input_ids: torch.Tensor,
    weights: torch.Tensor,
    vocab_size: int,
    extra_embeddings: torch.Tensor | None,
    read_ids: bool = True,
) -> EmbeddingDims:
    """``input_ids`` int32/int64 ``(T,)``, ``weights (L, R, V)`` with ``V = vocab_size``,
    ``extra_embeddings (L, E, R)`` or None.  ``read_ids``: also check every id is in
    ``[0, V + E)`` (a device sync; pass False under CUDA-graph capture)."""
    _tensor("input_ids", input_ids, 1)
    check_dtype("input_ids", input_ids, torch.int32, torch.int64)
    _same_device("input_ids", input_ids, device)
    _operand("weights", weights, 3, None, device)
    T = _rows("input_ids", input_ids, summary)
    L, R, V = weights.shape
    _slots_and_rank("weights", L, R, summary)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size != V:
        fail("vocab_size", f"an int equal to weights.shape[2] = {V}", repr(vocab_size))
    E = 0
    if extra_embeddings is not None:
        _operand("extra_embeddings", extra_embeddings, 3, weights.dtype, device)
        if extra_embeddings.shape[0] != L or extra_embeddings.shape[2] != R:
            fail("extra_embeddings", f"shape ({L}, E, {R}) matching weights",
                 f"shape {tuple(extra_embeddings.shape)}")  # fmt: skip
        E = extra_embeddings.shape[1]
    if read_ids and T:
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= V + E:
            bad = lo if lo < 0 else hi
            fail("input_ids", f"token ids in [0, {V + E}) (vocab_size {V} + {E} extra)", f"{bad}")
    return EmbeddingDims(T, R, V, E)


def check_expand(
    summary: BatchSummary,
    device: torch.device,
    x: torch.Tensor,
    weights: torch.Tensor,
    base_output: torch.Tensor | None,
) -> ExpandDims:
    """``x (T, R')`` with ``R' >= max rank``, ``weights (L, N, R)``, ``base_output (T, N)``."""
    _operand("x", x, 2, None, device)
    _operand("weights", weights, 3, x.dtype, device)
    T = _rows("x", x, summary)
    L, N, R = weights.shape
    _slots_and_rank("weights", L, R, summary)
    if x.shape[1] < summary.max_rank:
        fail("x", f">= max(lora_ranks) = {summary.max_rank} columns", f"{x.shape[1]}")
    check_base_output(base_output, x, T, N, {"weights": weights, **dict(summary.tensors)})
    return ExpandDims(T, R, N)


def stack_qkv_b(qkv_lora_b: QkvB) -> torch.Tensor:
    """Return the stacked ``(L, Nq + 2*Nkv, R)`` layout of a qkv expand weight.

    Accepts the stacked tensor itself or the split tuple
    ``(q_b (1, L, Nq, R), kv_b (2, L, Nkv, R))``.
    """
    if not isinstance(qkv_lora_b, tuple):
        return _tensor("qkv_lora_b", qkv_lora_b, 3)
    if len(qkv_lora_b) != 2:
        fail("qkv_lora_b", "a tensor or a (q_b, kv_b) pair", f"a tuple of {len(qkv_lora_b)}")
    q_b = _tensor("qkv_lora_b[0]", qkv_lora_b[0], 4)
    kv_b = _tensor("qkv_lora_b[1]", qkv_lora_b[1], 4)
    if q_b.shape[0] != 1:
        fail("qkv_lora_b[0]", "shape (1, L, Nq, R)", f"shape {tuple(q_b.shape)}")
    if kv_b.shape[0] != 2 or kv_b.shape[1] != q_b.shape[1] or kv_b.shape[3] != q_b.shape[3]:
        fail(
            "qkv_lora_b[1]",
            f"shape (2, {q_b.shape[1]}, Nkv, {q_b.shape[3]})",
            f"shape {tuple(kv_b.shape)}",
        )
    check_dtype("qkv_lora_b[1]", kv_b, q_b.dtype)
    return torch.cat([q_b[0], kv_b[0], kv_b[1]], dim=1)


def stack_gate_up_b(gate_up_lora_b: GateUpB) -> torch.Tensor:
    """Return the stacked ``(L, 2N, R)`` layout; accepts it or a pair of ``(L, N, R)`` halves."""
    if not isinstance(gate_up_lora_b, tuple):
        return _tensor("gate_up_lora_b", gate_up_lora_b, 3)
    if len(gate_up_lora_b) != 2:
        fail(
            "gate_up_lora_b",
            "a tensor or a (gate_b, up_b) pair",
            f"a tuple of {len(gate_up_lora_b)}",
        )
    gate = _tensor("gate_up_lora_b[0]", gate_up_lora_b[0], 3)
    up = _tensor("gate_up_lora_b[1]", gate_up_lora_b[1], 3)
    if gate.shape != up.shape:
        fail(
            "gate_up_lora_b[1]",
            f"shape {tuple(gate.shape)} like the gate half",
            f"shape {tuple(up.shape)}",
        )
    check_dtype("gate_up_lora_b[1]", up, gate.dtype)
    return torch.cat([gate, up], dim=1)


def check_fused(
    summary: BatchSummary,
    device: torch.device,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    base_output: torch.Tensor | None,
    stack_num: int,
    names: tuple[str, str],
    operands: Mapping[str, object] | None = None,
    halves: bool = False,
) -> tuple[ShrinkDims, int]:
    """Checks of the fused qkv (``c`` = its ``n_slices``) and gate_up (``c=2``, ``halves``: two
    equal halves) paths; returns the dims and ``N``.

    ``lora_a (L, c*R, K)`` and the stacked ``lora_b (L, N_total, R)`` share ``L`` and ``R``.
    ``operands``: further inputs ``base_output`` must not overlap (the caller's own ``lora_b``
    when it was a split tuple, ``output_offset``).
    """
    a_name, b_name = names
    _operand("x", x, 2, None, device)
    _operand(a_name, lora_a, 3, x.dtype, device)
    _operand(b_name, lora_b, 3, x.dtype, device)
    T = _rows("x", x, summary)
    L, cR, K = lora_a.shape
    if x.shape[1] != K:
        fail(a_name, f"dim 2 (K) equal to x.shape[1] = {x.shape[1]}", f"{K}")
    if cR % stack_num:
        fail(a_name, f"dim 1 ({stack_num}*R) divisible by {stack_num}", f"{cR}")
    R = cR // stack_num
    _slots_and_rank(a_name, L, R, summary)
    if lora_b.shape[0] != L or lora_b.shape[2] != R:
        fail(b_name, f"shape ({L}, N, {R}) matching {a_name}", f"shape {tuple(lora_b.shape)}")
    N = lora_b.shape[1]
    if halves and N % 2:
        fail(b_name, "an even dim 1 (2N: gate then up)", f"{N}")
    inputs = {a_name: lora_a, b_name: lora_b, **(operands or {}), **dict(summary.tensors)}
    check_base_output(base_output, x, T, N, inputs)
    return ShrinkDims(T, K, R, stack_num), N


def check_n_slices(n_slices: object) -> int:
    """``n_slices``: an int >= 1 (qkv: 3)."""
    if not isinstance(n_slices, int) or isinstance(n_slices, bool) or n_slices < 1:
        fail("n_slices", "an int >= 1 (3 for qkv)", repr(n_slices))
    return n_slices


def check_output_offset(
    output_offset: torch.Tensor, max_qkv_out_dim: int, device: torch.device, n_slices: int = 3
) -> None:
    """``output_offset``: contiguous int32 ``(n_slices+1,)`` on the batch's device;
    ``max_qkv_out_dim`` an int >= 0.

    Shape, dtype and device only: the values live on the device and reading them would sync.
    """
    _tensor("output_offset", output_offset, 1)
    check_dtype("output_offset", output_offset, INDEX_DTYPE)
    _same_device("output_offset", output_offset, device)
    if output_offset.numel() != n_slices + 1:
        fail(
            "output_offset",
            "shape (4,): [0, Nq, Nq+Nkv, Nq+2*Nkv]"
            if n_slices == 3
            else f"shape ({n_slices + 1},): 0, then the end of each of the {n_slices} slices",
            f"shape {tuple(output_offset.shape)}",
        )
    if output_offset.stride(0) != 1:
        fail(
            "output_offset",
            "a contiguous 1-D tensor (stride 1)",
            f"stride {output_offset.stride()}",
        )
    if (
        not isinstance(max_qkv_out_dim, int)
        or isinstance(max_qkv_out_dim, bool)
        or max_qkv_out_dim < 0
    ):
        fail("max_qkv_out_dim", "a non-negative int, the widest slice", repr(max_qkv_out_dim))


def check_qkv_width(max_qkv_out_dim: int, N: int) -> None:
    """``max_qkv_out_dim`` at most the output width ``N``: no slice is wider, and a launch
    sized by it stays bounded (no device sync: graph capture too)."""
    if max_qkv_out_dim > N:
        fail("max_qkv_out_dim", f"<= the output width N = {N} (it is the widest slice)",
             f"{max_qkv_out_dim}")  # fmt: skip


def check_output_offset_values(
    output_offset: torch.Tensor, max_qkv_out_dim: int, N: int
) -> list[int]:
    """Value checks of ``output_offset`` (a device sync: eager use only): 0 first, ``N`` last,
    never decreasing, and for three slices (qkv) ``[0, Nq, Nq+Nkv, Nq+2*Nkv]``;
    ``max_qkv_out_dim`` at least the widest slice.  Returns the values."""
    offsets = output_offset.tolist()
    bad = offsets[0] != 0 or offsets[-1] != N or any(b < a for a, b in itertools.pairwise(offsets))
    if len(offsets) == 4 and not bad and offsets[3] - offsets[2] != offsets[2] - offsets[1]:
        bad = True  # three slices are qkv's: k and v equally wide
    if bad:
        if len(offsets) == 4:
            expected = f"[0, Nq, Nq+Nkv, Nq+2*Nkv] with Nq+2*Nkv = {N}"
        else:
            expected = f"0, then the slice ends in non-decreasing order, ending at N = {N}"
        fail("output_offset", expected, f"{offsets}")
    widest = max(b - a for a, b in itertools.pairwise(offsets))
    if widest > max_qkv_out_dim:
        fail("max_qkv_out_dim", f">= the widest slice {widest}", f"{max_qkv_out_dim}")
    check_qkv_width(max_qkv_out_dim, N)
    return offsets


class QkvCall(NamedTuple):
    """A checked ``run_qkv_lora`` call: the dims (``c`` = ``n_slices``), the output width, the
    stacked expand weights, and the offsets' values (None where they were not read)."""

    dims: ShrinkDims
    N: int
    lora_b: torch.Tensor
    offsets: list[int] | None


def check_qkv(
    summary: BatchSummary,
    device: torch.device,
    x: torch.Tensor,
    qkv_lora_a: torch.Tensor,
    qkv_lora_b: QkvB,
    output_offset: torch.Tensor,
    max_qkv_out_dim: int,
    base_output: torch.Tensor | None,
    n_slices: int = 3,
    read_offsets: bool = True,
) -> QkvCall:
    """Every check of one ``run_qkv_lora`` call.  ``read_offsets``: also check the offsets'
    values (a device sync; pass False under CUDA-graph capture)."""
    n = check_n_slices(n_slices)
    if isinstance(qkv_lora_b, tuple) and n != 3:
        fail("qkv_lora_b", f"the stacked (L, N, R) tensor (a split pair is qkv's, n_slices=3; "
             f"n_slices={n})", "a tuple")  # fmt: skip
    lora_b = stack_qkv_b(qkv_lora_b)
    check_output_offset(output_offset, max_qkv_out_dim, device, n)
    operands = {"qkv_lora_b": qkv_lora_b, "output_offset": output_offset}
    dims, N = check_fused(summary, device, x, qkv_lora_a, lora_b, base_output, n,
                          ("qkv_lora_a", "qkv_lora_b"), operands)  # fmt: skip
    check_qkv_width(max_qkv_out_dim, N)
    offsets = (
        check_output_offset_values(output_offset, max_qkv_out_dim, N) if read_offsets else None
    )
    return QkvCall(dims, N, lora_b, offsets)


def check_call(
    summary: BatchSummary, device: torch.device, op: str, args: Mapping[str, object]
) -> None:
    """Every check of section 6 of the contract on one call of ``op`` (``shrink``, ``expand``,
    ``qkv``, ``gate_up``), its arguments by the names of ``BaseLoRABackend``'s methods; a
    backend or adapter that wants the contract's errors without writing them calls this first.
    The ``output_offset`` values are read (a sync) except during CUDA-graph capture."""
    x, base = args["x"], args.get("base_output")
    if op == "shrink":
        check_shrink(summary, device, x, args["weights"], args.get("stack_num", 1))
    elif op == "expand":
        check_expand(summary, device, x, args["weights"], base)
    elif op == "qkv":
        check_qkv(summary, device, x, args["qkv_lora_a"], args["qkv_lora_b"],
                  args["output_offset"], args["max_qkv_out_dim"], base,
                  args.get("n_slices", 3), read_offsets=not capturing())  # fmt: skip
    elif op == "gate_up":
        operands = {"gate_up_lora_b": args["gate_up_lora_b"]}
        check_fused(summary, device, x, args["gate_up_lora_a"],
                    stack_gate_up_b(args["gate_up_lora_b"]), base, 2,
                    ("gate_up_lora_a", "gate_up_lora_b"), operands, halves=True)  # fmt: skip
    else:
        fail("op", "shrink, expand, qkv or gate_up", repr(op))
