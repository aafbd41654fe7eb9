"""The one registry of checks.  The plan (:mod:`conformance.plan`), the engine, the pytest
suite, the command line and replay all read :data:`CHECKS`; nothing else maps names to checks.

Each :class:`Check` says which groups it makes (one per op; dtypes: every declared one, or the
first declared one, or a mix), what it needs from the backend, how it draws examples, which
hand-built examples it runs first, and how to run one example.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st

from conformance import corners
from conformance.case import Case
from conformance.checks.bad_input import check_bad_inputs
from conformance.checks.cuda_graph import check_cuda_graph
from conformance.checks.diff import check_diff
from conformance.checks.harness import CaseResult
from conformance.checks.lifecycle import (
    STEP_KINDS,
    applicable,
    check_lifecycle,
    derive,
    steps_from_params,
)
from conformance.checks.metamorphic import RELATIONS, check_metamorphic
from conformance.ops import CHECK_NAMES, OPS
from conformance.profiles import Profile
from conformance.strategies import cases
from lora_ref import BaseLoRABackend, Capabilities


class Example(NamedTuple):
    """One example of a check: a case and the check's own parameters (JSON values)."""

    case: Case
    params: dict[str, Any]


@dataclass(frozen=True)
class GroupContext:
    """What a check needs to draw the examples of one group."""

    op: str
    dtype: str
    op_dtypes: list[str]  # the dtypes this op's diff groups run in (corner cases spread there)
    profile: Profile
    caps: Capabilities


@dataclass(frozen=True)
class Check:
    """A check of the registry.

    Attributes:
        name: its name in group ids, reports and failure files.
        doc: one line for ``--help`` and the contract.
        ops: the ops it makes groups for (``("mixed",)``: one group over every op).
        dtypes: ``all`` (a group per declared dtype), ``primary`` (the first declared dtype) or
            ``mixed`` (one group over every declared dtype).
        scale: its share of the profile's examples per group.
        shrink: whether Hypothesis shrinks its failures.
        needs: why the backend or device cannot run it, or None.
        strategy: the examples it draws.
        explicit: the hand-built examples it runs first.
        run: one example on a backend class.
    """

    name: str
    doc: str
    ops: tuple[str, ...]
    dtypes: str
    scale: float
    shrink: bool
    needs: Callable[[Capabilities, str], str | None]
    strategy: Callable[[GroupContext], st.SearchStrategy[Example]]
    explicit: Callable[[GroupContext], list[Example]]
    run: Callable[[type[BaseLoRABackend], Example, torch.device], CaseResult]


def _nothing(caps: Capabilities, device: str) -> str | None:
    return None


def _drawn(ctx: GroupContext, **forced: Any) -> st.SearchStrategy[Case]:
    caps = ctx.caps
    strategy = cases(
        ctx.op,
        ctx.dtype,
        ctx.profile,
        permutation=caps.permutation and forced.get("permute", True),
        split_layouts=caps.split_layouts,
    )
    return strategy.map(lambda c: c.replace(**forced)) if forced else strategy


def _plain(strategy: st.SearchStrategy[Case]) -> st.SearchStrategy[Example]:
    return strategy.map(lambda c: Example(c, {}))


def _corners(ctx: GroupContext, split: bool = False) -> list[Case]:
    return corners.explicit_cases(
        ctx.op, ctx.dtype, ctx.op_dtypes, ctx.profile.name, ctx.caps.permutation, split
    )


def _primary_corners(ctx: GroupContext, count: int, **forced: Any) -> list[Example]:
    """``count`` shared corner cases with rows in them, in the group's dtype."""
    shared, _ = corners.corner_cases(ctx.op, ctx.profile.name)
    chosen = [c for c in shared if c.T >= 2][:count]
    return [Example(c.replace(dtype=ctx.dtype, **forced), {}) for c in chosen]


def _requires(flag: str, text: str) -> Callable[[Capabilities, str], str | None]:
    return lambda caps, device: None if getattr(caps, flag) else f"{text} not declared by backend"


def _has_rows(case: Case) -> bool:
    return case.T > 0


def _graph_needs(caps: Capabilities, device: str) -> str | None:
    if not caps.cuda_graph:
        return "CUDA graphs not declared by backend (cuda_graph=False)"
    return None if device == "cuda" else "CUDA graphs need a CUDA device"


def _metamorphic_strategy(ctx: GroupContext) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda c, relation, choice: Example(c, {"relation": relation, "choice": choice}),
        _drawn(ctx, permute=False),
        st.sampled_from(RELATIONS),
        st.integers(0, 10**6),
    )


def _metamorphic_explicit(ctx: GroupContext) -> list[Example]:
    picked = _primary_corners(ctx, 2, permute=False, layouts={})
    return [
        Example(e.case, {"relation": relation, "choice": 7})
        for e, relation in zip(picked, ("permute_segments", "split_segment"), strict=False)
    ]


