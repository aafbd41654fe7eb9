"""Run the worst off-grid cases once each inside a profiler range, for Nsight Compute.

Each case is warmed up (compiled) outside the range, then called once inside
``cudaProfilerStart``/``Stop``, so ``ncu --profile-from-start off`` sees exactly one call per
case: the layout, shrink and expand kernels of the Triton backend.

Usage (on the device):
    ncu --profile-from-start off --section SpeedOfLight --metrics dram__bytes_read.sum,...
        (the metric names of METRICS)
        --csv python3 benchmarks/ncu_cases.py > ncu.csv
    python3 benchmarks/ncu_cases.py --table ncu.csv   # one row per kernel launch

``NCU_CASES="op:layout:rank op:layout:rank ..."`` (llama3-8b; rank 0: ranks 8..128) replaces
the cases.
"""

from __future__ import annotations

import csv
import os
import sys
from collections import defaultdict

CASES = [
    ("llama3-8b", "gate_up", "prefill", 128),
    ("llama3-8b", "qkv", "prefill", 128),
    ("llama3-8b", "gate_up", "mixed", 0),
    ("llama3-8b", "shrink_qkv", "prefill", 128),
    ("llama3-8b", "gate_up", "decode128x64", 128),
    ("llama3-8b", "qkv", "decode128x64", 16),
    ("llama3-8b", "shrink_qkv", "mixed", 16),
]
METRICS = {
    "Duration": "us",
    "DRAM Throughput": "dram %",
    "Compute (SM) Throughput": "sm %",
    "dram__bytes_read.sum": "read MB",
    "dram__bytes_write.sum": "write MB",
    "lts__t_bytes.sum": "L2 MB",
    "launch__registers_per_thread": "regs",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy %",
}


def profile() -> None:
    import torch

    from conformance.bench.providers import get_provider
    from conformance.bench.workloads import Workload, make_inputs

    make = get_provider("triton")
    device = torch.device("cuda")
    chosen = os.environ.get("NCU_CASES")
    cases = CASES if not chosen else [
        ("llama3-8b", op, lay, int(r)) for op, lay, r in (c.split(":") for c in chosen.split())
    ]  # fmt: skip
    for case in cases:
        w = Workload(*case)
        call = make(w, make_inputs(w, device))
        call()
        call()
        torch.cuda.synchronize()
        print(f"# case {w.label}", file=sys.stderr, flush=True)
        torch.cuda.cudart().cudaProfilerStart()
        call()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()


def _scaled(name: str, unit: str, value: str) -> float:
    v = float(value.replace(",", ""))
    scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3,
             "byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}  # fmt: skip
    return v * scale.get(unit, 1.0) if name != "DRAM Throughput" else v


def metric_names() -> str:
    """The raw metrics to ask ncu for (``--metrics``), besides its SpeedOfLight section."""
    return ",".join(m for m in METRICS if "_" in m)


def table(path: str) -> str:
    """One Markdown row per profiled kernel, in launch order (cases in ``CASES`` order)."""
    launches: dict[str, dict[str, object]] = defaultdict(dict)
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]
    for rec in csv.DictReader(lines):
        name = rec.get("Metric Name", "")
        if name not in METRICS:
            continue
        launch = launches[rec["ID"]]
        launch["kernel"] = rec["Kernel Name"].split("(")[0]
        launch[METRICS[name]] = _scaled(name, rec.get("Metric Unit", ""), rec["Metric Value"])
    cols = ["kernel", *METRICS.values()]
    out = ["| # | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    for i, (_, launch) in enumerate(sorted(launches.items(), key=lambda kv: int(kv[0]))):
        cells = [f"{launch.get(c, '-'):.1f}" if isinstance(launch.get(c), float)
                 else str(launch.get(c, "-")) for c in cols]  # fmt: skip
        out.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(table(sys.argv[2]), end="")
    elif sys.argv[1:2] == ["--metrics"]:
        print(metric_names())
    else:
        profile()
