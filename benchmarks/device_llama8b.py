"""Issue 3's benchmark: the Triton backend vs the torch floor vs SGLang 0.5.23, Llama-3-8B, bf16.

Run on a GPU (the device machine):

    python benchmarks/device_llama8b.py --out results/ [--sweep]

It measures the copy bandwidth first, then times every (op, layout, rank) with CUDA-graph
replay, rotating input sets so the L2 cache stays cold, and writes ``llama8b.md`` and
``llama8b.json``.  ``--sweep`` also times alternative Triton launch configurations, to check the
heuristics in ``lora_triton/config.py``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.bench.runner import machine_info, markdown, measure, run_grid, write_json
from conformance.bench.workloads import Workload
from lora_triton import config as triton_config
from lora_triton.config import ExpandConfig, ShrinkConfig

OPS = ("shrink_qkv", "shrink", "shrink_down", "expand", "qkv", "gate_up")
LAYOUTS = ("prefill", "mixed", "decode64", "decode256")
RANKS = (16, 64)
PROVIDERS = ("triton", "torch", "sglang-triton", "sglang-csgmv")

# alternative launches, by batch kind: (shrink, expand) for long batches and for decode
SWEEP = {
    "long": (
        [
            ShrinkConfig(64, 64, 64, 1, 4, 5),
            ShrinkConfig(64, 128, 64, 1, 8, 4),
            ShrinkConfig(128, 64, 64, 1, 8, 4),
            ShrinkConfig(64, 256, 64, 1, 8, 3),
            ShrinkConfig(32, 64, 128, 1, 4, 4),
            ShrinkConfig(128, 128, 64, 1, 8, 3),
        ],
        [
            ExpandConfig(32, 128, 4, 2),
            ExpandConfig(64, 128, 8, 2),
            ExpandConfig(32, 256, 8, 2),
            ExpandConfig(64, 256, 8, 2),
            ExpandConfig(16, 256, 4, 2),
            ExpandConfig(128, 128, 8, 2),
        ],
    ),
    "decode": (
        [
            ShrinkConfig(16, 64, 256, 1, 4, 3),
            ShrinkConfig(16, 64, 128, 2, 4, 4),
            ShrinkConfig(16, 64, 128, 4, 4, 4),
            ShrinkConfig(16, 64, 128, 8, 4, 4),
            ShrinkConfig(16, 128, 128, 4, 4, 4),
            ShrinkConfig(16, 256, 64, 4, 8, 4),
        ],
        [
            ExpandConfig(16, 64, 4, 2),
            ExpandConfig(16, 128, 4, 2),
            ExpandConfig(16, 256, 4, 2),
            ExpandConfig(16, 256, 8, 2),
            ExpandConfig(32, 128, 4, 2),
        ],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--ops", nargs="+", default=list(OPS))
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    machine = machine_info(device)
    print(f"{machine.gpu}: copy bandwidth {machine.copy_bw_gbs:.0f} GB/s", flush=True)
    rows = []
    for op, layout, rank in itertools.product(args.ops, args.layouts, RANKS):
        w = Workload("llama3-8b", op, layout, rank)
        rows += run_grid([w], args.providers, device, machine, on_row=_print)
        if args.sweep:
            rows += _sweep(w, device, machine)
        # rewritten after every workload, so a run cut short keeps what it measured
        (args.out / "llama8b.md").write_text(
            markdown([r for r in rows if r.provider != "triton-sweep"], machine)
        )
        if args.sweep:
            (args.out / "llama8b_sweep.md").write_text(markdown(rows, machine))
        write_json(args.out / "llama8b.json", rows, machine)


def _print(r) -> None:
    us = f"{r.us:9.1f} us" if r.us is not None else "        - us"
    print(
        f"{r.workload:<36} {r.provider:<14} {us} {r.pct_of_copy_bw or 0:5.0f}% {r.note}", flush=True
    )


def _sweep(w: Workload, device: torch.device, machine) -> list:
    """Time the Triton backend under each alternative launch configuration."""
    key = "shrink" if w.op.startswith("shrink") else "expand"
    shrinks, expands = SWEEP["decode" if w.layout.startswith("decode") else "long"]
    rows = []
    for cfg in shrinks if key == "shrink" else expands:
        with triton_config.override(**{key: cfg}):
            r = measure(w, "triton", device, machine.copy_bw_gbs * 1e9, note=f"sweep {cfg}")
        r.provider = "triton-sweep"
        _print(r)
        rows.append(r)
    return rows


if __name__ == "__main__":
    main()
