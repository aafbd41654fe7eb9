"""A conformance case: the structure of one call, and the tensors it expands to.

Hypothesis draws a :class:`Case` (segment layout, adapters, shapes, dtype, flags and a seed);
:func:`build_inputs` turns it into tensors with a seeded generator, so a case is a small JSON
document that reproduces the same call on any machine.

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``r`` one adapter's rank,
``c`` stack count, ``N`` output dim (``Nq``/``Nkv`` for qkv).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from lora_ref import LoRABatchInfo, make_batch_info

OPS = ("shrink", "expand", "qkv", "gate_up")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
OP_METHODS = {
    "shrink": "run_lora_a_sgemm",
    "expand": "run_lora_b_sgemm",
    "qkv": "run_qkv_lora",
    "gate_up": "run_gate_up_lora",
}
POISONS = {"nan": float("nan"), "huge": 3.0e4}


@dataclass(frozen=True)
class Case:
    """The structure of one call; tensors come from ``seed``.

    Attributes:
        op: ``shrink``, ``expand``, ``qkv`` or ``gate_up``.
        dtype: ``float16``, ``bfloat16`` or ``float32``.
        seg_lens: tokens per segment (``bs`` entries, zeros allowed).
        weight_indices: slot of each segment.
        lora_ranks: rank of each of the ``L`` slots (0: no adapter).
        scalings: scaling of each slot.
        R: pool rank (``>= max(lora_ranks)``).
        K: input dim (shrink, qkv, gate_up).
        N: output dim: expand ``N``, gate_up half width, qkv ``Nq``.
        n_kv: qkv ``Nkv`` (0 for other ops).
        stack: shrink ``stack_num`` (1 for expand; 3 qkv; 2 gate_up).
        permute: use a random ``permutation``.
        has_base: pass a ``base_output``.
        poison: what fills the garbage regions beyond each adapter's rank (``nan`` or ``huge``).
        seed: seed of every tensor value.
        layout: the layout family's label (for reports only).
        split_b: pass the fused expand weights in SPEC.md's split layout (qkv, gate_up).
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

    @property
    def T(self) -> int:
        return sum(self.seg_lens)

    @property
    def L(self) -> int:
        return len(self.lora_ranks)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def out_dim(self) -> int:
        """Columns of the result: ``c*R`` (shrink), ``N``, ``Nq+2*Nkv`` or ``2N``."""
        return {
            "shrink": self.stack * self.R,
            "expand": self.N,
            "qkv": self.N + 2 * self.n_kv,
            "gate_up": 2 * self.N,
        }[self.op]

    @property
    def slices(self) -> list[tuple[int, int]]:
        """Column ranges of the expand slices (one for expand, two for gate_up, three for qkv)."""
        if self.op == "qkv":
            o = [0, self.N, self.N + self.n_kv, self.N + 2 * self.n_kv]
            return list(itertools.pairwise(o))
        if self.op == "gate_up":
            return [(0, self.N), (self.N, 2 * self.N)]
        return [(0, self.N)]

    def describe(self) -> str:
        """A short call signature for failure messages."""
        shape = f"K={self.K}, N={self.N}" + (f", Nkv={self.n_kv}" if self.op == "qkv" else "")
        return (
            f"{OP_METHODS[self.op]}({self.dtype}, seg_lens={list(self.seg_lens)}, "
            f"weight_indices={list(self.weight_indices)}, lora_ranks={list(self.lora_ranks)}, "
            f"scalings={list(self.scalings)}, R={self.R}, {shape}, stack={self.stack}, "
            f"permute={self.permute}, base={self.has_base}, poison={self.poison}, seed={self.seed})"
        )

    def batch_info(
        self,
        device: torch.device | str,
        permutation: list[int] | None = None,
        capacity: int | None = None,
    ) -> LoRABatchInfo:
        """This case's segments and adapters as a batch info on ``device``."""
        return make_batch_info(
            self.seg_lens,
            self.weight_indices,
            self.lora_ranks,
            self.scalings,
            permutation=permutation,
            device=device,
            capacity=capacity,
        )

    def replace(self, **changes: Any) -> Case:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"case: unknown fields {sorted(unknown)}")
        tuples = {"seg_lens", "weight_indices", "lora_ranks", "scalings"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


class Inputs(NamedTuple):
    """The tensors of one call.  ``args`` are the operation's positional arguments after ``x``."""

    batch_info: LoRABatchInfo
    x: torch.Tensor
    args: tuple[Any, ...]
    base: torch.Tensor | None


def _values(gen: torch.Generator, shape: tuple[int, ...], scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale


def _poison_rows(t: torch.Tensor, valid: int, value: float) -> None:
    """Fill rows ``>= valid`` of a ``(rows, cols)`` slice with ``value``."""
    t[valid:] = value


def build_inputs(case: Case, device: torch.device | str) -> Inputs:
    """Expand ``case`` into tensors on ``device``.  Same case, same tensors, on every machine.

    Garbage regions (``A`` rows ``>= c*r``, ``B`` columns ``>= r``, and for the plain expand the
    input columns ``>= r`` of each row) hold ``case.poison``; a backend that reads them fails.
    """
    gen = torch.Generator().manual_seed(case.seed)
    dtype = case.torch_dtype
    poison = POISONS[case.poison]
    T, L, R = case.T, case.L, case.R
    perm = torch.randperm(T, generator=gen).tolist() if case.permute else None
    info = case.batch_info(device, permutation=perm)

    def to_device(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).to(device)

    c = {"shrink": case.stack, "expand": 1, "qkv": 3, "gate_up": 2}[case.op]
    base = None
    if case.has_base and case.op != "shrink":
        base = to_device(_values(gen, (T, case.out_dim), 1.0))

    if case.op == "expand":
        # expand input: row t holds its adapter's r values, then garbage
        x = _values(gen, (T, R), 1.0)
        row_rank = [case.lora_ranks[w] for w in _physical_row_slots(case, perm)]
        for t, r in enumerate(row_rank):
            x[t, r:] = poison
        B = _expand_weights(gen, case, R, poison)
        return Inputs(info, to_device(x), (to_device(B),), base)

    x = _values(gen, (T, case.K), 1.0)
    A = _values(gen, (L, c * R, case.K), case.K**-0.5)
    for w, r in enumerate(case.lora_ranks):
        _poison_rows(A[w], c * r, poison)
    if case.op == "shrink":
        return Inputs(info, to_device(x), (to_device(A), case.stack), None)
    B = to_device(_expand_weights(gen, case, R, poison))
    if case.op == "gate_up":
        lora_b = (B[:, : case.N], B[:, case.N :]) if case.split_b else B
        return Inputs(info, to_device(x), (to_device(A), lora_b), base)
    if case.split_b:
        q, k = case.N, case.N + case.n_kv
        B = (B[None, :, :q], torch.stack([B[:, q:k], B[:, k:]]))
    offsets = torch.tensor(
        [0, case.N, case.N + case.n_kv, case.N + 2 * case.n_kv], dtype=torch.int32, device=device
    )
    return Inputs(info, to_device(x), (to_device(A), B, offsets, max(case.N, case.n_kv)), base)


def _expand_weights(gen: torch.Generator, case: Case, R: int, poison: float) -> torch.Tensor:
    B = _values(gen, (case.L, case.out_dim, R), max(R, 1) ** -0.5)
    for w, r in enumerate(case.lora_ranks):
        B[w, :, r:] = poison
    return B


def _physical_row_slots(case: Case, perm: list[int] | None) -> list[int]:
    """The adapter slot of each physical row (logical row ``t`` is physical ``perm[t]``)."""
    slots = [0] * case.T
    t = 0
    for n, w in zip(case.seg_lens, case.weight_indices, strict=True):
        for _ in range(n):
            slots[perm[t] if perm is not None else t] = w
            t += 1
    return slots


def physical_row_slots(case: Case, info: LoRABatchInfo) -> list[int]:
    """The adapter slot of each physical row, as laid out by ``info``."""
    perm = info.permutation.tolist() if info.permutation is not None else None
    return _physical_row_slots(case, perm)


def physical_row_ranks(case: Case, info: LoRABatchInfo) -> list[int]:
    """The rank of each physical row's adapter, as laid out by ``info``."""
    return [case.lora_ranks[w] for w in physical_row_slots(case, info)]


def call(backend: Any, case: Case, inputs: Inputs, base: torch.Tensor | None) -> torch.Tensor:
    """Invoke ``case.op`` on ``backend`` with ``inputs`` and the given ``base_output``."""
    method = getattr(backend, OP_METHODS[case.op])
    if case.op == "shrink":
        return method(inputs.x, *inputs.args)
    return method(inputs.x, *inputs.args, base_output=base)
