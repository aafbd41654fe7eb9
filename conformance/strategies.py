"""Hypothesis strategies: every randomly drawn conformance case comes from here.

Hypothesis draws the *structure* of a call (shapes, segment layout, adapters, data mode, memory
layout of every argument, flags); tensor values come from a drawn seed
(:mod:`conformance.inputs`), so examples are cheap and shrink well.

Sizes cover the whole space the contract allows (:mod:`conformance.space`): an example picks up
to ``profile.big`` of its op's dimensions to draw *large*, over their realistic range (rows and
segment lengths to 16384, 512 segments, 128 slots, rank 256, ``K`` 65536, slices 65536, expand
``N`` 262144, GQA 16), log-scale and biased to every power of two and one off it; the others
stay in the profile's small box (``profile.limits``).  Every draw is capped so the example's
elements (:func:`conformance.space.cost`) stay within ``profile.budget``.  Profiles with a
large budget also draw real models' layer shapes (:data:`MODEL_SHAPES`).
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from conformance.case import LAYOUT_KINDS, Case, layout_args
from conformance.names import MAX_SLICES, STACKS
from conformance.profiles import Limits, Profile
from conformance.space import BIG_DIMS, DIMENSIONS, cost, largest_fitting, log_int

LAYOUTS = ("identical", "distinct", "uniform", "skewed", "random", "one_long", "decode")
# scalings are alpha / r: drawn log-uniformly over [2^-20, 2^6] with either sign, plus 0 and a
# few exact values (the subnormal data mode scales them further down: conformance.inputs)
MIN_SCALING_EXP, MAX_SCALING_EXP = -20, 6
SPECIAL_SCALINGS = (0.0, 1.0, 0.5, -1.0, -2.75, 40.0, -24.0, 0.0625)
RANK_BOUNDARIES = (16, 32, 64, 128)
DATA_WEIGHTS = (
    ("gaussian", 4),
    ("same_sign", 2),
    ("dynamic", 2),
    ("overflow", 1),
    ("subnormal", 1),
)

# (K, Nq, Nkv, gate_up N) of real models' layers, at the tensor-parallel degree named
MODEL_SHAPES = {
    "Llama-3-8B": (4096, 4096, 1024, 14336),
    "Llama-3-8B down": (14336, 4096, 1024, 4096),
    "Llama-3-70B TP8": (8192, 1024, 128, 3584),
    "Llama-3-70B TP2": (8192, 4096, 512, 14336),
    "Llama-3.2-1B": (2048, 2048, 512, 8192),
    "Qwen2-7B": (3584, 3584, 512, 18944),
    "Qwen2.5-32B TP4": (5120, 1280, 256, 6912),
    "Mistral-Nemo-12B": (5120, 4096, 1024, 14336),
    "Gemma-2-9B": (3584, 4096, 2048, 14336),
    "Phi-3-mini": (3072, 3072, 3072, 8192),
}


def near(boundaries: tuple[int, ...], lo: int, hi: int) -> st.SearchStrategy[int]:
    """An int in ``[lo, hi]``: half the time just below, at or above a boundary, else uniform."""
    close = sorted({b + d for b in boundaries for d in (-1, 0, 1) if lo <= b + d <= hi})
    uniform = st.integers(lo, hi)
    return st.one_of(st.sampled_from(close), uniform) if close else uniform


def _f32(v: float) -> float:
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


class _Shape:
    """The sizes drawn so far, and what is left of the budget for one more."""

    def __init__(self, op: str, c: int, budget: int, sliced: bool = False) -> None:
        self.op, self.c, self.budget, self.sliced = op, c, budget, sliced
        self.v = {"T": 1, "K": 0 if op == "expand" else 1, "N": 0 if op == "shrink" else 1,
                  "L": 1, "R": 1, "kv": 1, "extra": 0}  # fmt: skip

    def out(self, v: dict[str, int]) -> int:
        if self.op == "shrink":
            return self.c * v["R"]
        if self.sliced:  # n slices, each at most N wide
            return self.c * v["N"]
        if self.op == "qkv":
            return v["N"] + 2 * v["kv"]
        return v["N"] * (2 if self.op == "gate_up" else 1)

    def cost(self, **change: int) -> int:
        v = {**self.v, **change}
        in_cols = v["R"] + v["extra"] if self.op == "expand" else None
        c = 0 if self.op == "expand" else self.c
        return cost(v["T"], v["K"], self.out(v), v["L"], c, v["R"], in_cols)

    def cap(self, name: str, lo: int, hi: int) -> int:
        """The largest value of ``name`` in ``[lo, hi]`` that keeps the example in budget."""
        return largest_fitting(self.budget, lambda x: self.cost(**{name: x}), lo, hi)


def _sized(draw: st.DrawFn, shape: _Shape, name: str, dim: str, big: bool, small: int,
           lo: int = 1, label: str = "") -> int:  # fmt: skip
    """Draw ``name``: over the dimension's whole range when ``big``, else in ``[lo, small]``;
    always within the budget."""
    hi = DIMENSIONS[dim].hi if big else small
    cap = shape.cap(name, lo, max(lo, hi))
    if big:
        value = draw(log_int(lo, cap), label=label or name)
    else:
        odd = [v for v in (1, 3, 17) if lo <= v <= cap]
        value = draw(st.one_of(st.sampled_from([*odd, cap]), near((16, 64, 128, 256), lo, cap)),
                     label=label or name)  # fmt: skip
    shape.v[name] = value
    return value


def _segment_lens(
    draw: st.DrawFn, kind: str, T_cap: int, big: set[str], limits: Limits, row_bounds
) -> list[int]:
    """Segment lengths of the layout family ``kind``, summing to at most ``T_cap``."""
    seg_hi = DIMENSIONS["segments"].hi if "segments" in big else limits.segments
    if kind == "one_long":
        if "seg_len" in big or "T" in big:
            long_len = draw(log_int(1, max(1, T_cap)), label="long_len")
        else:
            long_len = draw(near(row_bounds, 1, max(1, min(T_cap, limits.tokens))),
                            label="long_len")  # fmt: skip
        others = draw(st.integers(0, min(3, seg_hi - 1)), label="others")
        rest = [draw(st.integers(0, 4), label="short") for _ in range(others)]
        lens = [long_len, *rest]
        at = draw(st.integers(0, len(rest)), label="long_at")
        lens.insert(at, lens.pop(0))
        return _trim(lens, T_cap)
    if kind in ("distinct", "decode"):
        hi = min(seg_hi, T_cap)
        bs = draw(log_int(1, hi) if "segments" in big else near((16, 32), 1, hi), label="decode_bs")
        return [1] * bs
    if "segments" in big:
        bs = draw(log_int(1, max(1, min(seg_hi, T_cap if kind != "random" else seg_hi))),
                  label="bs")  # fmt: skip
    else:
        bs = draw(near((16, 32), 1, max(1, seg_hi)), label="bs")
    rows = T_cap if "T" in big else min(T_cap, limits.tokens)
    total = draw(log_int(bs if kind != "random" else 0, max(rows, bs)) if "T" in big
                 else st.integers(min(bs, rows), max(min(bs, rows), rows)), label="T")  # fmt: skip
    if kind == "uniform":
        q, r = divmod(total, bs)
        return _trim([q + (i < r) for i in range(bs)], T_cap)
    lens, left = [], total
    for i in range(bs):
        if left <= 0:
            lens.append(0)
            continue
        share = left if i == bs - 1 else max(0, min(left, 2 * left // max(1, bs - i)))
        low = 0 if kind == "random" else min(1, share)
        n = draw(st.integers(low, max(low, share)), label="seg_len")
        lens.append(n)
        left -= n
    return _trim(lens, T_cap)


def _trim(lens: list[int], T_cap: int) -> list[int]:
    out, left = [], T_cap
    for n in lens:
        out.append(min(n, max(left, 0)))
        left -= out[-1]
    return out


@st.composite
def layouts(
    draw: st.DrawFn,
    L: int,
    limits: Limits,
    row_boundaries: tuple[int, ...],
    T_cap: int | None = None,
    big: frozenset[str] = frozenset(),
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """A segment layout from the serving-workload taxonomy: (label, seg_lens, weight_indices).

    ``T_cap``: the most rows the budget allows (default: the small box's); ``big``: the
    dimensions drawn over their whole range (``T``, ``seg_len``, ``segments``).  Empty
    segments may come anywhere, the first and the last included.
    """
    T_cap = limits.tokens if T_cap is None else T_cap
    kind = draw(st.sampled_from(LAYOUTS), label="layout")
    lens = _segment_lens(draw, kind, max(T_cap, 0), set(big), limits, row_boundaries) or [1]
    pad = draw(st.sampled_from(["none", "none", "first", "last", "both"]), label="empty_ends")
    if pad in ("first", "both"):
        lens.insert(0, 0)
    if pad in ("last", "both"):
        lens.append(0)
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
        if draw(st.booleans(), label="top_slot") and bs:
            slots[draw(st.integers(0, bs - 1), label="top_at")] = L - 1
    return kind, tuple(lens), tuple(slots)


def _ranks(draw: st.DrawFn, R: int, L: int, big: bool) -> tuple[int, ...]:
    rank = st.one_of(st.sampled_from([0, 1, R]), near(RANK_BOUNDARIES, 0, R))
    if big:
        rank = st.one_of(rank, log_int(0, R))
    return tuple(draw(st.lists(rank, min_size=L, max_size=L), label="ranks"))


def arg_layouts(op: str, has_base: bool, split_b: bool) -> st.SearchStrategy[dict[str, str]]:
    """A memory layout for each tensor argument: contiguous half the time, else any other."""

    def one(arg: str) -> st.SearchStrategy[str]:
        kinds = LAYOUT_KINDS[arg]
        return st.one_of(st.just(kinds[0]), st.sampled_from(kinds))

    args = layout_args(op, has_base, split_b)
    return st.fixed_dictionaries({a: one(a) for a in args})


@st.composite
def cases(
    draw: st.DrawFn,
    op: str,
    dtype: str,
    profile: Profile,
    permutation: bool = True,
    split_layouts: bool = False,
    n_slices: bool = False,
) -> Case:
    """A full conformance case of ``op`` in ``dtype`` under ``profile``'s sizes and budget.

    ``permutation``, ``split_layouts`` and ``n_slices``: whether the backend declares them, so
    they may be drawn (``n_slices``: half of the qkv cases have 1 to ``MAX_SLICES`` uneven
    slices, some empty, some without LoRA on some slots).
    """
    limits = profile.limits
    sliced = op == "qkv" and n_slices and draw(st.booleans(), label="n_slices")
    if sliced:
        stack = draw(st.integers(1, MAX_SLICES), label="slices")
    else:
        stack = draw(st.sampled_from(STACKS[op]), label="stack")
    shape = _Shape(op, stack, profile.budget, sliced)
    model = None
    if (profile.model_shapes and op != "shrink" and not sliced
            and draw(st.booleans(), label="model")):  # fmt: skip
        model = draw(st.sampled_from(sorted(MODEL_SHAPES)), label="model_shape")
    big = set(draw(st.lists(st.sampled_from(BIG_DIMS[op]), max_size=profile.big, unique=True),
                   label="big"))  # fmt: skip
    if model is not None:
        K, nq, nkv, n_gate = MODEL_SHAPES[model]
        widths = {"K": K, "N": n_gate if op == "gate_up" else nq, "kv": nkv}
        if op == "expand":
            widths = {"K": 0, "N": nq}
        for name, v in widths.items():
            shape.v[name] = v
        big -= {"K", "N", "expand_N", "gqa"}
    else:
        if op != "expand":
            _sized(draw, shape, "K", "K", "K" in big, limits.K, lo=0 if "K" in big else 1)
        if op != "shrink":
            ndim = "expand_N" if op == "expand" else "N"
            _sized(draw, shape, "N", ndim, ndim in big, limits.N, lo=0 if ndim in big else 1)
        if sliced:
            shape.v["kv"] = 0
        elif op == "qkv":
            N = shape.v["N"]
            if "gqa" in big and N:
                ratio = draw(log_int(1, min(DIMENSIONS["gqa"].hi, N)), label="gqa")
                shape.v["kv"] = max(1, N // ratio)
            else:
                shape.v["kv"] = draw(st.integers(0, max(N, 0)), label="n_kv")
    R = _sized(draw, shape, "R", "rank", "rank" in big, limits.R)
    L = _sized(draw, shape, "L", "slots", "slots" in big, limits.slots)
    if op == "expand":
        shape.v["extra"] = draw(st.sampled_from([0, 0, 1, 5]), label="extra_cols")
    ranks = _ranks(draw, R, L, "rank" in big)
    widths, no_lora = (_slices(draw, stack, shape.v["N"], L)) if sliced else ((), ())
    T_cap = shape.cap("T", 0, DIMENSIONS["T"].hi)
    kind, lens, slots = draw(
        layouts(L, limits, profile.row_boundaries, T_cap, frozenset(big)), label="layout"
    )
    data = draw(
        st.sampled_from([name for name, weight in DATA_WEIGHTS for _ in range(weight)]),
        label="data",
    )
    scaling = scalings()
    if data == "overflow":
        # products past the range: |s| >= 1 keeps "the float32 accumulator overflowed" and
        # "the exact result lies past the range" the same thing
        scaling = st.sampled_from([1.0, -1.0, 2.0, 40.0, -24.0, 64.0])
    scal = draw(st.lists(scaling, min_size=L, max_size=L), label="scalings")
    has_base = draw(st.booleans(), label="has_base") if op != "shrink" else False
    split_b = (
        draw(st.booleans(), label="split_b")
        if split_layouts and op in ("qkv", "gate_up") and not sliced
        else False
    )
    return Case(
        op=op,
        dtype=dtype,
        seg_lens=lens,
        weight_indices=slots,
        lora_ranks=ranks,
        scalings=tuple(scal),
        R=R,
        K=shape.v["K"] if op != "expand" else 0,
        N=max(widths) if sliced else shape.v["N"] if op != "shrink" else 0,
        n_kv=shape.v["kv"] if op == "qkv" and not sliced else 0,
        stack=stack,
        permute=draw(st.booleans(), label="permute") if permutation else False,
        has_base=has_base,
        poison=draw(st.sampled_from(["nan", "huge"]), label="poison"),
        seed=draw(st.integers(0, 2**31 - 1), label="seed"),
        layout=kind if model is None else f"{kind}, {model}",
        split_b=split_b,
        data=data,
        layouts=draw(arg_layouts(op, has_base, split_b), label="layouts"),
        extra_cols=shape.v["extra"] if op == "expand" else 0,
        poison_unused=draw(st.booleans(), label="poison_unused"),
        slice_widths=widths,
        no_lora=no_lora,
    )


def _slices(draw: st.DrawFn, n: int, N: int, L: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``n`` slice widths, each empty, ``N`` or anything between, one of them ``N`` (three
    slices are qkv's: the last two equal); and per slot a mask of slices without LoRA."""
    width = st.one_of(st.sampled_from([0, N]), st.integers(0, N))
    widths = draw(st.lists(width, min_size=n, max_size=n), label="slice_widths")
    widths[draw(st.integers(0, n - 1), label="widest")] = N
    if n == 3:  # qkv's layout: k and v equally wide
        widths[2] = widths[1]
    mask = st.one_of(st.just(0), st.integers(0, 2**n - 1))
    no_lora = draw(st.lists(mask, min_size=L, max_size=L), label="no_lora")
    return tuple(widths), tuple(no_lora) if any(no_lora) else ()
