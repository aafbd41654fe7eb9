"""Hypothesis strategies: every conformance case is drawn here.

Hypothesis draws the *structure* (layout, adapters, shapes, flags); tensor values come from a
drawn seed (see :mod:`conformance.case`), so examples are cheap and shrink well.  Sizes are capped
by one :class:`Limits` per profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from conformance.case import Case

LAYOUTS = ("identical", "distinct", "uniform", "skewed", "random", "one_long", "decode")
SPECIAL_SCALINGS = (0.0, 1.0, 0.5, -1.0, -2.75, 40.0, -24.0, 0.0625)
# scalings are alpha / r: zero, or at least 2^-20 in size.  Smaller ones push results into the
# float32 subnormal range, where the Triton interpreter's float32 -> bfloat16 conversion is wrong
# (a dev-profile run drew 1.7e-44 and got -2^-128 back for -7.6e-45).
MIN_SCALING = 2.0**-20


@dataclass(frozen=True)
class Limits:
    """Size caps of generated cases."""

    tokens: int
    segments: int
    K: int
    N: int
    R: int
    slots: int


LIMITS = {
    "ci": Limits(tokens=40, segments=10, K=72, N=72, R=12, slots=5),
    "dev": Limits(tokens=160, segments=24, K=200, N=160, R=32, slots=8),
    "thorough": Limits(tokens=768, segments=64, K=1536, N=1536, R=128, slots=16),
}


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
    draw: st.DrawFn, L: int, limits: Limits
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """A segment layout from the serving-workload taxonomy: (label, seg_lens, weight_indices)."""
    kind = draw(st.sampled_from(LAYOUTS), label="layout")
    max_seg = limits.segments
    if kind == "one_long":
        lens = [draw(st.integers(1, limits.tokens), label="long_len")]
    elif kind in ("distinct", "decode"):
        lens = [1] * draw(st.integers(1, min(max_seg, limits.tokens)), label="decode_bs")
    else:
        bs = draw(st.integers(1, max_seg), label="bs")
        low = 0 if kind == "random" else 1
        budget = limits.tokens
        lens = []
        for _ in range(bs):
            n = draw(st.integers(low, max(low, min(budget, limits.tokens // 2))), label="seg_len")
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
    """The pool rank ``R`` (1 and non powers of two included) and ``L`` slot ranks in ``[0, R]``."""
    R = draw(st.one_of(st.sampled_from([1, limits.R]), st.integers(1, limits.R)), label="R")
    L = draw(st.integers(1, limits.slots), label="L")
    rank = st.one_of(st.sampled_from([0, 1, R]), st.integers(0, R))
    ranks = draw(st.lists(rank, min_size=L, max_size=L), label="ranks")
    return R, tuple(ranks)


def _dim(limit: int) -> st.SearchStrategy[int]:
    # odd and tiny dims first: every tail must be masked
    return st.one_of(st.sampled_from([1, 3, 17, limit]), st.integers(1, limit)).map(
        lambda v: min(v, limit)
    )


@st.composite
def cases(
    draw: st.DrawFn,
    op: str,
    dtype: str,
    limits: Limits,
    permutation: bool = True,
    split_layouts: bool = False,
) -> Case:
    """A full conformance case of ``op`` in ``dtype``.

    ``permutation`` and ``split_layouts``: whether the backend declares them, so they may be drawn.
    """
    R, ranks = draw(ranks_and_pool(limits), label="pool")
    layout, lens, slots = draw(layouts(len(ranks), limits), label="layout")
    scalings = tuple(
        draw(
            st.lists(
                st.one_of(
                    st.sampled_from(SPECIAL_SCALINGS),
                    st.floats(-4, 4, width=32).filter(lambda v: v == 0 or abs(v) >= MIN_SCALING),
                ),
                min_size=len(ranks),
                max_size=len(ranks),
            ),
            label="scalings",
        )
    )
    K = draw(_dim(limits.K), label="K")
    N = draw(_dim(limits.N), label="N")
    n_kv = draw(st.integers(1, N), label="n_kv") if op == "qkv" else 0
    stack = (
        draw(st.sampled_from([1, 2, 3]), label="stack")
        if op == "shrink"
        else {"expand": 1, "qkv": 3, "gate_up": 2}[op]
    )
    return Case(
        op=op,
        dtype=dtype,
        seg_lens=lens,
        weight_indices=slots,
        lora_ranks=ranks,
        scalings=scalings,
        R=R,
        K=K,
        N=N,
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
    )
