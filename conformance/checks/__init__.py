"""The one registry of checks.  The plan (:mod:`conformance.plan`), the engine, the pytest
suite, the command line and replay all read :data:`CHECKS`; nothing else maps names to checks.

Each :class:`Check` says which groups it makes (one per op; dtypes: every declared one, or the
first declared one, or a mix), what it needs from the backend, how it draws examples, which
hand-built examples it runs first, and how to run one example.
"""

from __future__ import annotations

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
from conformance.checks.lifecycle import check_lifecycle
from conformance.checks.metamorphic import RELATIONS, check_metamorphic
from conformance.ops import CHECK_NAMES, OPS, STACKS
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
        ctx.profile.limits,
        ctx.profile.row_boundaries,
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
    picked = _primary_corners(ctx, 2, permute=False, strides="contiguous")
    return [
        Example(e.case, {"relation": relation, "choice": 7})
        for e, relation in zip(picked, ("permute_segments", "split_segment"), strict=False)
    ]


def _lifecycle_steps(ctx: GroupContext) -> st.SearchStrategy[Example]:
    dtypes = ctx.op_dtypes

    @st.composite
    def steps(draw: st.DrawFn) -> Example:
        out: list[list[Case]] = []
        for s in range(draw(st.integers(2, 4), label="batches")):
            calls = draw(st.integers(1, 3), label="calls")
            first_op = draw(st.sampled_from(OPS), label="op")
            base = draw(
                cases(
                    first_op,
                    draw(st.sampled_from(dtypes)),
                    ctx.profile.limits,
                    ctx.profile.row_boundaries,
                    permutation=False,
                ),
                label="batch",
            )
            step = [base]
            for _ in range(calls - 1):
                op = draw(st.sampled_from(OPS), label="next op")
                step.append(_same_batch(base, op, draw(st.sampled_from(dtypes)), draw))
            out.append(step)
            del s
        return Example(out[0][0], {"steps": [[c.to_json() for c in st_] for st_ in out]})

    return steps()


def _same_batch(base: Case, op: str, dtype: str, draw: st.DrawFn) -> Case:
    """Another call on ``base``'s batch: another op, dtype, shapes and seed."""
    K = draw(st.integers(1, 40), label="K")
    N = draw(st.integers(1, 40), label="N")
    return base.replace(
        op=op,
        dtype=dtype,
        K=K if op != "expand" else 0,
        N=N if op != "shrink" else 0,
        n_kv=draw(st.integers(1, N)) if op == "qkv" else 0,
        stack=draw(st.sampled_from(STACKS[op])),
        has_base=op != "shrink" and draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        split_b=False,
        extra_cols=0,
        permute=False,
    )


def _lifecycle_explicit(ctx: GroupContext) -> list[Example]:
    """Decode, then a prefill with more slots, then decode again: layouts of another size."""
    dtypes = ctx.op_dtypes
    picks = {}
    for op in OPS:
        shared, _ = corners.corner_cases(op, ctx.profile.name)
        picks[op] = {c.name: c for c in shared}
    d17 = "decode: 17 segments"
    rows = "rows 15,32,65,16 (T=128)"
    sparse = "sparse pool of 20, slots 3,8,9,16,19"

    def at(op: str, name: str, k: int) -> Case:
        return picks[op][name].replace(dtype=dtypes[k % len(dtypes)], permute=False)

    steps = [
        [at("qkv", d17, 0), at("shrink", d17, 1), at("gate_up", d17, 2)],
        [at("expand", rows, 1), at("qkv", rows, 0).replace(N=36, n_kv=6)],
        [at("gate_up", sparse, 0), at("expand", sparse, 2)],
        [at("qkv", d17, 2)],
    ]
    return [Example(steps[0][0], {"steps": [[c.to_json() for c in s] for s in steps]})]


def _run_lifecycle(backend_cls, example: Example, device) -> CaseResult:
    steps = [[Case.from_json(c) for c in step] for step in example.params["steps"]]
    return check_lifecycle(backend_cls, steps, device)


CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check(
            "diff",
            "every op and declared dtype against the float64 oracle, with poisoned garbage, "
            "guard bands, untouched inputs, bit-exact rank-0 rows and determinism",
            OPS,
            "all",
            1.0,
            True,
            _nothing,
            lambda ctx: _plain(_drawn(ctx)),
            lambda ctx: [Example(c, {}) for c in _corners(ctx)],
            lambda b, e, d: check_diff(b, e.case, d),
        ),
        Check(
            "permutation",
            "the diff check with every case permuted (sorted-by-adapter layouts)",
            OPS,
            "primary",
            0.5,
            True,
            _requires("permutation", "permutation"),
            lambda ctx: _plain(_drawn(ctx, permute=True)),
            lambda ctx: _primary_corners(ctx, 3, permute=True),
            lambda b, e, d: check_diff(b, e.case, d, check="permutation"),
        ),
        Check(
            "split_layout",
            "the diff check with the split expand-weight layouts",
            ("qkv", "gate_up"),
            "primary",
            0.5,
            True,
            _requires("split_layouts", "the split expand-weight layouts"),
            lambda ctx: _plain(_drawn(ctx, split_b=True)),
            lambda ctx: _primary_corners(ctx, 2, split_b=True),
            lambda b, e, d: check_diff(b, e.case, d, check="split_layout"),
        ),
        Check(
            "metamorphic",
            "permuting, splitting, padding or dropping segments leaves every row unchanged",
            OPS,
            "primary",
            1.0,
            True,
            _nothing,
            _metamorphic_strategy,
            _metamorphic_explicit,
            lambda b, e, d: check_metamorphic(
                b, e.case, e.params["relation"], e.params["choice"], d
            ),
        ),
        Check(
            "bad_input",
            "every invalid input raises ValueError/TypeError before anything is written",
            OPS,
            "primary",
            1.0,
            False,
            _nothing,
            lambda ctx: _plain(_drawn(ctx)),
            lambda ctx: _primary_corners(ctx, 1),
            lambda b, e, d: check_bad_inputs(b, e.case, d),
        ),
        Check(
            "lifecycle",
            "one instance serves several batches in turn, ops and dtypes interleaved",
            ("mixed",),
            "mixed",
            0.5,
            True,
            _nothing,
            _lifecycle_steps,
            _lifecycle_explicit,
            _run_lifecycle,
        ),
        Check(
            "cuda_graph",
            "capture, refill the batch info in place with more and fewer segments, replay",
            OPS,
            "primary",
            0.25,
            True,
            _graph_needs,
            lambda ctx: _plain(_drawn(ctx, permute=False).filter(_has_rows)),
            lambda ctx: [],
            lambda b, e, d: check_cuda_graph(b, e.case, e.params.get("capacity", 12)),
        ),
    )
}
NAMES = CHECK_NAMES
if tuple(CHECKS) != NAMES:
    raise RuntimeError(f"conformance.ops.CHECK_NAMES {NAMES} disagrees with {tuple(CHECKS)}")