def _lifecycle_steps(ctx: GroupContext) -> st.SearchStrategy[Example]:
    dtypes = ctx.op_dtypes
    # every call of an example runs on one instance: a smaller budget per call
    small = dataclasses.replace(ctx.profile, budget=max(ctx.profile.budget // 8, 1))

    def first_case(draw: st.DrawFn) -> Case:
        op = draw(st.sampled_from(OPS), label="op")
        return draw(cases(op, draw(st.sampled_from(dtypes)), small, permutation=False))

    @st.composite
    def steps(draw: st.DrawFn) -> Example:
        prev = first_case(draw)
        out = [("fresh", prev)]
        for _ in range(draw(st.integers(1, 6), label="steps")):
            kinds = [k for k in STEP_KINDS if applicable(prev, k, dtypes)]
            kind = draw(st.sampled_from(kinds), label="step")
            if kind == "fresh":
                prev = first_case(draw)
            else:
                rng = random.Random(draw(st.integers(0, 2**32 - 1), label="change"))
                prev = derive(prev, kind, rng, dtypes)
            out.append((kind, prev))
        return _lifecycle_example(out)

    return steps()


def _lifecycle_example(steps: list[tuple[str, Case]]) -> Example:
    return Example(steps[0][1], {"steps": [{"kind": k, "case": c.to_json()} for k, c in steps]})


def _lifecycle_explicit(ctx: GroupContext) -> list[Example]:
    """Every step kind once, from a qkv batch with an empty segment, several slots and GQA;
    then a decode batch of another size, an op and dtype change on it, and the same again."""
    dtypes = ctx.op_dtypes
    shared = {c.name: c for c in corners.corner_cases("qkv", ctx.profile.name)[0]}
    start = shared["rows 15,32,65,16 (T=128)"].replace(dtype=dtypes[0], permute=False)
    decode = shared["decode: 17 segments"].replace(dtype=dtypes[-1], permute=False)
    plan = ["same_call", "rewrite_weights", "relayout", "refill_batch", "change_rank",
            "change_offsets", "change_N", "change_dtype", "other_op", "fresh", "refill_batch",
            "other_op", "change_rank", "same_call"]  # fmt: skip
    steps = [("fresh", start)]
    for k, kind in enumerate(plan):
        prev = steps[-1][1]
        if kind == "fresh":
            steps.append((kind, decode))
        elif applicable(prev, kind, dtypes):
            steps.append((kind, derive(prev, kind, random.Random(k), dtypes)))
    return [_lifecycle_example(steps)]


def _run_lifecycle(backend_cls, example: Example, device) -> CaseResult:
    return check_lifecycle(backend_cls, steps_from_params(example.params), device)


CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check(
            name="diff",
            doc="every op and declared dtype against the float64 oracle, with poisoned garbage, "
            "guard bands, untouched inputs, bit-exact rank-0 rows and determinism",
            ops=OPS,
            dtypes="all",
            scale=1.0,
            shrink=True,
            needs=_nothing,
            strategy=lambda ctx: _plain(_drawn(ctx)),
            explicit=lambda ctx: [Example(c, {}) for c in _corners(ctx)],
            run=lambda b, e, d: check_diff(b, e.case, d),
        ),
        Check(
            name="permutation",
            doc="the diff check with every case permuted (sorted-by-adapter layouts)",
            ops=OPS,
            dtypes="primary",
            scale=0.5,
            shrink=True,
            needs=_requires("permutation", "permutation"),
            strategy=lambda ctx: _plain(_drawn(ctx, permute=True)),
            explicit=lambda ctx: _primary_corners(ctx, 3, permute=True),
            run=lambda b, e, d: check_diff(b, e.case, d, check="permutation"),
        ),
        Check(
            name="split_layout",
            doc="the diff check with the split expand-weight layouts",
            ops=("qkv", "gate_up"),
            dtypes="primary",
            scale=0.5,
            shrink=True,
            needs=_requires("split_layouts", "the split expand-weight layouts"),
            strategy=lambda ctx: _plain(_drawn(ctx, split_b=True)),
            explicit=lambda ctx: _primary_corners(ctx, 2, split_b=True),
            run=lambda b, e, d: check_diff(b, e.case, d, check="split_layout"),
        ),
        Check(
            name="metamorphic",
            doc="permuting, splitting, padding or dropping segments leaves every row unchanged",
            ops=OPS,
            dtypes="primary",
            scale=1.0,
            shrink=True,
            needs=_nothing,
            strategy=_metamorphic_strategy,
            explicit=_metamorphic_explicit,
            run=lambda b, e, d: check_metamorphic(
                b, e.case, e.params["relation"], e.params["choice"], d
            ),
        ),
        Check(
            name="bad_input",
            doc="every invalid input raises ValueError/TypeError before anything is written",
            ops=OPS,
            dtypes="primary",
            scale=1.0,
            shrink=False,
            needs=_nothing,
            strategy=lambda ctx: _plain(_drawn(ctx)),
            explicit=lambda ctx: _primary_corners(ctx, 1),
            run=lambda b, e, d: check_bad_inputs(b, e.case, d),
        ),
        Check(
            name="lifecycle",
            doc="one instance over a sequence of calls: batch info refilled in place, weights "
            "rewritten in place, new layouts, and rank, N, offsets, dtype or op changed",
            ops=("mixed",),
            dtypes="mixed",
            scale=0.5,
            shrink=True,
            needs=_nothing,
            strategy=_lifecycle_steps,
            explicit=_lifecycle_explicit,
            run=_run_lifecycle,
        ),
        Check(
            name="cuda_graph",
            doc="capture, refill the batch info in place with more and fewer segments, replay",
            ops=OPS,
            dtypes="primary",
            scale=0.25,
            shrink=True,
            needs=_graph_needs,
            strategy=lambda ctx: _plain(_drawn(ctx, permute=False).filter(_has_rows)),
            explicit=lambda ctx: [],
            run=lambda b, e, d: check_cuda_graph(b, e.case, e.params.get("capacity", 12)),
        ),
    )
}
NAMES = CHECK_NAMES
if tuple(CHECKS) != NAMES:
    raise RuntimeError(f"conformance.ops.CHECK_NAMES {NAMES} disagrees with {tuple(CHECKS)}")
