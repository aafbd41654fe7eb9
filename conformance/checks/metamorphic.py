"""Metamorphic relations: reshaping the batch must leave every row's result unchanged.

Permuting the segments, splitting one, inserting an empty one, or dropping all others changes
which rows sit where, never what a row computes.  The related call's rows must match the
original's within twice the oracle's tolerance (or bit for bit).
"""

from __future__ import annotations

import random

import torch
from hypothesis import strategies as st

from conformance.case import Case
from conformance.checks.base import Check, Example, GroupContext, drawn, primary_corners
from conformance.checks.diff import run_call
from conformance.checks.guards import CaseResult
from conformance.inputs import Inputs, build_inputs
from conformance.names import OPS
from conformance.oracle import bitwise_equal, expect_for
from lora_ref import BaseLoRABackend, make_batch_info

RELATIONS = ("permute_segments", "split_segment", "insert_empty", "drop_others")


def derive(case: Case, relation: str, choice: int) -> tuple[Case, list[int]] | None:
    """A related case and, for each of its rows, the row of ``case`` with the same result.

    ``case`` must not be permuted.  Returns None when the relation does not apply.
    """
    rng = random.Random(choice)
    segs = list(zip(case.seg_lens, case.weight_indices, strict=True))
    starts = [sum(case.seg_lens[:i]) for i in range(len(segs))]
    blocks = [list(range(s, s + n)) for s, (n, _) in zip(starts, segs, strict=True)]
    if relation == "permute_segments":
        order = list(range(len(segs)))
        rng.shuffle(order)
        new = [segs[i] for i in order]
        rows = [t for i in order for t in blocks[i]]
    elif relation == "split_segment":
        long = [i for i, (n, _) in enumerate(segs) if n >= 2]
        if not long:
            return None
        i = rng.choice(long)
        n, w = segs[i]
        k = rng.randint(1, n - 1)
        new = [*segs[:i], (k, w), (n - k, w), *segs[i + 1 :]]
        rows = list(range(case.T))
    elif relation == "insert_empty":
        if case.L == 0:
            return None
        p = rng.randint(0, len(segs))
        new = [*segs[:p], (0, rng.randrange(case.L)), *segs[p:]]
        rows = list(range(case.T))
    elif relation == "drop_others":
        nonempty = [i for i, (n, _) in enumerate(segs) if n > 0]
        if len(nonempty) < 2:
            return None
        i = rng.choice(nonempty)
        new = [segs[i]]
        rows = blocks[i]
    else:
        raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")
    derived = case.replace(
        seg_lens=tuple(n for n, _ in new), weight_indices=tuple(w for _, w in new)
    )
    return derived, rows


def gather_rows(inputs: Inputs, derived: Case, rows: list[int]) -> Inputs:
    """The rows ``rows`` of ``inputs`` (unpermuted), contiguous, as the batch ``derived``."""
    device = inputs.x.device
    index = torch.tensor(rows, dtype=torch.long, device=device)
    # the scalings the original call ran with (a subnormal case scales the case's)
    scalings = inputs.batch_info.scalings.tolist()
    info = make_batch_info(
        derived.seg_lens, derived.weight_indices, derived.lora_ranks, scalings, device=device
    )
    base = inputs.base[index].contiguous() if inputs.base is not None else None
    return Inputs(info, inputs.x[index].contiguous(), inputs.args, base)


def related_calls(
    backend_cls: type[BaseLoRABackend], case: Case, inputs: Inputs, derived: Case,
    rows: list[int], result: CaseResult, label: str,
) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
    """The call of ``case`` and the call of ``derived`` on ``rows`` of the same inputs, each on a
    fresh instance; None after recording the problem (a raise, or a result of the wrong
    shape)."""
    first = run_call(backend_cls, case, inputs, result, "the first call")
    if first is None:
        return None
    second = run_call(backend_cls, derived, gather_rows(inputs, derived, rows), result, label)
    if second is None:
        return None
    for name, t, want in (("first", first[0], case), (label, second[0], derived)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (want.T, want.out_dim):
            result.fail(f"the {name} call returned {getattr(t, 'shape', type(t).__name__)}")
            return None
    return first[0], second[0]


def check_metamorphic(
    backend_cls: type[BaseLoRABackend], case: Case, relation: str, choice: int, device: torch.device
) -> CaseResult:
    """Rows of the related case must match the original rows within the oracle's tolerance."""
    case = case.replace(permute=False, layouts={})
    result = CaseResult(case, check="metamorphic", params={"relation": relation, "choice": choice})
    related = derive(case, relation, choice)
    if related is None:
        return result
    derived, rows = related
    inputs = build_inputs(case, device)
    exp = expect_for(case, inputs, backend_cls.capabilities)
    pair = related_calls(backend_cls, case, inputs, derived, rows, result, relation)
    if pair is None:
        return result
    out, out2 = pair
    index = torch.tensor(rows, dtype=torch.long, device=device)
    mask = exp.specified[index]
    a, b = out[index], out2
    same_bits = bitwise_equal(a, b)
    diff = (b.double() - a.double()).abs()
    bad = mask & ~same_bits & ~(diff <= 2 * exp.tol[index])
    if bad.any():
        i, j = bad.nonzero()[0].tolist()
        result.fail(
            f"{relation} (choice={choice}) changed a row: row {i} of {derived.describe()} gives "
            f"{b[i, j].item():.6g} at column {j}, but the same row of the original call (row "
            f"{rows[i]}) gave {a[i, j].item():.6g}; they must agree within "
            f"{2 * exp.tol[rows[i], j].item():.3g}"
        )
    return result


def _strategy(ctx: GroupContext) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda c, relation, choice: Example(c, {"relation": relation, "choice": choice}),
        drawn(ctx, permute=False),
        st.sampled_from(RELATIONS),
        st.integers(0, 10**6),
    )


def _explicit(ctx: GroupContext) -> list[Example]:
    picked = primary_corners(ctx, 2, permute=False, layouts={})
    return [
        Example(e.case, {"relation": relation, "choice": 7})
        for e, relation in zip(picked, ("permute_segments", "split_segment"), strict=False)
    ]


CHECK = Check(
    name="metamorphic",
    doc="permuting, splitting, padding or dropping segments changes no row",
    rules=("1-the-batch-lorabatchinfo",),
    ops=OPS,
    dtypes="primary",
    scale=1.0,
    shrink=True,
    strategy=_strategy,
    explicit=_explicit,
    run=lambda b, e, d: check_metamorphic(b, e.case, e.params["relation"], e.params["choice"], d),
)
