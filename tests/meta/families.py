"""A parametric zoo: families of narrow bugs whose parameters are drawn afresh for every run.

A fixed zoo can be tuned to: a suite that names the zoo's corners catches it and nothing else.
Here each family is a kind of bug a kernel's tiles, fast paths and caches produce, and its
threshold ``θ`` is drawn log-uniformly over the whole realistic range of its dimension
(:data:`conformance.space.DIMENSIONS`) from a seed that changes per run.  The seed is printed;
``LORA_ZOO_SEED`` pins it.

Every mutant is the reference with one bug, so it fails on some input the contract allows and
computes the float64 result everywhere else.  The families:

* thresholds: rows of a segment past ``θ``, ``K`` past ``θ``, slot ``≥ θ`` reading slot
  ``- θ``, output columns past ``θ`` unwritten, ranks past ``θ``, segments past ``θ``, an
  accumulator in the input dtype past ``K = θ``;
* layouts: the strides, or the storage offset, of each tensor argument ignored; split halves
  assumed adjacent;
* state: the segments, ranks, scalings, weights or qkv offsets cached across calls, keyed on
  the tensor's identity, its ``data_ptr`` or its shape;
* numerics: results in the subnormal range flushed to zero.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from typing import Any

import torch

from conformance.space import DIMENSIONS
from lora_ref import ReferenceLoRABackend

SEED_ENV = "LORA_ZOO_SEED"
FULL_ENV = "LORA_ZOO_FULL"
SMALLEST_NORMAL = {torch.float16: 2.0**-14, torch.bfloat16: 2.0**-126, torch.float32: 2.0**-126}
BATCH_TENSORS = ("seg_lens", "seg_indptr", "weight_indices", "lora_ranks", "scalings")


def zoo_seed() -> int:
    """``LORA_ZOO_SEED`` if set, else a fresh seed from the operating system."""
    pinned = os.environ.get(SEED_ENV)
    return int(pinned) if pinned else random.SystemRandom().randrange(2**32)


def theta(rng: random.Random, lo: int, hi: int) -> int:
    """A threshold in ``[lo, hi]``, log-uniform: a binade uniformly, then a value in it."""
    e = rng.randint(lo.bit_length() - 1, hi.bit_length() - 1)
    return rng.randint(max(lo, 1 << e), min(hi, (1 << (e + 1)) - 1))


def _top(dim: str) -> int:
    return DIMENSIONS[dim].hi


def _mutant(base: type, name: str, doc: str, body: dict[str, Any]) -> type:
    return type(name, (base,), {"__doc__": doc, "__module__": __name__, **body})


# ---- arguments by role: every op's tensors, so one mutant can act on one role in every op ----


class _Roles(ReferenceLoRABackend):
    """Routes every op's tensor arguments through :meth:`_arg` (role, tensor) first.

    ``VALIDATE_REAL``: the call first runs on the real arguments (its result dropped), so the
    contract's validation sees them; only the computation sees what :meth:`_arg` made."""

    VALIDATE_REAL = False

    def _arg(self, role: str, t: Any) -> Any:
        return t

    def _b(self, b: Any) -> Any:
        if isinstance(b, tuple):
            return tuple(self._arg("b", h) for h in b)
        return self._arg("b", b)

    def _twice(self, method: Callable[..., Any], real: tuple, made: Callable[[], tuple]) -> Any:
        if self.VALIDATE_REAL:
            method(*real)
        return method(*made())

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return self._twice(
            super().run_lora_a_sgemm, (x, weights, stack_num),
            lambda: (self._arg("x", x), self._arg("a", weights), stack_num),
        )  # fmt: skip

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return self._twice(
            super().run_lora_b_sgemm, (x, weights, base_output),
            lambda: (self._arg("x", x), self._arg("b", weights), self._arg("base", base_output)),
        )  # fmt: skip

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        return self._twice(
            super().run_qkv_lora, (x, a, b, offsets, max_dim, base_output),
            lambda: (self._arg("x", x), self._arg("a", a), self._b(b),
                     self._arg("offsets", offsets), max_dim, self._arg("base", base_output)),
        )  # fmt: skip

    def run_gate_up_lora(self, x, a, b, base_output=None):
        return self._twice(
            super().run_gate_up_lora, (x, a, b, base_output),
            lambda: (self._arg("x", x), self._arg("a", a), self._b(b),
                     self._arg("base", base_output)),
        )  # fmt: skip


