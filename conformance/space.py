"""The input space the contract allows, one dimension at a time, and what a run reached of it.

Every size a backend can be handed has a realistic range, taken from what serving engines send
(:data:`DIMENSIONS`): chunked prefill up to 16384 rows, up to 512 segments, pools of up to 128
slots, ranks up to 256, ``K`` up to 65536 (a down projection's input), slices up to 65536 wide
and a plain expand up to 262144 (a vocabulary), GQA ratios up to 16.  The strategies
(:mod:`conformance.strategies`) draw each dimension over its *whole* range with
:func:`log_int`: log-scale, and half the time at a power of two or one off it, so every tile
boundary a kernel may have is reached, not only the ones we know.  An example draws one or two
dimensions large and the rest small, under the profile's budget of elements (:func:`cost`), so
the interpreter stays fast and a GPU profile reaches full model shapes.

Coverage is measured over the same space: :func:`reach` maps a case to, per dimension, its log2
bin and the power-of-two boundaries (``2^k - 1``, ``2^k``, ``2^k + 1``) it hit, plus the memory
layouts of its arguments; the report sums them per group (``space`` in the JSON report).

Letters: ``T`` rows, ``K`` input width, ``L`` slots, ``R`` pool rank, ``r`` an adapter's rank,
``c`` stack count, ``N`` slice width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Dimension:
    """One size of a call: its name, its realistic range ``[lo, hi]`` and what it measures."""

    name: str
    lo: int
    hi: int
    doc: str


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("T", 0, 16384, "rows of the batch (chunked prefill sends up to 16384)"),
        Dimension("seg_len", 0, 16384, "rows of the longest segment"),
        Dimension("segments", 0, 512, "segments of the batch (bs)"),
        Dimension("slots", 1, 128, "slots in the adapter pool (L)"),
        Dimension("slot", 0, 127, "the highest slot an adapter of the batch uses"),
        Dimension("rank", 0, 256, "the pool rank R and the ranks of the adapters"),
        Dimension("K", 0, 65536, "input width (a down projection's is the largest)"),
        Dimension("N", 0, 65536, "slice width of qkv and gate_up, output width of expand"),
        Dimension("expand_N", 0, 262144, "output width of a plain expand (a vocabulary)"),
        Dimension("gqa", 1, 16, "Nq / Nkv of qkv (grouped-query attention)"),
    )
}

# the dimensions an example of each op may draw large (segment rows, count and slots: all ops)
BIG_DIMS: dict[str, tuple[str, ...]] = {
    "shrink": ("T", "seg_len", "segments", "slots", "rank", "K"),
    "expand": ("T", "seg_len", "segments", "slots", "rank", "expand_N"),
    "qkv": ("T", "seg_len", "segments", "slots", "rank", "K", "N", "gqa"),
    "gate_up": ("T", "seg_len", "segments", "slots", "rank", "K", "N"),
}


def boundaries(lo: int, hi: int) -> list[int]:
    """Every ``2^k - 1``, ``2^k`` and ``2^k + 1`` in ``[lo, hi]``, and the two ends."""
    out = {lo, hi}
    for k in range(max(hi, 1).bit_length() + 1):
        out.update(b for b in (2**k - 1, 2**k, 2**k + 1) if lo <= b <= hi)
    return sorted(out)


def log_int(lo: int, hi: int) -> st.SearchStrategy[int]:
    """An int in ``[lo, hi]``: half the time a power-of-two boundary (or one off it, or an end),
    otherwise log-uniform (a binade ``[2^e, 2^(e+1))`` uniform, then uniform inside it)."""
    if hi <= lo:
        return st.just(lo)
    edge = st.sampled_from(boundaries(lo, hi))
    top = hi.bit_length()
    first = max(lo, 1).bit_length()

    def in_binade(e: int) -> st.SearchStrategy[int]:
        a, b = max(lo, 2 ** (e - 1)), min(hi, 2**e - 1)
        return st.integers(a, b) if a <= b else st.just(min(max(lo, 2 ** (e - 1)), hi))

    spread = st.integers(first, top).flatmap(in_binade)
    return st.one_of(edge, spread)


def cost(T: int, K: int, out: int, L: int, c: int, R: int, in_cols: int | None = None) -> int:
    """Elements an example allocates: the input and output rows (twice, for guards and copies),
    the shrink pool ``L * c*R * K`` and the expand pool ``L * out * R``.  ``in_cols``: the
    input's width when it is not ``K`` (the expand's ``R'``)."""
    width = K if in_cols is None else in_cols
    return 2 * T * (width + out + c * R) + L * c * R * K + L * out * R


def largest_fitting(budget: int, fn, lo: int, hi: int) -> int:
    """The largest ``v`` in ``[lo, hi]`` with ``fn(v) <= budget`` (``fn`` non-decreasing), or
    ``lo`` when even that does not fit."""
    if fn(hi) <= budget:
        return hi
    a, b = lo, hi  # fn(a) may or may not fit; fn(b) does not
    while b - a > 1:
        m = (a + b) // 2
        if fn(m) <= budget:
            a = m
        else:
            b = m
    return a


# --- coverage over the space ---------------------------------------------------------------


