"""Benchmark workloads: model shapes x layouts x ranks x ops, with their byte and FLOP counts.

Letters: ``T`` tokens, ``K`` input dim, ``L`` adapters, ``R`` rank (every adapter has ``r = R``),
``c`` stack count, ``N`` output dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conformance.bench.grid import BENCH_OPS, LAYOUTS, MODELS  # noqa: F401
from lora_ref import LoRABatchInfo, make_batch_info


@dataclass(frozen=True)
class Workload:
    model: str
    op: str
    layout: str
    rank: int
    dtype: torch.dtype = torch.bfloat16

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
        return f"{self.model} {self.op} {self.layout} r={self.rank}"

    def used_adapters(self) -> int:
        return min(self.adapters, len([n for n in self.seg_lens if n]))

    def bytes_moved(self) -> int:
        """Unique bytes: each input read once, each output written once (the fused ops keep
        the shrink result on chip, so it is not counted)."""
        d, e = self.dims, self.dtype.itemsize
        T, R, A = self.T, self.rank, self.used_adapters()
        total = 0
        if d["K"]:
            total += T * d["K"] * e + A * d["c"] * R * d["K"] * e  # x and the shrink weights
        if not d["N"]:
            return total + T * d["c"] * R * e  # shrink output
        if not d["K"]:
            total += T * R * e  # the expand input
        return total + A * d["N"] * R * e + 2 * T * d["N"] * e  # expand weights, base in + out

    def flops(self) -> int:
        d = self.dims
        return 2 * self.T * (d["K"] * d["c"] * self.rank + d["N"] * self.rank)


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
    d, T, R, L = w.dims, w.T, w.rank, w.adapters
    slots = [i % L for i in range(len(w.seg_lens))]
    info = make_batch_info(w.seg_lens, slots, [R] * L, [0.5] * L, device=device)

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
