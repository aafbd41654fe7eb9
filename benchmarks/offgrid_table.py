"""The off-grid table of BENCHMARKS.md: the Triton backend before and after the expand change,
against one adapter's cuBLAS calls (torch) and PyTorch's grouped GEMM, with the targets of
issue 14.

Usage: python benchmarks/offgrid_table.py BEFORE/bench.json[,...] AFTER/bench.json[,...]
       python benchmarks/offgrid_table.py --peers bench.json [bench.json ...]
           (every provider of one run, on one or both GPUs of a host, and the fastest peer over
           triton)
       python benchmarks/offgrid_table.py --variants LABEL=bench.json[,bench.json ...] ...
           (the triton rows of several runs of the same cases, e.g. one per launch variant on
           one GPU, and each run's geometric mean time against the first's)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import geometric_mean


def _rows(path: str) -> tuple[dict[tuple[str, str], dict], dict]:
    """The rows of one bench.json by (workload, provider), and its machine; ``path`` may name
    several files of one run, joined by commas (the machine is the first's)."""
    rows, machines = {}, []
    for one in path.split(","):
        doc = json.loads(Path(one).read_text())
        rows.update({(r["workload"], r["provider"]): r for r in doc["rows"]})
        machines.append(doc["machine"])
    return rows, machines[0]


def target(row: dict, torch_us: float | None) -> tuple[str, bool]:
    """Issue 14's target of a case, and whether ``row`` (the Triton row) meets it."""
    if row["layout"].startswith("decode"):
        bound = 1.5 * max(row["floor_us"], torch_us or 0.0)
        return f"<= {bound:.1f} us", row["us"] <= bound
    need = 75 if row["op"].startswith("shrink") else 60
    return f">= {need}% BW", row["pct_of_copy_bw"] >= need


def main(before_path: str, after_path: str) -> None:
    before, old_machine = _rows(before_path)
    after, machine = _rows(after_path)
    print(f"Card: {machine['gpu']}, driver {machine['driver']}, torch {machine['torch']}, "
          f"triton {machine['triton']}; copy bandwidth {machine['copy_bw_gbs']:.0f} GB/s "
          f"(after), {machine['date']}\n")  # fmt: skip
    print(
        "| workload | before us (% BW) | after us (% BW) | torch us | grouped_mm us | target "
        "| met | grouped_mm / after |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    pct = {"before": [], "after": []}
    met = {"before": 0, "after": 0}
    for (workload, provider), row in after.items():
        if provider != "triton":
            continue
        old = before.get((workload, "triton"))
        torch_row = after.get((workload, "torch"))
        gmm = after.get((workload, "grouped_mm"))
        torch_us = torch_row["us"] if torch_row else None
        text, ok = target(row, torch_us)
        # a "before" run without torch is judged with the "after" run's torch time
        old_torch = before.get((workload, "torch"), {}).get("us") or torch_us
        old_ok = target(old, old_torch)[1] if old else False
        met["after"] += ok
        met["before"] += old_ok
        pct["after"].append(row["pct_of_copy_bw"])
        if old:
            pct["before"].append(old["pct_of_copy_bw"])
        gmm_us = gmm["us"] if gmm and gmm["us"] else None
        ratio = f"{gmm_us / row['us']:.2f}x" if gmm_us else "-"
        print(
            f"| {workload} | {old['us']:.1f} ({old['pct_of_copy_bw']:.0f}%) | "
            f"{row['us']:.1f} ({row['pct_of_copy_bw']:.0f}%) | {torch_us or 0:.1f} | "
            f"{gmm_us or 0:.1f} | {text} | {'yes' if ok else 'no'} | {ratio} |"
        )
    for k in ("before", "after"):
        g = geometric_mean(pct[k])
        print(f"\n{k}: geometric mean {g:.1f}% of copy BW over {len(pct[k])} cases; "
              f"target met in {met[k]}")  # fmt: skip
    # each run's % uses its own GPU's copy bandwidth; the times against one bandwidth
    scale = old_machine["copy_bw_gbs"] / machine["copy_bw_gbs"]
    if abs(scale - 1) > 0.005:
        print(f"\nbefore, against the after run's copy bandwidth "
              f"({old_machine['copy_bw_gbs']:.0f} -> {machine['copy_bw_gbs']:.0f} GB/s): "
              f"geometric mean {geometric_mean(pct['before']) * scale:.1f}%")  # fmt: skip


def _short(provider: str) -> str:
    """``vllm`` for ``conformance.peers.vllm_backend:VLLMBackend``, ``sglang-csgmv`` for
    ``...:SGLangCsgmvBackend``; registry names unchanged."""
    if ":" not in provider:
        return provider
    cls = provider.split(":")[-1].removesuffix("Backend")
    return "sglang-" + cls[len("SGLang") :].lower() if cls.startswith("SGLang") else cls.lower()


def peers(*paths: str) -> None:
    """One row per case: every provider's time, and the fastest peer over triton.  torch (one
    adapter's cuBLAS calls, which ignore the batch's adapters) is shown, not counted a peer.
    Several files (one per GPU of a host) are read as one run."""
    rows, machine = _rows(",".join(paths))
    providers = list(dict.fromkeys(p for _, p in rows))
    others = [p for p in providers if p not in ("triton", "torch")]
    print(f"Card: {machine['gpu']}, driver {machine['driver']}, torch {machine['torch']}, "
          f"triton {machine['triton']}; copy bandwidth {machine['copy_bw_gbs']:.0f} GB/s, "
          f"{machine['date']}\n")  # fmt: skip
    print("| workload | " + " | ".join(f"{_short(p)} us" for p in providers)
          + " | fastest peer / triton |")  # fmt: skip
    print("| --- |" + " ---: |" * (len(providers) + 1))
    wins = total = 0
    for workload in dict.fromkeys(w for w, _ in rows):
        us = {p: (rows.get((workload, p)) or {}).get("us") for p in providers}
        rival = (
            min((us[p], _short(p)) for p in others if us[p]) if any(us[p] for p in others) else None
        )
        cells = [f"{us[p]:.1f}" if us[p] else "-" for p in providers]
        ratio = f"{rival[0] / us['triton']:.2f}x ({rival[1]})" if rival and us["triton"] else "-"
        if rival and us["triton"]:
            total += 1
            wins += us["triton"] < rival[0]
        print(f"| {workload} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"\ntriton faster than every peer in {wins} of {total} cases")


def variants(*specs: str) -> None:
    """One row per case, one column per ``LABEL=file[,file ...]`` (its triton times); then each
    column's geometric mean time over the cases that every column has, against the first."""
    runs = {}
    for spec in specs:
        label, _, files = spec.partition("=")
        runs[label] = {w: r["us"] for (w, p), r in _rows(files)[0].items() if p == "triton"}
    labels = list(runs)
    print("| workload | " + " | ".join(f"{label} us" for label in labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    common = [w for w in runs[labels[0]] if all(w in runs[label] for label in labels)]
    for w in runs[labels[0]]:
        cells = [f"{runs[label][w]:.1f}" if w in runs[label] else "-" for label in labels]
        print(f"| {w} | " + " | ".join(cells) + " |")
    print(f"\ngeometric mean time against {labels[0]}, over {len(common)} cases: " + ", ".join(
        f"{label} {geometric_mean([runs[label][w] / runs[labels[0]][w] for w in common]):.3f}"
        for label in labels))  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "--peers":
        peers(*sys.argv[2:])
    elif sys.argv[1] == "--variants":
        variants(*sys.argv[2:])
    else:
        main(*sys.argv[1:3])
