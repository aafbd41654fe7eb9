"""``lora-conformance probe-domain``: where a backend really stops, at the edge of the domain it
declares (``Capabilities.domain``).

For every restriction of the domain and every op it applies to, two hand-built cases: one just
inside (the restriction's own edge: ``K = K_min``, a rank at the multiple, ``R = rank_max``,
...) and one just outside, differing from it in that one restriction (``K = K_min - 1``, a rank
one below the multiple, ``R`` one multiple past the cap, one slot or segment too many, a
strided ``x``, an expand input one column wider than ``R``).  Each runs the diff check in a
worker process, so a crash is an answer too, and gets one outcome:

* ``works``: the contract's result (the domain is narrower than the backend);
* ``error``: an exception (named) before anything was written: a clean refusal;
* ``wrong``: a wrong result, or a wrong-looking error (one that wrote first);
* ``crash``: the worker died; ``timeout``: it outlived the deadline.

An inside edge that does not work is a finding against the declaration itself (exit 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from conformance.case import Case
from conformance.checks.base import Example
from conformance.domain import outside, round_up
from conformance.names import OPS
from lora_ref import Domain

OUTCOMES = ("works", "error", "wrong", "crash", "timeout")


@dataclasses.dataclass(frozen=True)
class Edge:
    """One restriction of one op: the case just inside and the case just outside."""

    restriction: str
    op: str
    inside: Case
    outside: Case
    what: str  # the outside case's change, in words


def base_case(op: str, dtype: str, d: Domain) -> Case:
    """A small case of ``op`` inside ``d``: two segments on two slots with ranks at the rank
    multiple (two of them when the cap allows), ``K`` and ``N`` at 64 rounded to the domain."""
    m = d.rank_multiple
    cap = d.rank_max if d.rank_max is not None else 4 * m
    r = m * max(1, min(2, cap // m))
    K = 0 if op == "expand" else round_up(max(64, d.K_min), d.K_multiple)
    N = 0 if op == "shrink" else round_up(max(64, d.N_min), d.N_multiple)
    stack = {"shrink": 1, "expand": 1, "qkv": 3, "gate_up": 2}[op]
    two_slots = d.slots_max is None or d.slots_max >= 2
    two_segments = d.segments_max is None or d.segments_max >= 2
    n_kv = round_up(max(N // 2, d.N_min), d.N_multiple) if op == "qkv" else 0
    return Case(op=op, dtype=dtype, seg_lens=(5, 3) if two_segments else (8,),
                weight_indices=((0, 1) if two_slots else (0, 0)) if two_segments else (0,),
                lora_ranks=(r, m) if two_slots else (r,),
                scalings=(0.5, -0.75) if two_slots else (0.5,), R=r, K=K, N=N, n_kv=n_kv,
                stack=stack, seed=1234, name="domain edge")  # fmt: skip


def edges(op: str, dtype: str, d: Domain) -> Iterator[Edge]:
    """Every restriction of ``d`` that ``op`` has, as an :class:`Edge`."""
    base = base_case(op, dtype, d)

    def edge(name: str, inside: Case, out: Case, what: str) -> Edge:
        return Edge(name, op, inside, out, what)

    for dim, lo, step, applies in (("K", d.K_min, d.K_multiple, op != "expand"),
                                   ("N", d.N_min, d.N_multiple, op != "shrink")):  # fmt: skip
        if applies and lo > 0:
            v = round_up(lo, step)
            yield edge(f"{dim} >= {lo}", base.replace(**{dim: v}), base.replace(**{dim: lo - 1}),
                       f"{dim} = {lo - 1}")  # fmt: skip
        if applies and step > 1:
            v = round_up(max(lo, 1), step)
            yield edge(f"{dim} % {step} == 0", base.replace(**{dim: v}),
                       base.replace(**{dim: v + 1}), f"{dim} = {v + 1}")  # fmt: skip
    m = d.rank_multiple
    last = len(base.lora_ranks) - 1
    if m > 1:
        ranks = (*base.lora_ranks[:last], m - 1)
        yield edge(f"rank % {m} == 0", base, base.replace(lora_ranks=ranks),
                   f"slot {last} of rank {m - 1}")  # fmt: skip
    if d.rank_max is not None:
        top = d.rank_max // m * m
        over = top + m
        rest = base.lora_ranks[1:]
        yield edge(f"R <= {d.rank_max}", base.replace(R=top, lora_ranks=(top, *rest)),
                   base.replace(R=over, lora_ranks=(over, *rest)),
                   f"R = rank = {over}")  # fmt: skip
    if d.slots_max is not None:
        yield edge(f"slots <= {d.slots_max}", _slots(base, d.slots_max, m),
                   _slots(base, d.slots_max + 1, m), f"{d.slots_max + 1} slots")  # fmt: skip
    if d.segments_max is not None:
        yield edge(f"segments <= {d.segments_max}", _segments(base, d.segments_max),
                   _segments(base, d.segments_max + 1),
                   f"{d.segments_max + 1} segments")  # fmt: skip
    if d.dense_only:
        yield edge("dense tensors only", base, base.replace(layouts={"x": "col_slice"}),
                   "x a column slice of a wider buffer")  # fmt: skip
    if not d.wide_expand_input and op == "expand":
        yield edge("expand x exactly R wide", base, base.replace(extra_cols=1),
                   "expand x one column wider than R")  # fmt: skip


def _slots(case: Case, L: int, m: int) -> Case:
    """``case`` with ``L`` slots (the new ones of rank ``m``), the last used by its last
    segment."""
    ranks = (case.lora_ranks[0], *([m] * (L - 1)))[:L]
    scalings = tuple(0.5 if w % 2 else -0.25 for w in range(L))
    weights = (*case.weight_indices[:-1], L - 1)
    return case.replace(lora_ranks=ranks, scalings=scalings, weight_indices=weights)


def _segments(case: Case, bs: int) -> Case:
    """``case`` with ``bs`` segments of one row each, alternating its two slots."""
    slots = case.L
    return case.replace(seg_lens=(1,) * bs, weight_indices=tuple(i % slots for i in range(bs)))


def outcome(result: Any) -> str:
    """The outcome of one probe run (a ``CaseResult`` of the diff check)."""
    if result.ok:
        return "works"
    if result.kind in ("crash", "timeout"):
        return result.kind
    raised = [m for m in result.failures if "on a valid input: raised" in m]
    return "error" if raised and len(raised) == len(result.failures) else "wrong"


def probe(backend: str, domain: Domain, device: str, dtypes: list[str], ops: tuple[str, ...],
          deadline: float | None) -> list[dict[str, Any]]:  # fmt: skip
    """Every edge of ``domain`` for ``ops`` in the first of ``dtypes``, run in a worker holding
    ``backend``; one row per edge: restriction, op, the inside and outside outcomes, messages."""
    from conformance.isolate import IsolatedBackend

    worker = IsolatedBackend(backend, device, deadline)
    rows = []
    try:
        for op in ops:
            for e in edges(op, dtypes[0], domain):
                if outside(e.inside, domain) is not None:  # pragma: no cover - a bug of edges()
                    raise AssertionError(f"probe: {e.restriction}: the inside case lies outside")
                results = [worker.run("diff", Example(c, {})) for c in (e.inside, e.outside)]
                rows.append({
                    "restriction": e.restriction, "op": op, "outside_case": e.what,
                    "inside": outcome(results[0]), "outside": outcome(results[1]),
                    "inside_messages": results[0].failures[:2],
                    "outside_messages": results[1].failures[:2],
                })  # fmt: skip
    finally:
        worker.close()
    return rows


__all__ = ["OPS", "OUTCOMES", "Edge", "base_case", "edges", "outcome", "probe"]
