"""Benchmark workloads: model shapes x layouts x ranks x ops, with their byte and FLOP counts.

Letters: ``T`` tokens, ``K`` input dim, ``L`` adapters, ``R`` rank (every adapter has ``r = R``),
``c`` stack count, ``N`` output dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conformance.bench.grid import (  # noqa: F401
    BENCH_OPS,
    HETERO,
    HETERO_RANKS,
    LAYOUTS,
    MODEL_DTYPES,
    MODELS,
    RANK0_SHARE,
)
from lora_ref import LoRABatchInfo, make_batch_info


@dataclass(frozen=True)
class Workload:
    """One benchmark case.  ``rank`` is every adapter's rank, or ``HETERO`` (0): the ranks of
    ``HETERO_RANKS`` in turn, in a pool of rank 128.  The dtype is the model's
    (``MODEL_DTYPES``), bfloat16 by default."""

    model: str
    op: str
    layout: str
    rank: int

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, MODEL_DTYPES.get(self.model, "bfloat16"))

    @property
    def pool_rank(self) -> int:
        return max(HETERO_RANKS) if self.rank == HETERO else self.rank

    def slot_ranks(self) -> list[int]:
        """The rank of each slot (slot 0 has rank 0 in the rank-0-heavy layouts)."""
        L = self.adapters
        ranks = [HETERO_RANKS[i % len(HETERO_RANKS)] if self.rank == HETERO else self.rank
                 for i in range(L)]  # fmt: skip
        if self.layout in RANK0_SHARE:
            ranks[0] = 0
        return ranks

    def slots(self) -> list[int]:
        """The slot of each segment: round robin, or mostly slot 0 (rank 0) when the layout
        says so."""
        n, L = len(self.seg_lens), self.adapters
        share = RANK0_SHARE.get(self.layout)
        if share is None:
            return [i % L for i in range(n)]
        every = round(1 / (1 - share))
        return [0 if i % every else 1 + (i // every) % (L - 1) for i in range(n)]

    def row_ranks(self) -> list[int]:
        ranks = self.slot_ranks()
        return [
            ranks[w] for w, n in zip(self.slots(), self.seg_lens, strict=True) for _ in range(n)
        ]

    @property
    def dims(self) -> dict[str, int]:
        m = MODELS[self.model]
        return {
            "shrink": dict(K=m["hidden"], c=1, N=0),
            "shrink_qkv": dict(K=m["hidden"], c=3, N=0),
            "shrink_down": dict(K=m["inter"], c=1, N=0),
            "expand": dict(K=0, c=1, N=m["hidden"]),
            "qkv": dict(K=m["hidden"], c=3, N=m["q"] + 2 * m["kv"], Nq=m["q"], Nkv=m["kv"]),
            "gate_up": dict(K=m["hidden"], c=2, N=2 * m["inter"]),
        }[self.op]

    @property
    def seg_lens(self) -> list[int]:
        return LAYOUTS[self.layout][0]

    @property
    def adapters(self) -> int:
        return LAYOUTS[self.layout][1]

    @property
    def T(self) -> int:
        return sum(self.seg_lens)

    @property
    def label(self) -> str:
        rank = "8..128" if self.rank == HETERO else str(self.rank)
        return f"{self.model} {self.op} {self.layout} r={rank}"

    def used_ranks(self) -> list[int]:
        """The rank of each distinct adapter some segment uses."""
        ranks = self.slot_ranks()
        used = {w for w, n in zip(self.slots(), self.seg_lens, strict=True) if n}
        return [ranks[w] for w in sorted(used)]

    def bytes_moved(self) -> int:
        """Unique bytes: each input read once (an adapter's weights at its own rank), each
        output written once (the fused ops keep the shrink result on chip, so it is not
        counted); rows without an adapter move only their base."""
        d, e = self.dims, self.dtype.itemsize
        T, R = self.T, self.pool_rank
        ranks = self.used_ranks()
        total = 0
        if d["K"]:
            total += T * d["K"] * e + sum(d["c"] * r * d["K"] for r in ranks) * e
        if not d["N"]:
            return total + T * d["c"] * R * e  # shrink output
        if not d["K"]:
            total += T * R * e  # the expand input
        return total + sum(d["N"] * r for r in ranks) * e + 2 * T * d["N"] * e

    def flops(self) -> int:
        d = self.dims
        return 2 * sum(d["K"] * d["c"] * r + d["N"] * r for r in self.row_ranks())


@dataclass
class WorkloadInputs:
    """One input set of a workload (benchmarks rotate several to keep the L2 cache cold)."""

    info: LoRABatchInfo
    x: torch.Tensor
    A: torch.Tensor | None
    B: torch.Tensor | None
    base: torch.Tensor | None
    offsets: torch.Tensor | None

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (self.x, self.A, self.B, self.base)
            if t is not None
        )


def make_inputs(w: Workload, device: torch.device, seed: int = 0) -> WorkloadInputs:
    g = torch.Generator(device=device).manual_seed(seed)
    d, T, R, L = w.dims, w.T, w.pool_rank, w.adapters
    info = make_batch_info(w.seg_lens, w.slots(), w.slot_ranks(), [0.5] * L, device=device)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * scale).to(
            w.dtype
        )

    A = randn(L, d["c"] * R, d["K"], scale=d["K"] ** -0.5) if d["K"] else None
    x = randn(T, d["K"]) if d["K"] else randn(T, R)
    B = randn(L, d["N"], R, scale=R**-0.5) if d["N"] else None
    base = randn(T, d["N"]) if d["N"] else None
    offsets = None
    if w.op == "qkv":
        o = [0, d["Nq"], d["Nq"] + d["Nkv"], d["N"]]
        offsets = torch.tensor(o, dtype=torch.int32, device=device)
    return WorkloadInputs(info, x, A, B, base, offsets)
