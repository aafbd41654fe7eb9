"""Every table of BENCHMARKS.md, COMPATIBILITY.md and the device runs, from the JSON they wrote.

Usage (repository root):
    python3 benchmarks/tables.py grid RUN [--before RUN]
        the Triton rows of a ``lora-conformance bench`` run beside one adapter's cuBLAS (torch)
        and grouped_mm, with each workload's target (conformance/bench/grid.py) and whether it
        is met; with --before, an earlier run's times as a column
    python3 benchmarks/tables.py peers RUN
        every provider of one run, and the fastest peer over triton
    python3 benchmarks/tables.py variants LABEL=RUN ...
        the Triton times of several runs of the same cases (e.g. one per launch variant), and
        each run's geometric mean time against the first's
    python3 benchmarks/tables.py space REPORT ...
        conformance reports: verdict, examples per second per group, failures, space reached
    python3 benchmarks/tables.py compat REPORT ...
        conformance reports as COMPATIBILITY.md rows, one per (backend, check, op, dtype)
    python3 benchmarks/tables.py corners REPORT
        a conformance report's examples per corner class and op (docs/suite.md), "n/a" where
        the op has no such class, "**0**" where one it promises was missed

RUN is a bench.json, or several of one run joined by commas (one per GPU of a host).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import geometric_mean

from conformance import space
from conformance.bench.grid import meets, target
from conformance.report import fmt_ratio


def _rows(path: str) -> tuple[dict[tuple[str, str], dict], dict]:
    """The rows of a run by (workload, provider), and its machine (the first file's)."""
    rows, machines = {}, []
    for one in path.split(","):
        doc = json.loads(Path(one).read_text())
        rows.update({(r["workload"], r["provider"]): r for r in doc["rows"]})
        machines.append(doc["machine"])
    return rows, machines[0]


def _card(machine: dict) -> str:
    return (
        f"Card: {machine['gpu']}, driver {machine['driver']}, torch {machine['torch']}, "
        f"triton {machine['triton']}; copy bandwidth {machine['copy_bw_gbs']:.0f} GB/s, "
        f"{machine['date']}\n"
    )


def grid(run: str, before: str | None) -> None:
    rows, machine = _rows(run)
    old = _rows(before)[0] if before else {}
    print(_card(machine))
    head = (
        "| workload | triton us (% BW) | torch us | triton / torch | grouped_mm us | target | met |"
    )
    print(head + (" before us |" if before else ""))
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |" + (" ---: |" if before else ""))
    pct, ratios, met = [], [], 0
    for (workload, provider), row in rows.items():
        if provider != "triton":
            continue
        torch_us = (rows.get((workload, "torch")) or {}).get("us")
        gmm_us = (rows.get((workload, "grouped_mm")) or {}).get("us")
        text, bound = target(row["layout"], row["op"], row["floor_us"], torch_us)
        ok = meets(row["layout"], row["us"], row["pct_of_copy_bw"], bound)
        met += ok
        pct.append(row["pct_of_copy_bw"])
        if torch_us:
            ratios.append(row["us"] / torch_us)
        cells = [
            f"{row['us']:.1f} ({row['pct_of_copy_bw']:.0f}%)",
            f"{torch_us:.1f}" if torch_us else "-",
            f"{row['us'] / torch_us:.2f}x" if torch_us else "-",
            f"{gmm_us:.1f}" if gmm_us else "-",
            text,
            "yes" if ok else "no",
        ]
        if before:
            was = (old.get((workload, "triton")) or {}).get("us")
            cells.append(f"{was:.1f}" if was else "-")
        print(f"| {workload} | " + " | ".join(cells) + " |")
    print(
        f"\ngeometric mean {geometric_mean(pct):.1f}% of copy BW over {len(pct)} cases; "
        f"target met in {met}"
        + (f"; geometric mean triton / torch {geometric_mean(ratios):.2f}x" if ratios else "")
    )


def _short(provider: str) -> str:
    """``vllm`` for ``conformance.peers.vllm_backend:VLLMBackend``, ``sglang-csgmv`` for
    ``...:SGLangCsgmvBackend``; registry names unchanged."""
    if ":" not in provider:
        return provider
    cls = provider.split(":")[-1].removesuffix("Backend")
    return "sglang-" + cls[len("SGLang") :].lower() if cls.startswith("SGLang") else cls.lower()


def peers(run: str) -> None:
    """torch (one adapter's cuBLAS calls, which ignore the batch's adapters) is shown, not
    counted a peer."""
    rows, machine = _rows(run)
    providers = list(dict.fromkeys(p for _, p in rows))
    others = [p for p in providers if p not in ("triton", "torch")]
    print(_card(machine))
    print("| workload | " + " | ".join(f"{_short(p)} us" for p in providers)
          + " | fastest peer / triton |")  # fmt: skip
    print("| --- |" + " ---: |" * (len(providers) + 1))
    wins = total = 0
    for workload in dict.fromkeys(w for w, _ in rows):
        us = {p: (rows.get((workload, p)) or {}).get("us") for p in providers}
        timed = [(us[p], _short(p)) for p in others if us[p]]
        rival = min(timed) if timed else None
        cells = [f"{us[p]:.1f}" if us[p] else "-" for p in providers]
        ratio = f"{rival[0] / us['triton']:.2f}x ({rival[1]})" if rival and us["triton"] else "-"
        if rival and us["triton"]:
            total += 1
            wins += us["triton"] < rival[0]
        print(f"| {workload} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"\ntriton faster than every peer in {wins} of {total} cases")


def variants(specs: list[str]) -> None:
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


def space_summary(paths: list[str]) -> None:
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{path}: no report ({exc})")
            continue
        groups = doc.get("groups", [])
        ran = [g for g in groups if g["outcome"] not in ("skip", "not run")]
        examples = sum(g["examples"] for g in ran)
        seconds = sum(g["seconds"] for g in ran)
        rate = examples / seconds if seconds else 0.0
        print(f"{path}: {doc.get('status')} {doc.get('verdict')}, {examples} examples in "
              f"{seconds:.0f} s of groups ({rate:.2f} examples/s), worst error/tolerance "
              f"{doc.get('worst_ratio')}")  # fmt: skip
        for g in ran:
            line = f"  {g['id']:32s} {g['outcome']:8s} {g['examples']:5d} in {g['seconds']:7.1f} s"
            if g.get("failure"):
                line += f"  {(g['failure'].get('messages') or [''])[0][:150]}"
            print(line)
        for op, counts in space.by_op(groups).items():
            reached = space.summary(counts)
            dims = ", ".join(
                f"{d} {space.cell(reached[d])}" for d in space.DIMENSIONS if d in reached
            )
            print(f"  space {op}: {dims}")


def compat(paths: list[str]) -> None:
    print("| backend | where | check | op | dtype | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in paths:
        report = json.loads(Path(path).read_text())
        env, backend = report["environment"], report["backend"]
        where = f"{env.get('gpu') or env['device']}, torch {env['torch']}, triton {env['triton']}"
        for g in report["groups"]:
            failure = g.get("failure") or {}
            if g["outcome"] == "skip":
                verdict = f"unsupported ({g['skip_reason']})"
            elif g["outcome"] == "pass":
                verdict = (
                    f"pass ({g['examples']} examples, worst err/tol {fmt_ratio(g['worst_ratio'])})"
                )
            elif failure:
                replay = Path(failure.get("file") or "-").name
                first = (failure.get("messages") or ["?"])[0]
                verdict = f"**{g['outcome']}**: {first[:140]} (replay `{replay}`)"
                if failure.get("flaky"):
                    verdict += "; flaky: the same input failed, then passed"
            else:
                verdict = f"{g['outcome']}: {(g.get('error') or '')[:140]}"
            print(
                f"| {backend['name']} {backend.get('version', '')} | {where} | {g['check']} | "
                f"{g['op']} | {g['dtype']} | {verdict} |"
            )


def corners(path: str) -> None:
    coverage = json.loads(Path(path).read_text())["coverage"]
    ops = list(coverage)
    names = list(dict.fromkeys(n for op in ops for n in coverage[op]["promised"]))
    print("| corner class | " + " | ".join(ops) + " |")
    print("| --- |" + " ---: |" * len(ops))
    for name in names:
        cells = []
        for op in ops:
            if name not in coverage[op]["promised"]:
                cells.append("n/a")
            else:
                count = coverage[op]["counts"].get(name, 0)
                cells.append(str(count) if count else "**0**")
        print(f"| `{name.replace('|', chr(92) + '|')}` | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("grid")
    p.add_argument("run")
    p.add_argument("--before")
    sub.add_parser("peers").add_argument("run")
    sub.add_parser("variants").add_argument("specs", nargs="+", metavar="LABEL=RUN")
    sub.add_parser("space").add_argument("reports", nargs="+")
    sub.add_parser("compat").add_argument("reports", nargs="+")
    sub.add_parser("corners").add_argument("report")
    args = parser.parse_args()
    if args.table == "grid":
        grid(args.run, args.before)
    elif args.table == "peers":
        peers(args.run)
    elif args.table == "variants":
        variants(args.specs)
    elif args.table == "space":
        space_summary(args.reports)
    elif args.table == "compat":
        compat(args.reports)
    else:
        corners(args.report)


if __name__ == "__main__":
    main()
