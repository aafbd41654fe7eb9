"""A conformance case: the structure of one call, as a small JSON document.

Hypothesis draws a :class:`Case` (segment layout, adapters, shapes, dtype, data mode, memory
layout and a seed); :mod:`conformance.inputs` turns it into tensors with a seeded generator, so
a case reproduces the same call on any machine.  :meth:`Case.from_json` validates a document
field by field (types, ranges, sizes), so a replay file can never make the harness crash or
allocate without bound.

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``r`` one adapter's rank,
``c`` stack count, ``N`` output dim (``Nq``/``Nkv`` for qkv).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from conformance.names import DTYPE_NAMES, MAX_SLICES, METHODS, OPS, STACKS, stack_count

POISONS = ("nan", "huge")
DATA_MODES = ("gaussian", "same_sign", "dynamic", "overflow", "subnormal")

# the memory layouts each tensor argument is drawn in (conformance/inputs.py builds them):
#   contiguous  dense, at the start of its own buffer
#   offset      dense, one element past the start of its buffer (breaks 16-byte alignment)
#   col_slice   a column slice of a wider buffer; row_stride: every other row of a taller one
#   transposed  column-major: the last two dims swapped in memory
#   pool_view   weights: every other slot of a larger pool, a sub-block of each slot's matrix
#   apart       split expand weights: the halves are separate allocations (else views of one)
LAYOUT_KINDS: dict[str, tuple[str, ...]] = {
    "x": ("contiguous", "offset", "col_slice", "row_stride", "transposed"),
    "base": ("contiguous", "offset", "col_slice", "row_stride", "transposed"),
    "a": ("contiguous", "offset", "pool_view", "transposed"),
    "b": ("contiguous", "offset", "pool_view", "transposed"),
    "split": ("views", "apart"),
    "offsets": ("contiguous", "offset"),
    "batch": ("contiguous", "offset"),
}
LAYOUT_DEFAULTS = {arg: kinds[0] for arg, kinds in LAYOUT_KINDS.items()}


def layout_args(op: str, has_base: bool, split_b: bool) -> tuple[str, ...]:
    """The tensor arguments of a call of ``op`` whose layout a case sets."""
    args = ["x", "batch"]
    if op != "expand":
        args.append("a")
    if op != "shrink":
        args.append("b")
        if has_base:
            args.append("base")
    if split_b:
        args.append("split")
    if op == "qkv":
        args.append("offsets")
    return tuple(args)


# replay files are capped at this many elements per tensor unless the user raises it
DEFAULT_MAX_ELEMENTS = 1 << 26


class CaseError(ValueError):
    """A case document that is not a valid case; the message names the field."""


@dataclass(frozen=True)
class Case:
    """The structure of one call; tensor values come from ``seed``.

    Attributes:
        op: ``shrink``, ``expand``, ``qkv`` or ``gate_up``.
        dtype: ``float16``, ``bfloat16`` or ``float32``.
        seg_lens: tokens per segment (``bs`` entries, zeros allowed, ``bs = 0`` allowed).
        weight_indices: slot of each segment.
        lora_ranks: rank of each of the ``L`` slots (0: no adapter).
        scalings: scaling of each slot.
        R: pool rank (``>= max(lora_ranks)``).
        K: input dim (shrink, qkv, gate_up).
        N: output dim: expand ``N``, gate_up half width, qkv ``Nq``.
        n_kv: qkv ``Nkv`` (0 for other ops).
        stack: ``c``: shrink's ``stack_num``; 1 expand, 3 qkv, 2 gate_up.
        permute: use a random ``permutation``.
        has_base: pass a ``base_output``.
        poison: what fills the garbage regions beyond each adapter's rank (``nan`` or ``huge``).
        seed: seed of every tensor value.
        layout: the layout family's label (for reports only).
        split_b: pass the fused expand weights in the split layout (qkv, gate_up).
        data: value distribution: ``gaussian``; ``same_sign`` (every product positive, so
            rounding errors add up instead of cancelling); ``dynamic`` (rows and columns scaled
            by powers of two over a wide range); ``overflow`` (results beyond the dtype's
            range); ``subnormal`` (results in the dtype's subnormal range).
        layouts: the memory layout of each tensor argument (:data:`LAYOUT_KINDS`); arguments
            not named are contiguous.
        extra_cols: expand only: the input has ``R + extra_cols`` columns (a pool rank
            ``R' > R``), the ones past each row's rank holding garbage.
        poison_unused: the weights of slots no segment uses are garbage through and through.
        slice_widths: qkv only: the widths of ``n`` uneven output slices (some may be 0),
            called with ``n_slices=n`` (a backend that declares ``n_slices``); ``N`` is then the
            widest and ``n_kv`` 0.  Empty: the three qkv slices ``Nq, Nkv, Nkv``.
        no_lora: with ``slice_widths``: per slot, a bit mask of the slices the adapter has no
            LoRA for: their ``A`` rows and ``B`` rows within the rank hold zeros, as an engine
            zero-fills a module the adapter does not target.  Empty: none.
        token_map: pass the batch as a token map (``lora_ref.TokenMapBatchInfo``): each
            physical row's slot, the permutation applied, and about half the rows of rank-0
            slots given -1 (no LoRA) instead.
        name: the corner a hand-built case exists for ("" for a drawn one).
    """

    op: str
    dtype: str
    seg_lens: tuple[int, ...]
    weight_indices: tuple[int, ...]
    lora_ranks: tuple[int, ...]
    scalings: tuple[float, ...]
    R: int
    K: int
    N: int
    n_kv: int = 0
    stack: int = 1
    permute: bool = False
    has_base: bool = True
    poison: str = "nan"
    seed: int = 0
    layout: str = "random"
    split_b: bool = False
    data: str = "gaussian"
    layouts: dict[str, str] = dataclasses.field(default_factory=dict)
    extra_cols: int = 0
    poison_unused: bool = False
    slice_widths: tuple[int, ...] = ()
    no_lora: tuple[int, ...] = ()
    token_map: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        # every applicable argument named, so two spellings of one case have one digest
        applicable = layout_args(self.op, self.has_base, self.split_b)
        full = {a: self.layouts.get(a, LAYOUT_DEFAULTS[a]) for a in applicable}
        object.__setattr__(self, "layouts", full)

    def arg_layout(self, arg: str) -> str:
        """The layout of argument ``arg`` (``contiguous`` or ``views`` when it has none)."""
        return self.layouts.get(arg, LAYOUT_DEFAULTS[arg])

    @property
    def T(self) -> int:
        return sum(self.seg_lens)

    @property
    def L(self) -> int:
        return len(self.lora_ranks)

    @property
    def bs(self) -> int:
        return len(self.seg_lens)

    @property
    def out_dim(self) -> int:
        """Columns of the result: ``c*R`` (shrink), ``N``, ``Nq+2*Nkv`` or ``2N``."""
        return {
            "shrink": self.stack * self.R,
            "expand": self.N,
            "qkv": sum(self.slice_widths) if self.slice_widths else self.N + 2 * self.n_kv,
            "gate_up": 2 * self.N,
        }[self.op]

    @property
    def in_dim(self) -> int:
        """Columns of ``x``: ``K``, or ``R + extra_cols`` for expand."""
        return self.R + self.extra_cols if self.op == "expand" else self.K

    @property
    def slices(self) -> list[tuple[int, int]]:
        """Column ranges of the expand slices (one for expand, two for gate_up, three for qkv,
        ``n`` for an n-slice case)."""
        if self.op == "qkv":
            widths = self.slice_widths or (self.N, self.n_kv, self.n_kv)
            return list(itertools.pairwise(itertools.accumulate(widths, initial=0)))
        if self.op == "gate_up":
            return [(0, self.N), (self.N, 2 * self.N)]
        return [(0, self.N)]

    @property
    def used_slots(self) -> set[int]:
        return {w for n, w in zip(self.seg_lens, self.weight_indices, strict=True) if n > 0}

    def digest(self) -> str:
        """A short stable hash of the case (names failure files)."""
        return hashlib.sha256(self.dumps().encode()).hexdigest()[:10]

    def describe(self) -> str:
        """A short call signature for failure messages."""
        shape = f"K={self.K}, N={self.N}" + (f", Nkv={self.n_kv}" if self.op == "qkv" else "")
        extras = [
            f"{k}={v}"
            for k, v in (
                ("data", self.data),
                ("extra_cols", self.extra_cols),
                ("poison_unused", self.poison_unused),
                ("split_b", self.split_b),
                ("slice_widths", self.slice_widths),
                ("no_lora", self.no_lora),
                ("token_map", self.token_map),
            )
            if v != _DEFAULTS[k]
        ]
        extras += [f"{arg}:{kind}" for arg, kind in self.layouts.items() if kind != "contiguous"]
        return (
            f"{METHODS[self.op]}({self.dtype}, seg_lens={list(self.seg_lens)}, "
            f"weight_indices={list(self.weight_indices)}, lora_ranks={list(self.lora_ranks)}, "
            f"scalings={list(self.scalings)}, R={self.R}, {shape}, stack={self.stack}, "
            f"permute={self.permute}, base={self.has_base}, poison={self.poison}, "
            f"seed={self.seed}{''.join(', ' + e for e in extras)})"
        )

    def replace(self, **changes: Any) -> Case:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layouts"] = dict(self.layouts)
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def largest_tensor(self) -> int:
        """Elements of the largest tensor the case allocates (the replay size cap reads it)."""
        c = self.stack
        return max(
            2 * (self.T + 1) * (max(self.in_dim, 1) + 7) + 64,
            (2 * self.L + 1) * (c * self.R + 3) * (self.K + 5),
            (2 * self.L + 1) * (self.out_dim + 3) * (self.R + 5),
            2 * (self.T + 1) * (max(self.out_dim, 1) + 7) + 128,
        )

    @classmethod
    def from_json(cls, data: object, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Case:
        """Validate ``data`` field by field and build the case.

        Raises :class:`CaseError` naming the first bad field: unknown or missing fields, wrong
        types, values out of range, an inconsistent layout, or a tensor larger than
        ``max_elements``.
        """
        if not isinstance(data, dict):
            raise CaseError(f"case: expected a JSON object, got {type(data).__name__}")
        data = _upgrade(data)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise CaseError(f"case: unknown fields {unknown}")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise CaseError(f"case: missing fields {missing}")
        values = {n: data.get(n, _DEFAULTS.get(n)) for n in names}
        for name, check in _FIELD_CHECKS.items():
            problem = check(values[name])
            if problem:
                raise CaseError(f"case.{name}: expected {problem}, got {values[name]!r:.80}")
        for key in ("seg_lens", "weight_indices", "lora_ranks", "scalings", "slice_widths",
                    "no_lora"):  # fmt: skip
            values[key] = tuple(values[key])
        values["layouts"] = dict(values["layouts"])
        applicable = layout_args(values["op"], values["has_base"], values["split_b"])
        stray = sorted(set(values["layouts"]) - set(applicable))
        if stray:
            raise CaseError(
                f"case.layouts: expected only arguments a {values['op']} call has "
                f"({', '.join(applicable)}), got {stray}"
            )
        case = cls(**values)
        _check_consistent(case, max_elements)
        return case


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An older case document in today's fields: ``strides`` (one layout for ``x`` and
    ``base_output``: contiguous, col_slice or row_stride) became ``layouts``."""
    if "strides" not in data:
        return data
    data = dict(data)
    kind = data.pop("strides")
    if kind not in ("contiguous", "col_slice", "row_stride"):
        raise CaseError(
            f"case.strides: expected contiguous, col_slice or row_stride, got {kind!r:.80}"
        )
    if "layouts" not in data and kind != "contiguous":
        has_base = data.get("has_base", True) and data.get("op") != "shrink"
        data["layouts"] = {"x": kind, **({"base": kind} if has_base else {})}
    return data


_DEFAULTS = {
    f.name: {} if f.default_factory is not dataclasses.MISSING else f.default
    for f in dataclasses.fields(Case)
}
_BIG = 1 << 24  # any single dimension


def _int(lo: int, hi: int = _BIG):
    def check(v: object) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"an int in [{lo}, {hi}]"
        return None

    return check


def _ints(lo: int, hi: int = _BIG, max_len: int = 1 << 16):
    item = _int(lo, hi)

    def check(v: object) -> str | None:
        if not isinstance(v, list | tuple) or len(v) > max_len or any(item(i) for i in v):
            return f"a list of at most {max_len} ints in [{lo}, {hi}]"
        return None

    return check


def _finite_floats(v: object) -> str | None:
    if not isinstance(v, list | tuple) or len(v) > 1 << 16:
        return "a list of finite numbers"
    for f in v:
        if isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f):
            return "a list of finite numbers"
    return None


def _choice(options: tuple[str, ...]):
    return lambda v: None if isinstance(v, str) and v in options else f"one of {options}"


def _bool(v: object) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _layouts(v: object) -> str | None:
    expected = f"an object mapping arguments of {sorted(LAYOUT_KINDS)} to their layouts"
    if not isinstance(v, dict) or len(v) > len(LAYOUT_KINDS):
        return expected
    for arg, kind in v.items():
        if arg not in LAYOUT_KINDS or kind not in LAYOUT_KINDS[arg]:
            return expected
    return None


def _short_str(v: object) -> str | None:
    return None if isinstance(v, str) and len(v) <= 200 else "a string of at most 200 characters"


_FIELD_CHECKS = {
    "op": _choice(OPS),
    "dtype": _choice(DTYPE_NAMES),
    "seg_lens": _ints(0),
    "weight_indices": _ints(0),
    "lora_ranks": _ints(0),
    "scalings": _finite_floats,
    "R": _int(0, 1 << 16),
    "K": _int(0),
    "N": _int(0),
    "n_kv": _int(0),
    "stack": _int(1, MAX_SLICES),
    "permute": _bool,
    "has_base": _bool,
    "poison": _choice(POISONS),
    "seed": _int(0, 2**63 - 1),
    "layout": _short_str,
    "split_b": _bool,
    "data": _choice(DATA_MODES),
    "layouts": _layouts,
    "extra_cols": _int(0, 1 << 16),
    "poison_unused": _bool,
    "slice_widths": _ints(0, max_len=MAX_SLICES),
    "no_lora": _ints(0, 2**MAX_SLICES - 1),
    "token_map": _bool,
    "name": _short_str,
}


def _check_consistent(case: Case, max_elements: int) -> None:
    def bad(field: str, expected: str, got: object) -> CaseError:
        return CaseError(f"case.{field}: expected {expected}, got {got!r:.80}")

    if len(case.weight_indices) != case.bs:
        raise bad("weight_indices", f"{case.bs} entries (one per segment)", case.weight_indices)
    if len(case.scalings) != case.L:
        raise bad("scalings", f"{case.L} entries (one per slot)", case.scalings)
    if any(w >= case.L for w in case.weight_indices):
        raise bad("weight_indices", f"slots in [0, {case.L})", case.weight_indices)
    if any(r > case.R for r in case.lora_ranks):
        raise bad("lora_ranks", f"ranks <= R = {case.R}", case.lora_ranks)
    if case.slice_widths or case.no_lora:
        _check_slices(case, bad)
    elif case.stack not in STACKS[case.op]:
        raise bad("stack", f"one of {STACKS[case.op]} for {case.op}", case.stack)
    if case.op != "qkv" and case.n_kv:
        raise bad("n_kv", "0 (only qkv has Nkv)", case.n_kv)
    if case.op != "expand" and case.extra_cols:
        raise bad("extra_cols", "0 (only expand has a wider input)", case.extra_cols)
    if case.split_b and case.op not in ("qkv", "gate_up"):
        raise bad("split_b", "false (only qkv and gate_up have a split layout)", case.split_b)
    if not case.slice_widths and stack_count(case.op, case.stack) != case.stack:
        raise bad("stack", f"{stack_count(case.op)} for {case.op}", case.stack)
    size = case.largest_tensor()
    if size > max_elements:
        raise CaseError(
            f"case: a tensor of {size} elements exceeds the limit of {max_elements} "
            "(raise it with --max-elements)"
        )


def _check_slices(case: Case, bad) -> None:
    """An n-slice case: qkv, ``stack`` slices, ``N`` the widest, one mask per slot."""
    widths = case.slice_widths
    if case.op != "qkv":
        raise bad("slice_widths", "empty (only qkv has n slices)", widths)
    if not widths:
        raise bad("no_lora", "empty (it masks the slices of slice_widths)", case.no_lora)
    if case.stack != len(widths):
        raise bad("stack", f"{len(widths)} (one per slice of slice_widths)", case.stack)
    if max(widths) != case.N or case.n_kv:
        raise bad("N", f"the widest slice {max(widths)}, with n_kv 0", (case.N, case.n_kv))
    if case.split_b:
        raise bad("split_b", "false (the split layout is qkv's three slices)", case.split_b)
    if case.no_lora and (len(case.no_lora) != case.L or max(case.no_lora) >= 1 << len(widths)):
        raise bad("no_lora", f"{case.L} masks (one per slot) below 2**{len(widths)}", case.no_lora)