def _dense_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def _misread(t: torch.Tensor, how: str) -> torch.Tensor:
    """``t`` read as a kernel that ignores its strides (``strides``: dense from its first
    element) or its storage offset (``offset``: from the start of its storage) reads it."""
    if t.numel() == 0:
        return t
    if how == "strides":
        strides, start = _dense_strides(tuple(t.shape)), t.storage_offset()
    else:
        strides, start = t.stride(), 0
    span = sum((n - 1) * s for n, s in zip(t.shape, strides, strict=True)) + 1
    size = t.untyped_storage().nbytes() // t.element_size()
    if start + span > size:  # past the storage: what a kernel reads there is garbage
        return torch.full_like(t, float("nan") if t.is_floating_point() else 7)
    return t.as_strided(t.shape, strides, start)


class _LayoutIgnored(_Roles):
    ROLE = "x"
    HOW = "strides"

    def _arg(self, role, t):
        if role == self.ROLE and isinstance(t, torch.Tensor):
            return _misread(t, self.HOW)
        return t

    def _segments(self):
        if self.ROLE != "batch":
            return super()._segments()
        real = self.batch_info
        assert real is not None
        misread = {f: _misread(getattr(real, f), self.HOW) for f in BATCH_TENSORS}
        self.batch_info = dataclasses.replace(real, **misread)
        try:
            return super()._segments()
        finally:
            self.batch_info = real


class _SplitAssumedAdjacent(_Roles):
    """Split gate_up expand weights read as one buffer from the gate half's start."""

    def _b(self, b):
        if not isinstance(b, tuple) or b[0].dim() != 3:  # gate_up's (gate, up) halves only
            return b
        first = b[0]
        widths = [h.shape[1] for h in b]
        shape = (first.shape[0], sum(widths), first.shape[2])
        span = sum((n - 1) * s for n, s in zip(shape, first.stride(), strict=True)) + 1
        size = first.untyped_storage().nbytes() // first.element_size()
        if first.storage_offset() + span > size:
            whole = torch.full(shape, float("nan"), dtype=first.dtype, device=first.device)
        else:
            whole = first.as_strided(shape, first.stride(), first.storage_offset())
        halves, lo = [], 0
        for w in widths:
            halves.append(whole[:, lo : lo + w])
            lo += w
        return tuple(halves)


# ---- thresholds ----


class _RowsPast(ReferenceLoRABackend):
    THETA = 64

    def _segments(self):
        return [(rows[: self.THETA], w, r, s) for rows, w, r, s in super()._segments()]


class _SegmentsPast(ReferenceLoRABackend):
    THETA = 16

    def _segments(self):
        info, _ = self._batch()
        indptr = info.seg_indptr.tolist()
        live = [i for i in range(len(indptr) - 1) if indptr[i + 1] > indptr[i]]
        segs = super()._segments()
        return [seg for seg, i in zip(segs, live, strict=True) if i < self.THETA]


class _SlotShift(ReferenceLoRABackend):
    THETA = 8

    def _segments(self):
        # the weights of slot w - θ, with slot w's rank and scaling
        return [
            (rows, w - self.THETA if w >= self.THETA else w, r, s)
            for rows, w, r, s in super()._segments()
        ]


class _RankPast(ReferenceLoRABackend):
    THETA = 16

    def _segments(self):
        return [(rows, w, min(r, self.THETA), s) for rows, w, r, s in super()._segments()]


class _KPast(_Roles):
    THETA = 128

    def _arg(self, role, t):
        wide = isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] > self.THETA
        if role == "x" and wide and getattr(self, "_op", None) != "expand":
            t = t.clone()
            t[:, self.THETA :] = 0
        return t

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        self._op = "expand"
        try:
            return super().run_lora_b_sgemm(x, weights, base_output)
        finally:
            self._op = None


class _ColumnsPast(ReferenceLoRABackend):
    """Output columns past ``THETA`` unwritten: the base value where there is one, else what
    a fresh allocation held (NaN)."""

    THETA = 128

    def _cut(self, out, base_output):
        if out.shape[1] > self.THETA:
            keep = base_output[:, self.THETA :] if base_output is not None else float("nan")
            out[:, self.THETA :] = keep
        return out

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return self._cut(super().run_lora_a_sgemm(x, weights, stack_num), None)

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return self._cut(super().run_lora_b_sgemm(x, weights, base_output), base_output)

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        out = super().run_qkv_lora(x, a, b, offsets, max_dim, base_output)
        return self._cut(out, base_output)

    def run_gate_up_lora(self, x, a, b, base_output=None):
        return self._cut(super().run_gate_up_lora(x, a, b, base_output), base_output)


