"""Hypothesis strategies: every randomly drawn conformance case comes from here.

Hypothesis draws the *structure* (layout, adapters, shapes, data mode, memory layout, flags);
tensor values come from a drawn seed (:mod:`conformance.inputs`), so examples are cheap and
shrink well.  Sizes are capped by the profile's :class:`~conformance.profiles.Limits`, and every
size is drawn *around the boundaries real kernels have* as often as uniformly: row counts near
16, 32, 64, 128 (and 256), ranks near 16, 32 and 64, dims with ragged tails.  Hand-built cases
that reach the large corners whatever the caps live in :mod:`conformance.corners`.
"""

from __future__ import annotations

from hypothesis import strategies as st

from conformance.case import Case
from conformance.ops import STACKS
from conformance.profiles import Limits

LAYOUTS = ("identical", "distinct", "uniform", "skewed", "random", "one_long", "decode")
# scalings are alpha / r: drawn log-uniformly over [2^-20, 2^6] with either sign, plus 0 and a
# few exact values.  Smaller ones push results into the float32 subnormal range, where the
# Triton interpreter's float32 -> bfloat16 conversion is wrong (a dev-profile run drew 1.7e-44
# and got -2^-128 back for -7.6e-45).
MIN_SCALING_EXP, MAX_SCALING_EXP = -20, 6
SPECIAL_SCALINGS = (0.0, 1.0, 0.5, -1.0, -2.75, 40.0, -24.0, 0.0625)
RANK_BOUNDARIES = (16, 32, 64)
DATA_WEIGHTS = (("gaussian", 4), ("same_sign", 2), ("dynamic", 2), ("overflow", 1))


def near(boundaries: tuple[int, ...], lo: int, hi: int) -> st.SearchStrategy[int]:
    """An int in ``[lo, hi]``: half the time just below, at or above a boundary, else uniform."""
    close = sorted({b + d for b in boundaries for d in (-1, 0, 1) if lo <= b + d <= hi})
    uniform = st.integers(lo, hi)
    return st.one_of(st.sampled_from(close), uniform) if close else uniform


def _f32(v: float) -> float:
    import struct

    return struct.unpack("f", struct.pack("f", v))[0]


def scalings() -> st.SearchStrategy[float]:
    """One slot's scaling: 0, a special value, or ``±2^e`` with ``e`` uniform in [-20, 6]."""
    log_uniform = st.tuples(
        st.booleans(), st.floats(MIN_SCALING_EXP, MAX_SCALING_EXP, allow_nan=False)
    ).map(lambda se: _f32((-1.0 if se[0] else 1.0) * 2.0 ** se[1]))
    return st.one_of(st.sampled_from(SPECIAL_SCALINGS), log_uniform)


def _zipf_slot(draw: st.DrawFn, L: int) -> int:
    # P(w) proportional to 1/(w+1): a few hot adapters, a long tail
    weights = [1.0 / (w + 1) for w in range(L)]
    u = draw(st.floats(0, sum(weights), exclude_max=True), label="zipf_u")
    for w, p in enumerate(weights):
        u -= p
        if u < 0:
            return w
    return L - 1


