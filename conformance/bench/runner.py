"""Run a benchmark grid and report it: table, JSON, roofline plot.

Every time is a CUDA-graph replay median (see :mod:`conformance.bench.timing`).  The floor of a
workload is its unique bytes over the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import datetime
import json
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from conformance.bench.providers import get_provider
from conformance.bench.timing import copy_bandwidth, rotation_count, time_calls
from conformance.bench.workloads import Workload, make_inputs


@dataclass
class Row:
    workload: str
    model: str
    op: str
    layout: str
    rank: int
    provider: str
    us: float | None
    floor_us: float
    pct_of_copy_bw: float | None
    tflops: float | None
    bytes: int
    flops: int
    note: str = ""


@dataclass
class Machine:
    gpu: str
    driver: str
    torch: str
    triton: str
    copy_bw_gbs: float
    date: str


def machine_info(device: torch.device) -> Machine:
    from conformance.machine import driver_version
    from conformance.versions import package_version

    return Machine(
        gpu=torch.cuda.get_device_name(device),
        driver=driver_version() or "?",
        torch=torch.__version__,
        triton=package_version("triton"),
        copy_bw_gbs=copy_bandwidth(device) / 1e9,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def measure(w: Workload, provider: str, device: torch.device, bw: float, note: str = "") -> Row:
    """Time one provider on one workload, rotating input sets to keep the L2 cold."""
    floor = w.bytes_moved() / bw
    row = Row(
        w.label,
        w.model,
        w.op,
        w.layout,
        w.rank,
        provider,
        None,
        floor * 1e6,
        None,
        None,
        w.bytes_moved(),
        w.flops(),
        note,
    )
    try:
        make = get_provider(provider)
        first = make_inputs(w, device, seed=0)
        sets = [first] + [
            make_inputs(w, device, seed=s) for s in range(1, rotation_count(first.nbytes()))
        ]
        calls = [make(w, s) for s in sets]
        if any(c is None for c in calls):
            row.note = "unsupported"
            return row
        try:
            seconds = time_calls(calls)
        except Exception as exc:  # a provider that cannot be graph-captured is timed eagerly
            torch.cuda.synchronize()
            seconds = time_calls(calls, use_graph=False)
            row.note = (row.note + f" no graph ({type(exc).__name__})").strip()
    except Exception as exc:
        row.note = f"error: {type(exc).__name__}: {exc}"[:200]
        traceback.print_exc()
        return row
    finally:
        torch.cuda.empty_cache()
    row.us = seconds * 1e6
    row.pct_of_copy_bw = 100 * floor / seconds
    row.tflops = w.flops() / seconds / 1e12
    return row


def markdown(rows: list[Row], machine: Machine) -> str:
    out = [
        f"GPU: {machine.gpu} (driver {machine.driver}); "
        f"torch {machine.torch}, triton {machine.triton}; "
        f"measured copy bandwidth {machine.copy_bw_gbs:.0f} GB/s; {machine.date}",
        "",
        "| workload | provider | us | floor us | % of copy BW | TFLOP/s | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        us = f"{r.us:.1f}" if r.us is not None else "-"
        pct = f"{r.pct_of_copy_bw:.0f}%" if r.pct_of_copy_bw is not None else "-"
        tf = f"{r.tflops:.1f}" if r.tflops is not None else "-"
        out.append(
            f"| {r.workload} | {r.provider} | {us} | {r.floor_us:.1f} | {pct} | {tf} | {r.note} |"
        )
    return "\n".join(out) + "\n"


def write_json(path: Path, rows: list[Row], machine: Machine) -> None:
    path.write_text(
        json.dumps({"machine": asdict(machine), "rows": [asdict(r) for r in rows]}, indent=1) + "\n"
    )


def roofline_plot(path: Path, rows: list[Row], machine: Machine) -> None:
    """Achieved GB/s per case against the measured copy bandwidth; a point per (case, provider)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    providers = sorted({r.provider for r in rows})
    for p in providers:
        pts = [
            (r.flops / r.bytes, r.bytes / (r.us * 1e-6) / 1e9)
            for r in rows
            if r.provider == p and r.us
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=False), label=p, s=18, alpha=0.8)
    ax.axhline(
        machine.copy_bw_gbs,
        color="k",
        ls="--",
        lw=1,
        label=f"copy bandwidth {machine.copy_bw_gbs:.0f} GB/s",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / unique byte)")
    ax.set_ylabel("achieved GB/s (unique bytes / time)")
    ax.set_title(f"multi-LoRA kernels on {machine.gpu}, {machine.date[:10]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_grid(
    workloads: list[Workload],
    providers: list[str],
    device: torch.device,
    machine: Machine,
    out: Path | None = None,
    name: str = "bench",
    on_row=None,
) -> list[Row]:
    """Time every provider on every workload; rewrite ``<name>.md``/``.json`` in ``out`` as rows
    come in, so a run cut short keeps what it measured."""
    rows: list[Row] = []
    bw = machine.copy_bw_gbs * 1e9
    for w in workloads:
        for provider in providers:
            rows.append(measure(w, provider, device, bw))
            if on_row is not None:
                on_row(rows[-1])
        if out is not None:
            (out / f"{name}.md").write_text(markdown(rows, machine))
            write_json(out / f"{name}.json", rows, machine)
    return rows