def _accumulate(xs: torch.Tensor, a: torch.Tensor, theta: int, dtype: torch.dtype):
    """``xs @ a.T`` (float64 in, float64 out), the sum over ``k >= theta`` kept in ``dtype``
    (rounded after every 4 products)."""
    if xs.shape[1] <= theta or dtype == torch.float32:
        return xs @ a.T
    acc = (xs[:, :theta] @ a[:, :theta].T).to(dtype)
    for k in range(theta, xs.shape[1], 4):
        acc = (acc.double() + xs[:, k : k + 4] @ a[:, k : k + 4].T).to(dtype)
    return acc.double()


class _LowPrecisionAccumulator(ReferenceLoRABackend):
    """The shrink's sum over ``K`` accumulated in the input dtype past ``K = THETA`` (16-bit
    inputs; a float32 accumulator is the contract's own)."""

    THETA = 256

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        ref = super().run_lora_a_sgemm(x, weights, stack_num)
        if self._exact or x.shape[1] <= self.THETA or x.dtype == torch.float32:
            return ref
        out = torch.zeros(ref.shape, dtype=torch.float64, device=x.device)
        for rows, w, r, _ in self._segments():
            a = weights[w, : stack_num * r, :].double()
            out[rows, : stack_num * r] = _accumulate(x[rows].double(), a, self.THETA, x.dtype)
        return out.to(x.dtype)

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        if self._exact or x.shape[1] <= self.THETA or x.dtype == torch.float32:
            return super()._fused(x, lora_a, lora_b, base_output, T, N, offsets)
        out = self._base(base_output, T, N, x)
        c = len(offsets) - 1
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            a = lora_a[w, : c * r, :].double()
            inner = _accumulate(x[rows].double(), a, self.THETA, x.dtype)  # (rows, c*r)
            for j in range(c):
                lo, hi = offsets[j], offsets[j + 1]
                b = lora_b[w, lo:hi, :r].double()
                out[rows, lo:hi] += s * (inner[:, j * r : (j + 1) * r] @ b.T)
        return self._finish(out, x.dtype)


class _FlushesSubnormals(ReferenceLoRABackend):
    """Results below the dtype's smallest normal flushed to (signed) zero."""

    def _finish(self, out, dtype, base_output=None):
        if self._exact:
            return out
        rounded = out.to(dtype)
        tiny = rounded.abs() < SMALLEST_NORMAL[dtype]
        return torch.where(tiny, torch.zeros_like(rounded) * rounded.sign(), rounded)


# ---- state kept across calls ----


def _key(t: Any, how: str) -> Any:
    if how == "identity":
        return id(t)
    if how == "data_ptr":
        return t.data_ptr()
    return tuple(t.shape)


class _BatchCache(ReferenceLoRABackend):
    """One piece of batch state computed once per key and reused while the key matches."""

    STATE = "segments"
    KEY = "identity"

    def _segments(self):
        info, _ = self._batch()
        cache = self.__dict__.setdefault("_cache", {})
        if self.STATE == "segments":
            src = info if self.KEY == "identity" else info.seg_indptr
            k = _key(src, self.KEY)
            if k not in cache:
                cache[k] = super()._segments()
            return cache[k]
        t = getattr(info, "lora_ranks" if self.STATE == "ranks" else "scalings")
        k = _key(t, self.KEY)
        if k not in cache:
            cache[k] = t.tolist()
        values = cache[k]
        out = []
        for rows, w, r, s in super()._segments():
            v = values[w] if w < len(values) else (r if self.STATE == "ranks" else s)
            out.append((rows, w, v, s) if self.STATE == "ranks" else (rows, w, r, v))
        return out


class _WeightCache(_Roles):
    """Weights converted once per key (a copy) and the copy used while the key matches."""

    KEY = "identity"
    ROLES = ("a", "b")
    VALIDATE_REAL = True

    def _arg(self, role, t):
        if role not in self.ROLES or not isinstance(t, torch.Tensor):
            return t
        cache = self.__dict__.setdefault("_cache", {})
        k = (role, _key(t, self.KEY))
        hit = cache.get(k)
        if hit is None or hit.shape != t.shape or hit.dtype != t.dtype:
            cache[k] = hit = t.clone()
        return hit


