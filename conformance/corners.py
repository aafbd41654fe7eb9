"""Corner classes: the narrow places where kernel bugs live, and the cases that reach them.

Real kernel bugs sit at a tile boundary, in a K or rank tail, at the ninth adapter slot, past
the 16th segment, in the precision of one partial sum.  This module

* names each such place as a *corner class* with a predicate on a :class:`Case`
  (:data:`CLASSES`, :func:`classify`); every example's classes are counted, reported, and
  emitted as Hypothesis events;
* builds, for every operation, a fixed list of hand-made cases that together reach every class
  (:func:`corner_cases`), each with one large dimension and the rest small, so the Triton
  interpreter runs them in seconds; the diff check runs them as explicit examples in every
  profile, spread over the dtypes the backend declares (precision cases in every dtype);
* says which classes each profile promises (:func:`promised`); the meta-tests fail when a
  profile's examples miss one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from conformance.case import Case
from conformance.names import MAX_SLICES

# row-count boundaries of the tiles real kernels use
CI_ROWS = (16, 32, 64, 128)
WIDE_ROWS = (16, 32, 64, 128, 256)
RANKS = (16, 32, 64)


@dataclass(frozen=True)
class CornerClass:
    """A narrow region of the input space.

    Attributes:
        name: short label (used as the Hypothesis event and the report key).
        holds: the predicate on a case.
        ops: the operations it applies to.
        needs: a capability it needs (``permutation``, ``n_slices``), or "".
        wide_only: promised by ``dev`` and ``thorough`` only.
    """

    name: str
    holds: Callable[[Case], bool]
    ops: tuple[str, ...] = ("shrink", "expand", "qkv", "gate_up")
    needs: str = ""
    wide_only: bool = False


WITH_BASE = ("expand", "qkv", "gate_up")
WITH_K = ("shrink", "qkv", "gate_up")


def _active_ranks(case: Case) -> set[int]:
    return {case.lora_ranks[w] for w in case.used_slots}


def _slot_at_least(case: Case, v: int) -> bool:
    return any(w >= v and case.lora_ranks[w] > 0 for w in case.used_slots)


def _ragged(n: int, above: int) -> bool:
    return n > above and n % 16 != 0


def _slice_widths(case: Case) -> list[int]:
    return [b - a for a, b in case.slices]


def _small_scaling(case: Case) -> bool:
    return any(
        0 < abs(case.scalings[w]) < 2.0**-10 and case.lora_ranks[w] > 0 for w in case.used_slots
    )


def _build_classes() -> list[CornerClass]:
    out: list[CornerClass] = []
    for b in WIDE_ROWS:
        wide = b not in CI_ROWS
        for v in (b - 1, b, b + 1):
            out.append(CornerClass(f"seg_len={v}", lambda c, v=v: v in c.seg_lens, wide_only=wide))
            out.append(CornerClass(f"T={v}", lambda c, v=v: v == c.T, wide_only=wide))
    out += [
        CornerClass("segments>16", lambda c: sum(n > 0 for n in c.seg_lens) > 16),
        CornerClass("segments>32", lambda c: sum(n > 0 for n in c.seg_lens) > 32),
        CornerClass("slot>=8", lambda c: _slot_at_least(c, 8)),
        CornerClass("slot>=16", lambda c: _slot_at_least(c, 16)),
        CornerClass(
            "sparse pool",
            lambda c: c.L >= 9 and 2 * len(c.used_slots) < c.L and c.poison_unused,
        ),
    ]
    for b in RANKS:
        for v in (b - 1, b, b + 1):
            out.append(CornerClass(f"rank={v}", lambda c, v=v: v in _active_ranks(c)))
    out += [
        CornerClass(
            "rank>64 not a multiple of 8", lambda c: any(r > 64 and r % 8 for r in _active_ranks(c))
        ),
        CornerClass("rank=128", lambda c: 128 in _active_ranks(c)),
        CornerClass("K>128 ragged", lambda c: _ragged(c.K, 128), ops=WITH_K),
        CornerClass("K>256 ragged", lambda c: _ragged(c.K, 256), ops=WITH_K),
        CornerClass("K=0", lambda c: c.K == 0 and c.T > 0, ops=WITH_K),
        CornerClass(
            "N>128 ragged", lambda c: any(_ragged(w, 128) for w in _slice_widths(c)), ops=WITH_BASE
        ),
        CornerClass(
            "N>256 ragged", lambda c: any(_ragged(w, 256) for w in _slice_widths(c)), ops=WITH_BASE
        ),
        CornerClass("N=0", lambda c: c.out_dim == 0 and c.T > 0, ops=WITH_BASE),
        CornerClass("bs=0 (T=0)", lambda c: c.bs == 0),
        CornerClass("all segments empty", lambda c: c.bs > 0 and c.T == 0),
        CornerClass(
            "empty segment between others",
            lambda c: any(n == 0 for n in c.seg_lens[1:-1]) and c.T > 0,
        ),
        CornerClass("expand input wider than R", lambda c: c.extra_cols > 0, ops=("expand",)),
        CornerClass("x: column slice", lambda c: c.arg_layout("x") == "col_slice" and c.T > 0),
        CornerClass("x: strided rows", lambda c: c.arg_layout("x") == "row_stride" and c.T > 1),
        CornerClass(
            "base_output: strided",
            lambda c: c.arg_layout("base") not in ("contiguous", "offset") and c.T > 0,
            ops=WITH_BASE,
        ),
        CornerClass("no base_output", lambda c: not c.has_base and c.T > 0, ops=WITH_BASE),
        CornerClass("data: same-sign", lambda c: c.data == "same_sign" and c.T > 0),
        CornerClass("data: dynamic range", lambda c: c.data == "dynamic" and c.T > 0),
        CornerClass("data: overflow", lambda c: c.data == "overflow" and c.T > 0),
        CornerClass("|s|<2^-10", _small_scaling),
        CornerClass(
            "s=0 on an adapter",
            lambda c: any(c.scalings[w] == 0 and c.lora_ranks[w] > 0 for w in c.used_slots),
        ),
        CornerClass(
            "s<0", lambda c: any(c.scalings[w] < 0 and c.lora_ranks[w] > 0 for w in c.used_slots)
        ),
        CornerClass(
            "rank 0 beside adapters",
            lambda c: len(_active_ranks(c) - {0}) > 0 and 0 in _active_ranks(c),
        ),
        CornerClass("unused slots poisoned", lambda c: c.poison_unused and len(c.used_slots) < c.L),
        CornerClass("permutation", lambda c: c.permute and c.T > 1, needs="permutation"),
        CornerClass(
            "n_slices != 3",
            lambda c: len(c.slice_widths) not in (0, 3) and c.T > 0,
            ops=("qkv",),
            needs="n_slices",
        ),
        CornerClass(
            "an empty slice",
            lambda c: 0 in c.slice_widths and c.T > 0,
            ops=("qkv",),
            needs="n_slices",
        ),
        CornerClass("a slice without LoRA", _slice_without_lora, ops=("qkv",), needs="n_slices"),
    ]
    return out


def _slice_without_lora(case: Case) -> bool:
    """An adapter in use with no LoRA on a non-empty slice, beside one that has it."""
    widths = case.slice_widths
    for w in case.used_slots:
        m = case.no_lora[w] if case.no_lora else 0
        if case.lora_ranks[w] and any(m >> j & 1 and widths[j] for j in range(len(widths))):
            return any(not m >> j & 1 and widths[j] for j in range(len(widths)))
    return False


CLASSES: list[CornerClass] = _build_classes()


def classify(case: Case) -> list[str]:
    """The names of the corner classes ``case`` reaches."""
    return [k.name for k in CLASSES if case.op in k.ops and k.holds(case)]


def promised(op: str, profile: str, permutation: bool = True, n_slices: bool = False) -> list[str]:
    """The classes the diff groups of ``op`` promise to reach under ``profile``, for a backend
    that declares ``permutation`` and ``n_slices`` or not."""
    declared = {"": True, "permutation": permutation, "n_slices": n_slices}
    return [
        k.name
        for k in CLASSES
        if op in k.ops and (profile != "ci" or not k.wide_only) and declared[k.needs]
    ]


# --- hand-built corner cases ---------------------------------------------------------------

_SCALINGS = (1.0, -0.5, 2.0, 0.25, -3.0, 40.0, 2.0**-12, -(2.0**-16), 0.0, 1.5, -24.0, 0.75)


def _scalings(L: int, offset: int = 0) -> tuple[float, ...]:
    return tuple(_SCALINGS[(i + offset) % len(_SCALINGS)] for i in range(L))


def _cycle(n: int, L: int, start: int = 0) -> tuple[int, ...]:
    return tuple((start + i) % L for i in range(n))


_BOTH = {kind: {"x": kind, "base": kind} for kind in ("col_slice", "row_stride")}


def _templates(profile: str) -> list[dict]:
    """Shape templates; each names the corners it exists for.  Small dims unless targeted."""
    t: list[dict] = [
        # rows around 16/32/64 in segments and 127/128/129 in total
        dict(name="rows 15,32,65,16 (T=128)", seg_lens=(15, 32, 65, 16), lora_ranks=(8, 5, 8, 3)),
        dict(
            name="rows 17,31,64,15 (T=127), strided rows",
            seg_lens=(17, 31, 64, 15),
            weight_indices=(1, 2, 0, 3),
            lora_ranks=(8, 5, 8, 3),
            layouts=_BOTH["row_stride"],
        ),
        dict(
            name="rows 33,63,0,33 (T=129), empty segment, no base",
            seg_lens=(33, 63, 0, 33),
            weight_indices=(2, 0, 1, 2),
            lora_ranks=(6, 8, 0),
            has_base=False,
        ),
        # long segments around 128 (totals around 256)
        dict(name="rows 127,129 (T=256)", seg_lens=(127, 129), lora_ranks=(7, 8)),
        dict(name="rows 128,129 (T=257)", seg_lens=(128, 129), lora_ranks=(8, 4)),
        dict(name="rows 128,127 (T=255)", seg_lens=(128, 127), lora_ranks=(3, 8)),
        # many segments: past 16 and 32, rank 0 beside adapters, slots past 8
        dict(
            name="decode: 17 segments",
            seg_lens=(1,) * 17,
            weight_indices=_cycle(17, 6),
            lora_ranks=(4, 0, 8, 2, 7, 5),
        ),
        dict(
            name="decode: 33 segments, slots past 8",
            seg_lens=(1,) * 33,
            weight_indices=_cycle(33, 12, 3),
            lora_ranks=(4, 0, 8, 2, 7, 5, 0, 3, 6, 8, 1, 5),
        ),
        # a sparse pool: slots 8, 9, 16, 19 of 20 used, the rest poisoned through and through
        dict(
            name="sparse pool of 20, slots 3,8,9,16,19",
            seg_lens=(4, 3, 3, 3, 3),
            weight_indices=(3, 8, 9, 16, 19),
            lora_ranks=tuple(
                r if w in (3, 8, 9, 16, 19) else 8
                for w, r in enumerate([5] * 3 + [6] + [5] * 4 + [7, 5] + [5] * 6 + [8, 5, 5, 3])
            ),
            poison_unused=True,
        ),
        # ranks around 16, 32, 64, past 64 and 128 in one pool, tiny scalings among them
        dict(
            name="ranks 15..128 in one pool",
            seg_lens=(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2),
            weight_indices=tuple(range(12)),
            lora_ranks=(15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128),
            R=128,
            K=20,
            N=20,
            n_kv=8,
            scal_offset=5,
        ),
        # K with ragged tails past 128 and 256 (expand: a wider input, a column slice)
        dict(
            name="K=131 ragged (T=15)",
            seg_lens=(7, 8),
            weight_indices=(0, 2),
            lora_ranks=(8, 0, 6),
            K=131,
            extra_cols=5,
            layouts=_BOTH["col_slice"],
        ),
        dict(name="K=259 ragged (T=31)", seg_lens=(20, 11), lora_ranks=(5, 8), K=259),
        # N with ragged tails past 128 and 256
        dict(name="N=137 ragged (T=63)", seg_lens=(63,), lora_ranks=(6,), N=137, n_kv=41),
        dict(
            name="N=263 ragged (T=64), strided base",
            seg_lens=(40, 24),
            lora_ranks=(8, 7),
            N=263,
            n_kv=67,
            layouts=_BOTH["col_slice"],
        ),
        dict(
            name="rows 5,60 (T=65), column slice, permuted",
            seg_lens=(5, 60),
            lora_ranks=(8, 3),
            layouts=_BOTH["col_slice"],
            permute=True,
        ),
        # empty batches and empty dims
        dict(name="bs=0", seg_lens=(), weight_indices=(), lora_ranks=(4, 0)),
        dict(name="all segments empty", seg_lens=(0, 0, 0), weight_indices=(0, 1, 0)),
        dict(name="K=0", seg_lens=(3, 2), lora_ranks=(4, 2), K=0, ops=("shrink", "qkv", "gate_up")),
        dict(
            name="N=0",
            seg_lens=(3, 2),
            lora_ranks=(4, 2),
            N=0,
            n_kv=0,
            ops=("expand", "qkv", "gate_up"),
        ),
        # n uneven slices (a backend that declares n_slices): an empty one, ragged widths,
        # adapters without LoRA on some slices (zero weights, as the engines load them)
        dict(name="5 uneven slices, one empty, some without LoRA", seg_lens=(6, 0, 9, 4),
             weight_indices=(0, 1, 2, 0), lora_ranks=(8, 5, 0), slice_widths=(24, 0, 17, 33, 1),
             no_lora=(0b00100, 0b11011, 0), ops=("qkv",)),
        dict(name="one slice, 137 wide (T=17)", seg_lens=(17,), lora_ranks=(7,),
             slice_widths=(137,), ops=("qkv",)),
        dict(name="two slices, the first without LoRA", seg_lens=(5, 5), lora_ranks=(4, 6),
             slice_widths=(20, 12), no_lora=(0b01, 0), ops=("qkv",)),
    ]  # fmt: skip
    if profile != "ci":
        t += [
            dict(name="rows 255,2 (T=257)", seg_lens=(255, 2), lora_ranks=(4, 8)),
            dict(name="rows 256,1 (T=257)", seg_lens=(256, 1), lora_ranks=(8, 2)),
            dict(name="rows 257 (T=257)", seg_lens=(257,), lora_ranks=(5,)),
        ]
    return t


# the top of every dimension's range (conformance.space.DIMENSIONS), the other sizes small: a
# bug past any threshold inside a range shows here, wherever the kernel's threshold sits
_TOP_SEGMENTS = 512
_EXTREMES = [
    dict(name="top: 16384 rows in one segment", seg_lens=(16384,), lora_ranks=(3,), R=4, K=8,
         N=8, n_kv=4),
    dict(
        name="top: 512 segments",
        seg_lens=(*((1, 1, 0, 2)[i % 4] for i in range(_TOP_SEGMENTS - 1)), 1),
        weight_indices=tuple((7 * i) % 24 for i in range(_TOP_SEGMENTS)),
        lora_ranks=tuple((4, 2, 0, 3, 1, 4)[w % 6] for w in range(24)),
        R=4, K=8, N=8, n_kv=4,
    ),
    dict(
        name="top: 128 slots, every one used",
        seg_lens=(1,) * 128,
        weight_indices=tuple((37 * i) % 128 for i in range(128)),
        lora_ranks=tuple(1 + (5 * w) % 8 for w in range(128)),
        R=8, K=8, N=8, n_kv=4,
    ),
    dict(name="top: rank 256", seg_lens=(3, 2, 2, 1), weight_indices=(0, 1, 2, 3),
         lora_ranks=(256, 255, 129, 1), R=256, K=24, N=20, n_kv=8),
    dict(name="top: K=65536", seg_lens=(2, 1), lora_ranks=(2, 1), R=2, K=65536,
         ops=("shrink", "qkv", "gate_up")),
    dict(name="top: N=262144", seg_lens=(1, 1), lora_ranks=(2, 1), R=2, N=262144,
         ops=("expand",)),
    dict(name="top: slices 65536 wide", seg_lens=(1, 1), lora_ranks=(2, 1), R=2, K=8, N=65536,
         n_kv=65536, ops=("qkv", "gate_up")),
    dict(name="top: GQA 16 (Nq=1024, Nkv=64)", seg_lens=(5, 3), lora_ranks=(8, 4), K=16,
         N=1024, n_kv=64, ops=("qkv",)),
    dict(name=f"top: {MAX_SLICES} slices", seg_lens=(4, 3), lora_ranks=(8, 5), K=16,
         slice_widths=(16, 1, 0, 40, 8, 8, 33, 2)[:MAX_SLICES], ops=("qkv",)),
    dict(name="empty first and last segments", seg_lens=(0, 5, 0, 3, 0),
         weight_indices=(1, 0, 2, 1, 0), lora_ranks=(4, 6, 3)),
]  # fmt: skip

# GPU-only size classes (the thorough profile on a CUDA device with the memory): element offsets
# past 2^31 in the input (T*K), where an int32 row offset wraps (vLLM #53028); 33 segments keep
# the reference's float64 copies of x small
HUGE_T = 32769
_HUGE = [
    dict(name="2^31: T*K past 2^31 elements (T=32769, K=65536)",
         seg_lens=(*(1024,) * 32, 1), weight_indices=tuple(i % 3 for i in range(33)),
         lora_ranks=(4, 0, 3), R=4, K=65536, N=16, n_kv=8, ops=("shrink", "qkv", "gate_up")),
]  # fmt: skip


def _seeded(op: str, case: Case) -> Case:
    """``case`` with its seed derived from its op and name."""
    return case.replace(seed=zlib.crc32(f"{op}/{case.name}".encode()) % 2**31)


def huge_cases(op: str, dtype_size: int, free_bytes: int) -> list[Case]:
    """The GPU-only size classes of ``op`` that fit in ``free_bytes`` of device memory."""
    out = []
    for spec in _HUGE:
        case = build_case(op, spec)
        # x, its snapshot, |x| and a copy of the backend's own, with room to spare
        if case is not None and case.T * case.K * dtype_size * 6 <= free_bytes:
            out.append(_seeded(op, case))
    return out


# every memory layout of every argument (conformance.case.LAYOUT_KINDS), on shapes whose fast
# paths assume alignment: K, N and ranks multiples of 8
_ALL_OFFSET = {arg: "offset" for arg in ("x", "base", "a", "b", "offsets", "batch")}
_LAYOUT_CASES = [
    dict(name="layouts: every argument one element past its buffer's start",
         layouts=_ALL_OFFSET),
    dict(name="layouts: column slices, weights inside larger pools",
         layouts={"x": "col_slice", "base": "col_slice", "a": "pool_view", "b": "pool_view"}),
    dict(name="layouts: every other row, weights transposed",
         layouts={"x": "row_stride", "base": "row_stride", "a": "transposed", "b": "transposed"}),
    dict(name="layouts: input and output transposed",
         layouts={"x": "transposed", "base": "transposed"}),
]  # fmt: skip
_LAYOUT_SHAPE = dict(seg_lens=(9, 8, 16), weight_indices=(0, 1, 0), lora_ranks=(16, 8), R=16,
                     K=64, N=64, n_kv=32)  # fmt: skip

# precision corners: run in every dtype (rounding bugs are dtype-specific)
_PRECISION = [
    dict(
        name="same-sign data, K=300, rank 64",
        seg_lens=(9, 7),
        lora_ranks=(64, 48),
        R=64,
        K=300,
        N=96,
        n_kv=32,
        data="same_sign",
    ),
    dict(
        name="dynamic-range data, K=200, rank 32",
        seg_lens=(6, 5, 5),
        lora_ranks=(32, 17, 0),
        R=32,
        K=200,
        N=70,
        n_kv=24,
        data="dynamic",
    ),
    dict(
        name="overflow past the dtype's range",
        seg_lens=(3, 2),
        lora_ranks=(8, 4),
        scalings=(40.0, -3.0),
        data="overflow",
    ),
    # an accumulator of too little precision shows over the longest sums the range allows
    dict(name="same-sign data, K=65536", seg_lens=(2, 1), lora_ranks=(2, 1), R=2, K=65536,
         data="same_sign", ops=("shrink", "qkv", "gate_up")),
    dict(name="same-sign data, rank 256", seg_lens=(2, 2), lora_ranks=(256, 200), R=256, N=24,
         data="same_sign", ops=("expand",)),
    # a scaling far below 1, folded into weights of a narrow dtype, loses its low bits
    # (no base: beside one of magnitude 1 the small LoRA term's error is below the tolerance)
    dict(name="small scalings (|s| < 2^-10)", seg_lens=(5, 4), lora_ranks=(64, 48), R=64,
         K=40, N=40, scalings=(2.0**-20, -(2.0**-18)), has_base=False),
    # results in the dtype's subnormal range: flushed to zero, they are off by more than the
    # tolerance (unless the backend declares subnormals="flush")
    dict(name="subnormal results", seg_lens=(4, 3), lora_ranks=(8, 5), R=8, K=32, N=24, n_kv=8,
         scalings=(1.0, -0.75), data="subnormal"),
    dict(name="subnormal results, no base", seg_lens=(3, 4), lora_ranks=(5, 8), R=8, K=32, N=24,
         n_kv=8, scalings=(-1.5, 1.0), data="subnormal", has_base=False),
]  # fmt: skip


def build_case(op: str, spec: dict) -> Case | None:
    """The hand-built case ``spec`` (a dict of this module's tables) of ``op``, in float32;
    None when ``spec`` names other ops."""
    spec = dict(spec)
    ops = spec.pop("ops", None)
    if ops is not None and op not in ops:
        return None
    name = spec.pop("name")
    offset = spec.pop("scal_offset", 0)
    lens = spec.pop("seg_lens")
    ranks = spec.pop("lora_ranks", (8, 5))
    L = len(ranks)
    fields = dict(
        seg_lens=lens,
        weight_indices=spec.pop("weight_indices", _cycle(len(lens), L)),
        lora_ranks=ranks,
        scalings=spec.pop("scalings", _scalings(L, offset)),
        R=spec.pop("R", max(8, *ranks)),
        K=spec.pop("K", 24),
        N=spec.pop("N", 20),
        has_base=spec.pop("has_base", True),
        **spec,
    )
    n_kv = fields.pop("n_kv", 12)
    widths = fields.get("slice_widths", ())
    if widths:
        fields.update(stack=len(widths), N=max(widths), n_kv=0)
        return Case(op=op, dtype="float32", name=name, layout="corner", **fields)
    if op == "shrink":
        fields.update(N=0, has_base=False, stack=3 if zlib.crc32(name.encode()) % 2 else 2)
    elif op == "expand":
        fields.update(K=0)
    elif op == "gate_up":
        fields.update(stack=2)
    else:
        fields.update(stack=3, n_kv=n_kv if fields["N"] else 0)
    if op != "expand":
        fields.pop("extra_cols", None)
    return Case(op=op, dtype="float32", name=name, layout="corner", **fields)


def corner_cases(op: str, profile: str, n_slices: bool = False) -> tuple[list[Case], list[Case]]:
    """``(shared, precision)`` hand-built cases of ``op``: ``shared`` ones are spread over the
    declared dtypes, ``precision`` ones run in each; the n-slice ones only with ``n_slices``
    (a backend that declares it).  Seeds derive from the names."""
    specs = _templates(profile) + _EXTREMES + [{**_LAYOUT_SHAPE, **s} for s in _LAYOUT_CASES]
    shared = [_seeded(op, c) for spec in specs if (c := build_case(op, spec))]
    shared = [c for c in shared if n_slices or not c.slice_widths]
    precision = [_seeded(op, c) for spec in _PRECISION if (c := build_case(op, spec))]
    return shared, precision


def explicit_cases(
    op: str,
    dtype: str,
    dtypes: list[str],
    profile: str,
    permutation: bool,
    split: bool = False,
    n_slices: bool = False,
) -> list[Case]:
    """The hand-built cases the diff group ``(op, dtype)`` runs when the op's diff groups are
    ``dtypes``: every ``len(dtypes)``-th shared case, and all precision cases (the n-slice
    ones only where ``n_slices`` is declared)."""
    shared, precision = corner_cases(op, profile, n_slices)
    k = dtypes.index(dtype)
    mine = [c for i, c in enumerate(shared) if i % len(dtypes) == k] + precision
    out = []
    for c in mine:
        c = c.replace(
            dtype=dtype,
            permute=c.permute and permutation,
            split_b=split and c.op in ("qkv", "gate_up") and not c.slice_widths,
        )
        out.append(c)
    return out
