"""Sweep the Triton backend's launch configurations on the cases that miss their targets, timed
like ``lora-conformance bench`` (CUDA-graph replays, rotated inputs), every candidate in the same
run.  Each candidate's output is compared with the shipped rule's before it is timed.

Usage (on the device): python3 benchmarks/config_sweep.py OUT_DIR [shrink|expand|decode ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from conformance.bench.grid import HETERO
from conformance.bench.providers import get_provider
from conformance.bench.runner import Row, machine_info, markdown, write_json
from conformance.bench.timing import rotation_count, time_calls
from conformance.bench.workloads import Workload, make_inputs
from lora_triton import config
from lora_triton.config import ExpandConfig as E
from lora_triton.config import ShrinkConfig as S

M = "llama3-8b"
# round 2 (2026-11-29): the base tile prefetched one column tile ahead; round 1's lists and
# results are in benchmarks/results/2026-11-29-h200-speed/call1-sweep/
PREFILL_EXPAND = [
    E(64, 64, 4, 3, 8),
    E(64, 64, 4, 2, 8),
    E(64, 64, 4, 3, 4),
    E(64, 64, 8, 3, 8),
    E(64, 128, 4, 3, 4),
    E(32, 128, 4, 3, 8),
    E(128, 64, 4, 3, 8),
    E(128, 128, 8, 3, 4),
]
DECODE_EXPAND = [
    E(16, 128, 4, 3, 4),
    E(16, 128, 4, 4, 4),
    E(16, 128, 4, 3, 8),
    E(16, 64, 4, 3, 8),
    E(16, 256, 4, 3, 2),
]
PREFILL_SHRINK = [
    S(64, 64, 256, 1, 4, 3),
    S(64, 128, 64, 1, 4, 4),
    S(64, 128, 64, 1, 4, 3),
    S(128, 128, 128, 1, 8, 3),
    S(64, 128, 128, 1, 8, 3),
]
SWEEPS = {
    "expand": (
        "expand",
        PREFILL_EXPAND,
        [(M, "qkv", "prefill", 128), (M, "gate_up", "prefill", 128),
         (M, "gate_up", "prefill", HETERO), (M, "qkv", "mixed", HETERO),
         (M, "gate_up", "prefill", 16), (M, "qkv", "prefill", 16),
         (M, "gate_up", "mixed", 128), ("odd-fp16", "gate_up", "prefill", 96)],
    ),
    "decode": (
        "expand",
        DECODE_EXPAND,
        [(M, "gate_up", "decode128x64", 128), (M, "gate_up", "decode128x64", 16),
         (M, "gate_up", "decode128x64", HETERO), (M, "qkv", "decode128x64", 16),
         (M, "gate_up", "decode256-rank0", 128), (M, "qkv", "decode64", 16),
         (M, "expand", "decode64", 16), (M, "gate_up", "decode256", 16)],
    ),
    "shrink": (
        "shrink",
        PREFILL_SHRINK,
        [(M, "shrink_qkv", "prefill", 128), (M, "shrink_qkv", "prefill", 16),
         (M, "shrink_qkv", "mixed", 16), (M, "shrink_qkv", "mixed", 128),
         (M, "shrink_qkv", "prefill", HETERO), (M, "shrink", "prefill", 64)],
    ),
}  # fmt: skip


def _close(got: torch.Tensor, want: torch.Tensor, w: Workload) -> bool:
    if w.op.startswith("shrink"):
        # a shrink leaves columns past c*r of each row unspecified: compare the rest
        c = w.dims["c"]
        ranks = torch.tensor(w.row_ranks(), device=got.device)
        keep = torch.arange(got.shape[1], device=got.device)[None, :] < c * ranks[:, None]
        got, want = torch.where(keep, got, 0), torch.where(keep, want, 0)
    return bool(torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2))


def sweep(name: str, out: Path, rows: list[Row], machine) -> None:
    stage, candidates, cases = SWEEPS[name]
    make = get_provider("triton")
    bw = machine.copy_bw_gbs * 1e9
    for model, op, layout, rank in cases:
        w = Workload(model, op, layout, rank)
        first = make_inputs(w, torch.device("cuda"), seed=0)
        sets = [first] + [
            make_inputs(w, torch.device("cuda"), seed=s)
            for s in range(1, rotation_count(first.nbytes()))
        ]
        base = first.base.clone() if first.base is not None else None
        want = make(w, first)().clone()  # the shipped rule (fused ops write into base)
        for cfg in candidates:
            kw = {stage: cfg}
            with config.override(**kw):
                if base is not None:
                    first.base.copy_(base)
                ok = _close(make(w, first)(), want, w)
                us = time_calls([make(w, s) for s in sets]) * 1e6 if ok else None
            floor = w.bytes_moved() / bw * 1e6
            row = Row(w.label, model, op, layout, rank, "triton", us, floor,
                      100 * floor / us if us else None, w.flops() / us / 1e6 if us else None,
                      w.bytes_moved(), w.flops(), str(cfg) + ("" if ok else " WRONG"))  # fmt: skip
            rows.append(row)
            print(f"{w.label:<40} {us or 0:8.1f} us {row.pct_of_copy_bw or 0:4.0f}% {row.note}",
                  flush=True)  # fmt: skip
        del sets, first
        torch.cuda.empty_cache()
        (out / "sweep.md").write_text(markdown(rows, machine))
        write_json(out / "sweep.json", rows, machine)


def main(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(torch.device("cuda"))
    rows: list[Row] = []
    for name in names or list(SWEEPS):
        sweep(name, out, rows, machine)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
