"""Sweep the expand's column tiles per program (``ExpandConfig.n_per_prog``) on the cases the
first grid misses, timed like ``lora-conformance bench`` (CUDA-graph replays, rotated inputs).

Usage (on the device): python3 benchmarks/expand_sweep.py OUT_DIR
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from conformance.bench.grid import HETERO
from conformance.bench.runner import machine_info, markdown, measure, write_json
from conformance.bench.workloads import Workload
from lora_triton import config

CASES = [
    ("llama3-8b", "qkv", "prefill", 16),
    ("llama3-8b", "qkv", "prefill", 128),
    ("llama3-8b", "qkv", "mixed", HETERO),
    ("llama3-8b", "gate_up", "prefill", 16),
    ("llama3-8b", "gate_up", "prefill", 128),
    ("llama3-8b", "gate_up", "mixed", HETERO),
    ("llama3-8b", "expand", "prefill", 64),
    ("odd-fp16", "gate_up", "prefill", 96),
    ("llama3-8b", "gate_up", "decode128x64", 64),
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    machine = machine_info(device)
    rows = []
    for model, op, layout, rank in CASES:
        w = Workload(model, op, layout, rank)
        T, R = w.T, w.pool_rank
        base = config.expand_config(T, R, w.dims["N"])
        for n_per_prog in (1, 2, 4, 8):
            for stages in {base.num_stages, 3} if n_per_prog > 1 else {base.num_stages}:
                cfg = dataclasses.replace(base, n_per_prog=n_per_prog, num_stages=stages)
                with config.override(expand=cfg):
                    row = measure(w, "triton", device, machine.copy_bw_gbs * 1e9, note=str(cfg))
                print(f"{w.label:<40} {row.us or 0:8.1f} us {row.pct_of_copy_bw or 0:4.0f}% {cfg}",
                      flush=True)  # fmt: skip
                rows.append(row)
        (out / "sweep.md").write_text(markdown(rows, machine))
        write_json(out / "sweep.json", rows, machine)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
