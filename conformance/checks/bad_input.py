"""Bad inputs: each must raise ``ValueError``/``TypeError`` before anything is written.

:data:`MUTATIONS` is a table of ``(label, applies, mutate)``: ``applies(case)`` says whether the
mutation makes sense for the case, ``mutate(inputs, case)`` returns the invalid
``(batch_info, x, args, base_output)``.  Overlap cases (``base_output`` aliasing an input, an
expanded view) are here too: an output that overlaps an input or itself is invalid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from conformance.case import Case
from conformance.checks.base import Check, drawn, plain, primary_corners
from conformance.checks.guards import CaseResult, backend_call
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import OPS
from conformance.oracle import bitwise_equal
from lora_ref import BaseLoRABackend, LoRABatchInfo

Call = tuple[LoRABatchInfo, torch.Tensor, tuple[Any, ...], Any]


class Mutation(NamedTuple):
    """One invalid call: ``applies`` says for which cases, ``mutate`` builds it from valid
    inputs, and ``witness`` (overlap cases) confirms on the built call that it is invalid: a
    mutation that builds a valid call is a harness bug, raised as such, never a failure."""

    label: str
    applies: Callable[[Case], bool]
    mutate: Callable[[Inputs, Case], Call]
    witness: Callable[[Call], bool] | None = None


def element_offsets(t: torch.Tensor, rows: int = 2) -> set[int]:
    """Storage offsets of the elements of ``t``'s first ``rows`` rows (all of a 1-D ``t``)."""
    if t.dim() >= 2:
        t = t[:rows]
    offsets = torch.full((), t.storage_offset(), dtype=torch.int64)
    for size, stride in zip(t.shape, t.stride(), strict=True):
        offsets = offsets[..., None] + torch.arange(size, dtype=torch.int64) * stride
    return set(offsets.flatten().tolist())