def log2_bin(v: int) -> str:
    """The label of ``v``'s log2 bin: ``0``, ``1``, ``2-3``, ``4-7``, ... ``2^k-(2^(k+1)-1)``."""
    if v <= 0:
        return "0"
    k = v.bit_length() - 1
    lo, hi = 2**k, 2 ** (k + 1) - 1
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bins(dim: str) -> list[str]:
    """Every log2 bin of a dimension's range, in order."""
    d = DIMENSIONS[dim]
    out = ["0"] if d.lo <= 0 else []
    for k in range(max(d.lo, 1).bit_length() - 1, d.hi.bit_length()):
        label = log2_bin(2**k)
        if 2**k <= d.hi and label not in out:
            out.append(label)
    return out


def hits(v: int) -> list[int]:
    """The power-of-two boundaries ``v`` sits on (``2^k - 1``, ``2^k`` or ``2^k + 1``)."""
    out = []
    for k in range(1, max(v, 1).bit_length() + 2):
        if v in (2**k - 1, 2**k, 2**k + 1):
            out.append(v)
    return sorted(set(out))


def dims_of(case: Any) -> dict[str, int]:
    """The dimension values of a case (those that apply to its op)."""
    lens = case.seg_lens
    used = [w for n, w in zip(lens, case.weight_indices, strict=True) if n > 0]
    out = {
        "T": case.T,
        "seg_len": max(lens, default=0),
        "segments": case.bs,
        "slots": case.L,
        "slot": max((w for w in used if case.lora_ranks[w] > 0), default=0),
        "rank": max([case.R, *(case.lora_ranks[w] for w in used)]),
    }
    if case.op != "expand":
        out["K"] = case.K
    if case.op == "expand":
        out["expand_N"] = case.N
    elif case.op != "shrink":
        out["N"] = case.N
    if case.op == "qkv" and case.n_kv > 0:
        out["gqa"] = max(1, round(case.N / case.n_kv))
    return out


def reach(case: Any) -> dict[str, list[str]]:
    """What ``case`` reaches: ``dim:bin`` and ``dim=boundary`` keys per dimension, and
    ``layout:arg=kind`` and ``data:mode`` keys (counted by the report)."""
    keys: dict[str, list[str]] = {}
    for dim, v in dims_of(case).items():
        keys.setdefault(dim, []).append(f"bin {log2_bin(v)}")
        keys[dim] += [f"={b}" for b in hits(v)]
    keys["layout"] = [f"{arg}={kind}" for arg, kind in sorted(case.layouts.items())]
    keys["data"] = [case.data]
    return keys


def count(cases: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Sum :func:`reach` over ``cases``: ``{dim: {key: examples}}``."""
    out: dict[str, dict[str, int]] = {}
    for case in cases:
        for dim, keys in reach(case).items():
            row = out.setdefault(dim, {})
            for k in keys:
                row[k] = row.get(k, 0) + 1
    return out


def merge(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    """Add the counts ``more`` into ``into``."""
    for dim, row in more.items():
        target = into.setdefault(dim, {})
        for k, n in row.items():
            target[k] = target.get(k, 0) + n


def summary(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per dimension: the bins of its range reached and missed, the boundaries hit, and the
    largest value reached; per argument, the layouts reached."""
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        row = counts.get(dim)
        if row is None:
            continue
        reached = [b for b in bins(dim) if row.get(f"bin {b}")]
        hit = sorted(int(k[1:]) for k in row if k.startswith("="))
        top = max((_bin_top(k[4:]) for k in row if k.startswith("bin ")), default=0)
        out[dim] = {
            "bins": f"{len(reached)}/{len(bins(dim))}",
            "missed_bins": [b for b in bins(dim) if b not in reached],
            "boundaries": hit,
            "largest_bin": log2_bin(top),
        }
    layouts: dict[str, list[str]] = {}
    for key in counts.get("layout", {}):
        arg, kind = key.split("=", 1)
        layouts.setdefault(arg, []).append(kind)
    out["layouts"] = {arg: sorted(kinds) for arg, kinds in sorted(layouts.items())}
    out["data"] = sorted(counts.get("data", {}))
    if "lifecycle" in counts:
        out["lifecycle_steps"] = sorted(counts["lifecycle"])
    if "embedding" in counts:
        out["embedding_ids"] = sorted(counts["embedding"])
    return out


def _bin_top(label: str) -> int:
    return int(label.split("-")[-1])


def fraction_of_range(v: int, dim: str) -> float:
    """``log2(v + 1) / log2(hi + 1)``: how far up its range a value sits, log-scale."""
    d = DIMENSIONS[dim]
    return math.log2(v + 1) / math.log2(d.hi + 1)


def by_op(groups: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """The space counts of report groups summed per op (``mixed`` for the lifecycle)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for g in groups:
        if g.get("space"):
            merge(out.setdefault(g["op"], {}), g["space"])
    return out


def cell(entry: dict[str, Any] | None) -> str:
    """One table cell: bins reached of the range, boundaries hit, largest bin."""
    if entry is None:
        return "-"
    return f"{entry['bins']} bins, {len(entry['boundaries'])} edges, top {entry['largest_bin']}"