@st.composite
def layouts(
    draw: st.DrawFn, L: int, limits: Limits, row_boundaries: tuple[int, ...]
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """A segment layout from the serving-workload taxonomy: (label, seg_lens, weight_indices)."""
    kind = draw(st.sampled_from(LAYOUTS), label="layout")
    max_seg = limits.segments
    if kind == "one_long":
        lens = [draw(near(row_boundaries, 1, limits.tokens), label="long_len")]
    elif kind in ("distinct", "decode"):
        bs = draw(near((16, 32), 1, min(max_seg, limits.tokens)), label="decode_bs")
        lens = [1] * bs
    else:
        bs = draw(near((16, 32), 1, max_seg), label="bs")
        low = 0 if kind == "random" else 1
        budget = limits.tokens
        lens = []
        for _ in range(bs):
            cap = max(low, min(budget, limits.tokens // 2))
            n = draw(near(row_boundaries, low, cap), label="seg_len")
            if n > budget:
                break
            budget -= n
            lens.append(n)
        lens = lens or [1]
    bs = len(lens)
    if kind == "identical":
        w = draw(st.integers(0, L - 1), label="the_slot")
        slots = [w] * bs
    elif kind == "distinct":
        start = draw(st.integers(0, L - 1), label="first_slot")
        slots = [(start + i) % L for i in range(bs)]
    elif kind == "skewed":
        slots = [_zipf_slot(draw, L) for _ in range(bs)]
    else:
        slots = draw(st.lists(st.integers(0, L - 1), min_size=bs, max_size=bs), label="slots")
    return kind, tuple(lens), tuple(slots)


@st.composite
def ranks_and_pool(draw: st.DrawFn, limits: Limits) -> tuple[int, tuple[int, ...]]:
    """The pool rank ``R`` and ``L`` slot ranks in ``[0, R]``: 1, ``R`` and the ranks around 16,
    32 and 64 come up often, as do pools with more than 8 and 16 slots."""
    R = draw(
        st.one_of(st.sampled_from([1, limits.R]), near(RANK_BOUNDARIES, 1, limits.R)), label="R"
    )
    L = draw(near((8, 16), 1, limits.slots), label="L")
    rank = st.one_of(st.sampled_from([0, 1, R]), near(RANK_BOUNDARIES, 0, R))
    ranks = draw(st.lists(rank, min_size=L, max_size=L), label="ranks")
    return R, tuple(ranks)


def _dim(limit: int) -> st.SearchStrategy[int]:
    # odd and tiny dims first: every tail must be masked; ragged tails past 64 and 128
    return st.one_of(st.sampled_from([1, 3, 17, limit]), near((64, 128, 256), 1, limit)).map(
        lambda v: min(v, limit)
    )


@st.composite
def cases(
    draw: st.DrawFn,
    op: str,
    dtype: str,
    limits: Limits,
    row_boundaries: tuple[int, ...] = (16, 32, 64, 128),
    permutation: bool = True,
    split_layouts: bool = False,
) -> Case:
    """A full conformance case of ``op`` in ``dtype``.

    ``permutation`` and ``split_layouts``: whether the backend declares them, so they may be drawn.
    """
    R, ranks = draw(ranks_and_pool(limits), label="pool")
    layout, lens, slots = draw(layouts(len(ranks), limits, row_boundaries), label="layout")
    data = draw(
        st.sampled_from([name for name, weight in DATA_WEIGHTS for _ in range(weight)]),
        label="data",
    )
    scaling = scalings()
    if data == "overflow":
        # products past the range: |s| >= 1 keeps "the float32 accumulator overflowed" and
        # "the exact result lies past the range" the same thing
        scaling = st.sampled_from([1.0, -1.0, 2.0, 40.0, -24.0, 64.0])
    scal = draw(st.lists(scaling, min_size=len(ranks), max_size=len(ranks)), label="scalings")
    K = draw(_dim(limits.K), label="K")
    N = draw(_dim(limits.N), label="N")
    n_kv = draw(st.integers(1, N), label="n_kv") if op == "qkv" else 0
    stack = draw(st.sampled_from(STACKS[op]), label="stack")
    return Case(
        op=op,
        dtype=dtype,
        seg_lens=lens,
        weight_indices=slots,
        lora_ranks=ranks,
        scalings=tuple(scal),
        R=R,
        K=K if op != "expand" else 0,
        N=N if op != "shrink" else 0,
        n_kv=n_kv,
        stack=stack,
        permute=draw(st.booleans(), label="permute") if permutation else False,
        has_base=draw(st.booleans(), label="has_base") if op != "shrink" else False,
        poison=draw(st.sampled_from(["nan", "huge"]), label="poison"),
        seed=draw(st.integers(0, 2**31 - 1), label="seed"),
        layout=layout,
        split_b=draw(st.booleans(), label="split_b")
        if split_layouts and op in ("qkv", "gate_up")
        else False,
        data=data,
        strides=draw(
            st.sampled_from(["contiguous", "contiguous", "col_slice", "row_stride"]),
            label="strides",
        ),
        extra_cols=draw(st.sampled_from([0, 0, 1, 5]), label="extra_cols") if op == "expand" else 0,
        poison_unused=draw(st.booleans(), label="poison_unused"),
    )