def _shares_elements(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (leading rows) hold an element of one storage in common."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.dtype != b.dtype:
        return False
    return bool(element_offsets(a) & element_offsets(b))


def _shares_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether contiguous ``a`` and ``b`` (any dtypes) hold a byte of one storage in common."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    lo_a, lo_b = a.storage_offset() * a.element_size(), b.storage_offset() * b.element_size()
    return lo_a < lo_b + b.numel() * b.element_size() and lo_b < lo_a + a.numel() * a.element_size()


def _self_overlapping(t: torch.Tensor) -> bool:
    """Whether two elements of ``t``'s leading rows are one element of storage."""
    return len(element_offsets(t)) < t[:2].numel()


def _info(i: Inputs, **changes: Any) -> LoRABatchInfo:
    return dataclasses.replace(i.batch_info, **changes)


def _with_info(i: Inputs, **changes: Any) -> Call:
    return _info(i, **changes), i.x, i.args, i.base


def _with_args(i: Inputs, *args: Any) -> Call:
    return i.batch_info, i.x, args, i.base


def _with_offsets(i: Inputs, offsets: torch.Tensor) -> Call:
    """The qkv call with other ``output_offset`` (and its ``n_slices``, where it has one)."""
    return _with_args(i, *i.args[:2], offsets, *i.args[3:])


def _last_one(offsets: torch.Tensor) -> torch.Tensor:
    one = torch.zeros_like(offsets)
    one[-1] = 1
    return one


def _decreasing(offsets: torch.Tensor) -> torch.Tensor:
    """The first slice end moved past the second: the offsets decrease (the same ends)."""
    bad = offsets.clone()
    bad[1] = offsets[2] + 1 if len(offsets) > 3 else offsets[-1] + 1
    return bad


def _widest(c: Case) -> int:
    return max(hi - lo for lo, hi in c.slices)


def _with_base(i: Inputs, base: Any) -> Call:
    return i.batch_info, i.x, i.args, base


def _other_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.dtype != torch.float32 else torch.float16


def _bad_indptr(i: Inputs, c: Case) -> Call:
    ptr = i.batch_info.seg_indptr.clone()
    ptr[1] += 1
    return _with_info(i, seg_indptr=ptr)


def _negative_len(i: Inputs, c: Case) -> Call:
    lens = i.batch_info.seg_lens.clone()
    ptr = i.batch_info.seg_indptr.clone()
    lens[0] = -1
    ptr[1:] -= ptr[1] + 1
    return _with_info(i, seg_lens=lens, seg_indptr=ptr)


def _set(name: str, index: int, value: Any) -> Callable[[Inputs, Case], Call]:
    def mutate(i: Inputs, c: Case) -> Call:
        t = getattr(i.batch_info, name).clone()
        t[index] = value(c) if callable(value) else value
        return _with_info(i, **{name: t})

    return mutate


def _base_aliasing_x(i: Inputs, c: Case) -> Call:
    # x and base_output carved from one buffer: base's first column is x's last, in every row
    first = c.in_dim - 1
    buf = torch.zeros(c.T, first + c.out_dim, dtype=i.x.dtype, device=i.x.device)
    buf[:, : c.in_dim] = i.x
    return i.batch_info, buf[:, : c.in_dim], i.args, buf[:, first:]


def _base_overlapping_weights(i: Inputs, c: Case) -> Call:
    # a contiguous copy of the first weights (whatever their layout), base_output a view of it
    w = i.args[0].contiguous()
    base = w.view(-1)[: c.T * c.out_dim].view(c.T, c.out_dim)
    return i.batch_info, i.x, (w, *i.args[1:]), base


def _base_overlapping_scalings(i: Inputs, c: Case) -> Call:
    # the batch's scalings and base_output carved from one buffer of bytes: base_output's first
    # bytes are the scalings' (its values then are whatever those bytes mean in its dtype)
    size = i.x.element_size()
    nbytes = max(c.T * c.out_dim * size, 4 * c.L)
    buf = torch.zeros(nbytes + (-nbytes) % 4, dtype=torch.uint8, device=i.x.device)
    scalings = buf[: 4 * c.L].view(torch.float32)
    scalings.copy_(i.batch_info.scalings)
    base = buf[: c.T * c.out_dim * size].view(i.x.dtype).view(c.T, c.out_dim)
    return _info(i, scalings=scalings), i.x, i.args, base


def _base_rows_overlap(i: Inputs, c: Case) -> Call:
    buf = torch.zeros(c.T + c.out_dim, dtype=i.x.dtype, device=i.x.device)
    return _with_base(i, buf.as_strided((c.T, c.out_dim), (1, 1)))


def _strided(t: torch.Tensor) -> torch.Tensor:
    """``t`` (1-D) as every other element of a buffer twice as long: same values, stride 2."""
    buf = torch.zeros(2 * t.numel(), dtype=t.dtype, device=t.device)
    buf[::2] = t
    return buf[::2]


def _strided_field(name: str, applies: Callable[[Case], bool]) -> Mutation:
    """The batch tensor ``name`` as every other element of a longer buffer (same values)."""
    return Mutation(
        f"{name} is strided",
        applies,
        lambda i, c: _with_info(i, **{name: _strided(getattr(i.batch_info, name))}),
    )


def _has_base(c: Case) -> bool:
    return c.op != "shrink" and c.T >= 1 and c.out_dim >= 1


def _weights_numel(c: Case) -> int:
    """Elements of the first weight argument (``B`` for expand, ``A`` otherwise)."""
    return c.L * c.out_dim * c.R if c.op == "expand" else c.L * c.stack * c.R * c.K


def _segments(c: Case) -> bool:
    return c.bs >= 1


def _qkv(c: Case) -> bool:
    return c.op == "qkv"


MUTATIONS: list[Mutation] = [
    # the batch
    Mutation("seg_indptr disagrees with seg_lens", _segments, _bad_indptr),
    Mutation("seg_indptr[0] is not 0", _segments, _set("seg_indptr", 0, 1)),
    Mutation("negative segment length", _segments, _negative_len),
    Mutation("weight index = L", _segments, _set("weight_indices", 0, lambda c: c.L)),
    Mutation("weight index = -1", _segments, _set("weight_indices", 0, -1)),
    Mutation("rank above R", lambda c: c.L >= 1, _set("lora_ranks", 0, lambda c: c.R + 1)),
    Mutation("negative rank", lambda c: c.L >= 1, _set("lora_ranks", 0, -1)),
    _strided_field("seg_lens", lambda c: c.bs >= 2),
    _strided_field("lora_ranks", lambda c: c.L >= 2),
    _strided_field("seg_indptr", lambda c: True),
    _strided_field("weight_indices", lambda c: c.bs >= 2),
    Mutation(
        "scalings is an expanded view (stride 0)",
        lambda c: c.L >= 2,
        lambda i, c: _with_info(i, scalings=i.batch_info.scalings[:1].expand(c.L)),
    ),
    _strided_field("permutation", lambda c: c.permute and c.T >= 2),
    Mutation("scaling is NaN", lambda c: c.L >= 1, _set("scalings", 0, float("nan"))),
    Mutation(
        "seg_lens is int64",
        lambda c: True,
        lambda i, c: _with_info(i, seg_lens=i.batch_info.seg_lens.long()),
    ),
    Mutation(
        "scalings are float64",
        lambda c: True,
        lambda i, c: _with_info(i, scalings=i.batch_info.scalings.double()),
    ),
    Mutation(
        "max_len below the longest segment",
        lambda c: c.T >= 1,
        lambda i, c: _with_info(i, max_len=max(c.seg_lens) - 1),
    ),
    Mutation(
        "expected_tokens disagrees with T",
        lambda c: True,
        lambda i, c: _with_info(i, expected_tokens=c.T + 1),
    ),
    Mutation(
        "has_active_lora is False beside an adapter in use",
        lambda c: any(c.lora_ranks[w] for w in c.used_slots),
        lambda i, c: _with_info(i, has_active_lora=False),
    ),
    Mutation("bs disagrees with seg_lens", lambda c: True, lambda i, c: _with_info(i, bs=c.bs + 1)),
    Mutation(
        "permutation is not a permutation",
        lambda c: c.T >= 1,
        # T >= 2: a repeated row; T == 1: a row out of range
        lambda i, c: _with_info(
            i, permutation=torch.zeros(c.T, dtype=torch.int32, device=i.x.device) + (c.T == 1)
        ),
    ),
    Mutation(
        "permutation has the wrong length",
        lambda c: True,
        lambda i, c: _with_info(
            i, permutation=torch.arange(c.T + 1, dtype=torch.int32, device=i.x.device)
        ),
    ),
    Mutation(
        "scalings have one entry too many",
        lambda c: True,
        lambda i, c: _with_info(
            i, scalings=torch.cat([i.batch_info.scalings, i.batch_info.scalings.new_ones(1)])
        ),
    ),
    Mutation(
        "lora_ranks are 2-D",
        lambda c: True,
        lambda i, c: _with_info(i, lora_ranks=i.batch_info.lora_ranks[None]),
    ),
    # the operands
    Mutation(
        "x is 1-D", lambda c: True, lambda i, c: (i.batch_info, i.x.flatten(), i.args, i.base)
    ),
    Mutation(
        "x is float64", lambda c: True, lambda i, c: (i.batch_info, i.x.double(), i.args, i.base)
    ),
    Mutation("x is int32", lambda c: True, lambda i, c: (i.batch_info, i.x.int(), i.args, i.base)),
    Mutation(
        "x is a negative view (its storage read negated, as .conj().imag makes)",
        lambda c: True,
        lambda i, c: (i.batch_info, torch._neg_view(i.x), i.args, i.base),
        lambda call: call[1].is_neg(),
    ),
    Mutation(
        "weights dtype differs from x",
        lambda c: True,
        lambda i, c: _with_args(i, i.args[0].to(_other_dtype(i.x)), *i.args[1:]),
    ),
    Mutation(
        "weights have one slot too many",
        lambda c: True,
        lambda i, c: _with_args(
            i, torch.cat([i.args[0], i.args[0].new_zeros(1, *i.args[0].shape[1:])]), *i.args[1:]
        ),
    ),
    Mutation(
        "weights are 2-D",
        lambda c: True,
        lambda i, c: _with_args(i, i.args[0].reshape(i.args[0].shape[0], -1), *i.args[1:]),
    ),
    Mutation(
        "x has one row too many",
        lambda c: True,
        lambda i, c: (
            i.batch_info,
            torch.cat([i.x, i.x.new_zeros(1, i.x.shape[1])]),
            i.args,
            i.base,
        ),
    ),
    # the metadata covers more rows than x: an engine's padded batch handed a trimmed x
    # (reads past x's end otherwise, as vLLM #51122 did)
    Mutation(
        "x has one row too few",
        lambda c: c.T >= 1,
        lambda i, c: (i.batch_info, i.x[:-1], i.args, i.base),
    ),
    Mutation(
        "x has one column too few",
        lambda c: c.op != "expand" and c.K >= 1,
        lambda i, c: (i.batch_info, i.x[:, :-1], i.args, i.base),
    ),
    Mutation(
        "x is narrower than the largest rank",
        lambda c: c.op == "expand" and max(c.lora_ranks, default=0) > 0,
        lambda i, c: (i.batch_info, i.x[:, : max(c.lora_ranks) - 1], i.args, i.base),
    ),
    Mutation(
        "weights' pool rank below the largest rank",
        lambda c: c.op == "expand" and max(c.lora_ranks, default=0) > 0,
        lambda i, c: _with_args(i, i.args[0][:, :, : max(c.lora_ranks) - 1]),
    ),
    Mutation(
        "stack_num is 4", lambda c: c.op == "shrink", lambda i, c: _with_args(i, i.args[0], 4)
    ),
    Mutation(
        "stack_num is True", lambda c: c.op == "shrink", lambda i, c: _with_args(i, i.args[0], True)
    ),
    Mutation(
        "stack_num is a float",
        lambda c: c.op == "shrink",
        lambda i, c: _with_args(i, i.args[0], float(c.stack)),
    ),
    # the output
    Mutation(
        "base_output has the wrong shape",
        lambda c: c.op != "shrink",
        lambda i, c: _with_base(
            i, torch.zeros(c.T, c.out_dim + 1, dtype=i.x.dtype, device=i.x.device)
        ),
    ),
    Mutation(
        "base_output dtype differs from x",
        lambda c: c.op != "shrink",
        lambda i, c: _with_base(
            i, torch.zeros(c.T, c.out_dim, dtype=_other_dtype(i.x), device=i.x.device)
        ),
    ),
    Mutation(
        "base_output overlaps x",
        lambda c: _has_base(c) and c.in_dim >= 1,
        _base_aliasing_x,
        lambda call: _shares_elements(call[1], call[3]),
    ),
    Mutation(
        "base_output is an expanded view",
        lambda c: _has_base(c) and c.T >= 2,
        lambda i, c: _with_base(
            i, torch.zeros(1, c.out_dim, dtype=i.x.dtype, device=i.x.device).expand(c.T, -1)
        ),
        lambda call: _self_overlapping(call[3]),
    ),
    Mutation(
        "base_output overlaps the weights",
        lambda c: _has_base(c) and _weights_numel(c) >= c.T * c.out_dim,
        _base_overlapping_weights,
        lambda call: _shares_elements(call[2][0], call[3]),
    ),
    Mutation(
        "base_output overlaps the batch's scalings",
        lambda c: _has_base(c) and c.L >= 1,
        _base_overlapping_scalings,
        lambda call: _shares_bytes(call[0].scalings, call[3]),
    ),
    Mutation(
        "base_output rows overlap each other",
        lambda c: _has_base(c) and c.T >= 2 and c.out_dim >= 2,
        _base_rows_overlap,
        lambda call: _self_overlapping(call[3]),
    ),
    # qkv and gate_up
    Mutation(
        "output_offset is int64",
        _qkv,
        lambda i, c: _with_offsets(i, i.args[2].long()),
    ),
    Mutation(
        "output_offset lacks its last entry",
        _qkv,
        lambda i, c: _with_offsets(i, i.args[2][:-1]),
    ),
    Mutation(
        "output_offset is strided",
        _qkv,
        lambda i, c: _with_offsets(i, _strided(i.args[2])),
    ),
    Mutation(
        "output_offset does not end at N",
        _qkv,
        lambda i, c: _with_offsets(i, i.args[2] + _last_one(i.args[2])),
    ),
    Mutation(
        "output_offset decreases",
        _qkv,
        lambda i, c: _with_offsets(i, _decreasing(i.args[2])),
    ),
    Mutation(
        "max_qkv_out_dim below the widest slice",
        lambda c: _qkv(c) and _widest(c) >= 1,
        lambda i, c: _with_args(i, *i.args[:3], _widest(c) - 1, *i.args[4:]),
    ),
    Mutation(
        "max_qkv_out_dim above the output width",
        _qkv,
        lambda i, c: _with_args(i, *i.args[:3], c.out_dim + 1, *i.args[4:]),
    ),
    Mutation(
        "n_slices is 0",
        lambda c: _qkv(c) and bool(c.slice_widths),
        lambda i, c: _with_args(i, *i.args[:4], 0),
    ),
    Mutation(
        "n_slices disagrees with output_offset",
        lambda c: _qkv(c) and len(c.slice_widths) >= 2,
        lambda i, c: _with_args(i, *i.args[:4], i.args[4] - 1),
    ),
    Mutation(
        "gate_up_lora_b has an odd dim 1",
        lambda c: c.op == "gate_up" and not c.split_b and c.N >= 1,
        lambda i, c: _with_args(i, i.args[0], torch.cat([i.args[1], i.args[1][:, :1]], dim=1)),
    ),
]


def mutations_for(case: Case) -> list[Mutation]:
    """The mutations that apply to ``case``."""
    return [m for m in MUTATIONS if m.applies(case)]


def expect_refusal(
    result: CaseResult, label: str, go: Callable[[], Any], watched: list[torch.Tensor]
) -> bool:
    """Run ``go`` (a backend handed the bad input ``label``), which must raise ``ValueError`` or
    ``TypeError`` and leave ``watched`` as they were; record what it did instead in ``result``.
    False when the backend tried to end the process (the caller stops)."""
    before = [t.clone() for t in watched]
    _, problem = backend_call(go)
    if problem is None:
        result.fail(f"{label}: accepted, expected ValueError or TypeError")
    elif problem.kind == "crash":
        result.fail(f"{label}: the backend tried to end the process: {problem.describe()}", "crash")
        return False
    elif not isinstance(problem.exc, ValueError | TypeError):
        result.fail(f"{label}: raised {problem.describe()}, expected ValueError or TypeError")
    elif not all(bool(bitwise_equal(t, b).all()) for t, b in zip(watched, before, strict=True)):
        result.fail(f"{label}: raised, but wrote its output (or an input) first")
    return True


def check_bad_inputs(
    backend_cls: type[BaseLoRABackend], case: Case, device: torch.device
) -> CaseResult:
    """Each mutation must raise ``ValueError``/``TypeError`` and leave ``base_output`` (and any
    input it aliases) as it was."""
    result = CaseResult(case, check="bad_input")
    good = build_inputs(case, device)
    for label, _, mutate, witness in mutations_for(case):
        info, x, args, base = mutate(good, case)
        if witness is not None and not witness((info, x, args, base)):
            raise AssertionError(f"harness: the bad input {label!r} built a valid call")
        watched = [t for t in (base, x) if isinstance(t, torch.Tensor)]

        def go(info=info, x=x, args=args, base=base):
            backend = backend_cls()
            backend.set_batch_info(info)
            return call(backend, case, Inputs(info, x, args, base), base)

        if not expect_refusal(result, label, go, watched):
            break
    return result


CHECK = Check(
    name="bad_input",
    doc="every invalid input of the table in its file (batch, operands, overlapping outputs, "
    "offsets), each a `ValueError`/`TypeError` before anything is written",
    rules=("6-bad-input",),
    ops=OPS,
    dtypes="primary",
    scale=1.0,
    shrink=False,
    strategy=lambda ctx: plain(drawn(ctx)),
    explicit=lambda ctx: primary_corners(ctx, 1),
    run=lambda b, e, d: check_bad_inputs(b, e.case, d),
)