class _OffsetsCache(_WeightCache):
    """qkv ``output_offset`` values read once per key."""

    ROLES = ("offsets",)


# ---- the zoo ----


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of mutants: its name and how to draw its members from a random generator."""

    name: str
    draw: Callable[[random.Random], list[type]]


def _threshold(name: str, base: type, dim: str, lo: int, doc: str, cap: int | None = None):
    def draw(rng: random.Random) -> list[type]:
        t = theta(rng, lo, cap if cap is not None else _top(dim) - 1)
        return [_mutant(base, f"{name}{t}", doc.format(t=t), {"THETA": t})]

    return Family(name, draw)


def _each(name: str, base: type, docs: dict[str, str], **fixed: Any) -> Family:
    """One mutant per entry of ``docs`` (its key sets the attributes ``fixed`` names)."""

    def draw(rng: random.Random) -> list[type]:
        out = []
        for key, doc in docs.items():
            attrs = {attr: (key.split(":")[i]) for i, attr in enumerate(fixed["attrs"])}
            out.append(_mutant(base, f"{name}_{key.replace(':', '_')}", doc, attrs))
        return out

    return Family(name, draw)


_LAYOUT_DOCS = {
    f"{role}:{how}": f"ignores the {'strides' if how == 'strides' else 'storage offset'} of {role}"
    for role in ("x", "a", "b", "base", "offsets", "batch")
    for how in ("strides", "offset")
    if not (how == "strides" and role in ("offsets", "batch"))  # the contract wants them dense
}
_CACHE_DOCS = {
    f"{state}:{key}": f"caches the batch's {state}, keyed on {key}"
    for state in ("segments", "ranks", "scalings")
    for key in ("identity", "data_ptr", "shape")
}

FAMILIES: list[Family] = [
    _threshold("RowsPast", _RowsPast, "seg_len", 1,
               "rows {t} and later of a segment get no adapter"),
    _threshold("KPast", _KPast, "K", 1, "input columns {t} and later ignored"),
    _threshold("SlotShift", _SlotShift, "slots", 1, "slot w >= {t} reads the weights of w - {t}"),
    _threshold("ColumnsPast", _ColumnsPast, "expand_N", 1,
               "output columns {t} and later unwritten"),
    _threshold("RankPast", _RankPast, "rank", 1, "ranks above {t} computed as {t}"),
    _threshold("SegmentsPast", _SegmentsPast, "segments", 1,
               "segments {t} and later get no adapter"),
    _threshold("AccumulatorPast", _LowPrecisionAccumulator, "K", 1,
               "the K sum accumulated in the input dtype past K = {t}"),
    _each("LayoutIgnored", _LayoutIgnored, _LAYOUT_DOCS, attrs=("ROLE", "HOW")),
    Family("SplitAdjacent", lambda rng: [_mutant(_SplitAssumedAdjacent, "SplitAdjacent",
                                                 "split halves assumed adjacent", {})]),
    _each("BatchCache", _BatchCache, _CACHE_DOCS, attrs=("STATE", "KEY")),
    _each("WeightCache", _WeightCache,
          {k: f"caches converted weights, keyed on {k}" for k in ("identity", "data_ptr", "shape")},
          attrs=("KEY",)),
    _each("OffsetsCache", _OffsetsCache,
          {k: f"caches the qkv offsets, keyed on {k}" for k in ("identity", "data_ptr", "shape")},
          attrs=("KEY",)),
    Family("FlushesSubnormals", lambda rng: [_mutant(_FlushesSubnormals, "FlushesSubnormals",
                                                     "flushes subnormal results to zero", {})]),
]  # fmt: skip


def draw_zoo(seed: int) -> list[type]:
    """Every family's members, thresholds drawn from ``seed``."""
    rng = random.Random(seed)
    return [m for family in FAMILIES for m in family.draw(rng)]


def sample_zoo(seed: int) -> list[type]:
    """One member of every family, drawn from ``seed`` (thresholds and members alike): the
    test suite's share of the zoo; ``LORA_ZOO_FULL=1`` asks for :func:`draw_zoo`'s whole."""
    if os.environ.get(FULL_ENV, "0") == "1":
        return draw_zoo(seed)
    rng = random.Random(seed)
    return [rng.choice(family.draw(rng)) for family in FAMILIES]


def describe(zoo: list[type]) -> str:
    return "\n".join(f"  {m.__name__}: {m.__doc__}" for m in zoo)
