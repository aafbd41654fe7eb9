"""A backend's declared shape domain (``lora_ref.Domain``) applied to the suite's cases.

Drawn cases are *projected* into the domain (:func:`project`): each size rounded up to the
declared multiple and minimum, ranks capped, slots and segments truncated, so that a run keeps
its number of examples and Hypothesis still shrinks what it drew.  Hand-built cases are kept
only when they lie inside (:func:`outside` says why one does not); the record counts those left
out (``outside_domain``), and the report states the domain beside its verdict.  Nothing outside
a declared domain is ever run, so nothing outside it counts as a pass.
"""

from __future__ import annotations

from hypothesis import strategies as st

from conformance.case import Case
from lora_ref import Domain

STRIDED = ("col_slice", "row_stride", "transposed", "pool_view")  # not Tensor.is_contiguous()


def round_up(v: int, step: int) -> int:
    """``v`` rounded up to a multiple of ``step``."""
    return -(-v // step) * step


def _widths(case: Case) -> list[int]:
    """The output slices' widths the domain's ``N`` bounds (none for the shrink)."""
    return [] if case.op == "shrink" else [hi - lo for lo, hi in case.slices]


def outside(case: Case, d: Domain) -> str | None:
    """Why ``case`` lies outside ``d``, or None when it lies inside."""
    k, r_pool, slots, segments = case.K, case.R, case.L, case.bs
    if case.op != "expand" and (k < d.K_min or k % d.K_multiple):
        return f"K={k}"
    for w in _widths(case):
        if w < d.N_min or w % d.N_multiple:
            return f"N={w}"
    for r in (r_pool, *case.lora_ranks):
        if r % d.rank_multiple:
            return f"rank {r}"
    if d.rank_max is not None and r_pool > d.rank_max:
        return f"R={r_pool}"
    if d.slots_max is not None and slots > d.slots_max:
        return f"{slots} slots"
    if d.segments_max is not None and segments > d.segments_max:
        return f"{segments} segments"
    if not d.wide_expand_input and case.op == "expand" and case.extra_cols:
        return f"expand x {case.extra_cols} columns wider than R"
    if d.dense_only:
        for arg, kind in case.layouts.items():
            if kind in STRIDED:
                return f"{arg} {kind}"
    return None


def project(case: Case, d: Domain) -> Case | None:
    """``case`` moved into ``d``: the nearest sizes at or above it that ``d`` allows (ranks
    capped at ``d.rank_max``), slots and segments past the maxima dropped.  None when no case
    of the op fits (a rank cap below the rank multiple)."""
    if not d.restricted:
        return case
    changes: dict[str, object] = {}
    if case.op != "expand":
        changes["K"] = round_up(max(case.K, d.K_min), d.K_multiple)
    if case.op != "shrink":
        changes["N"] = round_up(max(case.N, d.N_min), d.N_multiple)
        if case.slice_widths:
            changes["slice_widths"] = tuple(round_up(max(w, d.N_min), d.N_multiple)
                                            for w in case.slice_widths)  # fmt: skip
        elif case.op == "qkv":
            changes["n_kv"] = round_up(max(case.n_kv, d.N_min), d.N_multiple)
    cap = None if d.rank_max is None else d.rank_max // d.rank_multiple * d.rank_multiple
    if cap == 0:
        return None
    ranks = [round_up(r, d.rank_multiple) for r in case.lora_ranks]
    seg_lens, weights, scalings = list(case.seg_lens), list(case.weight_indices), case.scalings
    if d.slots_max is not None and len(ranks) > d.slots_max:
        ranks, scalings = ranks[: d.slots_max], scalings[: d.slots_max]
        weights = [w % d.slots_max for w in weights]
        if case.no_lora:
            changes["no_lora"] = case.no_lora[: d.slots_max]
    if d.segments_max is not None and len(seg_lens) > d.segments_max:
        seg_lens, weights = seg_lens[: d.segments_max], weights[: d.segments_max]
    if cap is not None:
        ranks = [min(r, cap) for r in ranks]
    R = max(round_up(case.R, d.rank_multiple), *ranks, 0)
    if cap is not None:
        R = min(R, cap)
    if not d.wide_expand_input:
        changes["extra_cols"] = 0
    if d.dense_only:
        changes["layouts"] = {
            arg: "contiguous" if kind in STRIDED else kind for arg, kind in case.layouts.items()
        }
    moved = case.replace(**changes, lora_ranks=tuple(ranks), R=R, seg_lens=tuple(seg_lens),
                         weight_indices=tuple(weights), scalings=tuple(scalings))  # fmt: skip
    return moved if outside(moved, d) is None else None


def within(strategy: st.SearchStrategy[Case], d: Domain) -> st.SearchStrategy[Case]:
    """``strategy``'s cases projected into ``d`` (:func:`project`); ``strategy`` itself for the
    whole space, so that an unrestricted backend draws exactly what it drew before."""
    if not d.restricted:
        return strategy
    return strategy.map(lambda c: project(c, d)).filter(lambda c: c is not None)


def inside(examples: list, d: Domain) -> tuple[list, int]:
    """The hand-built ``examples`` (``conformance.checks.Example``) whose every case lies inside
    ``d``, and how many were left out."""
    if not d.restricted:
        return examples, 0
    kept = []
    for e in examples:
        steps = [Case.from_json(s["case"]) for s in e.params.get("steps", [])]
        if all(outside(c, d) is None for c in (e.case, *steps)):
            kept.append(e)
    return kept, len(examples) - len(kept)
