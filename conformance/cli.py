"""``lora-conformance``: check a backend, replay a saved failure, benchmark.

Exit codes: 0 everything passed, 1 a check failed, 2 a usage error (such as an unknown backend).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

from conformance import profiles
from conformance.case import DTYPES, OPS
from conformance.runner import PROPERTIES as CHECKS

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad command line: reported with exit code 2."""


def _prepare_device(requested: str | None) -> None:
    """``--device cpu`` (or no CUDA at all) means Triton kernels run in the interpreter.

    The variable must be set before any backend module defines its kernels.
    """
    import torch

    if requested == "cpu" or (requested is None and not torch.cuda.is_available()):
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible")


def _load_backend(name: str):
    from lora_ref import get_backend_from_name

    try:
        return get_backend_from_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _settings(profile: str, max_examples: int | None, seed: int | None, scale: float = 1.0):
    from hypothesis import settings

    base = settings.get_profile(profile)
    n = max_examples if max_examples is not None else base.max_examples
    n = max(1, math.ceil(n * scale))
    if seed is not None:
        return settings(base, max_examples=n, derandomize=False)
    return settings(base, max_examples=n)


def cmd_check(args: argparse.Namespace) -> int:
    _prepare_device(args.device)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from conformance.plugin import pick_device
    from conformance.replay import save_failure
    from conformance.runner import Report, run_group

    backend_cls = _load_backend(args.backend)
    device = pick_device(backend_cls, args.device)
    limits = profiles.limits_for(args.profile)
    ops = tuple(args.ops or OPS)
    dtypes = tuple(args.dtypes or DTYPES)
    checks = tuple(args.checks or CHECKS)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 132)
    version = backend_cls().version
    console.print(
        f"[bold]lora-conformance check[/] backend [cyan]{args.backend}[/] = "
        f"{backend_cls.__module__}:{backend_cls.__qualname__} ({version}) on {device}, "
        f"profile {args.profile}"
    )
    report = Report(args.backend, version, str(device), args.profile)

    plan = [("diff", op, dt) for op in ops for dt in dtypes if "diff" in checks]
    for check in ("metamorphic", "bad_input", "cuda_graph"):
        if check in checks:
            plan += [(check, op, dtypes[0]) for op in ops]
    scale = {"diff": 1.0, "metamorphic": 1.0, "bad_input": 0.25, "cuda_graph": 0.25}

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        overall = progress.add_task("groups", total=len(plan))
        for check, op, dtype in plan:
            hs = _settings(args.profile, args.max_examples, args.seed, scale[check])
            task = progress.add_task(f"{check:<11} {op:<8} {dtype:<9}", total=hs.max_examples)

            def tick(_result, task=task):
                progress.advance(task)

            stats = run_group(
                backend_cls,
                check,
                op,
                dtype,
                device,
                limits,
                hs,
                on_example=tick,
                seed=args.seed,
            )
            progress.update(task, completed=hs.max_examples)
            progress.advance(overall)
            if stats.failure is not None:
                name = (
                    f"{args.backend.replace(':', '_').replace('.', '_')}-{check}-{op}-{dtype}.json"
                )
                path = save_failure(Path(args.failures_dir) / name, stats.failure, args.backend)
                stats.failure.params = {**stats.failure.params, "saved_to": str(path)}
            report.groups.append(stats)

    _print_table(report, console)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(_report_json(report), indent=2) + "\n")
        console.print(f"report written to {args.report_json}")
    return EXIT_OK if report.ok else EXIT_FAIL


def _ratio(value: float) -> str:
    return "-" if value == 0 else f"{value:.3f}"


def _print_table(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"{report.backend} on {report.device} (profile {report.profile})")
    for col in ("check", "op", "dtype", "examples", "passed", "failed", "worst err/tol", "verdict"):
        table.add_column(
            col,
            justify="right" if col in ("examples", "passed", "failed", "worst err/tol") else "left",
        )
    for g in report.groups:
        if g.skipped:
            verdict = f"[yellow]skipped[/]: {g.skipped}"
        elif g.error:
            verdict = f"[red]error[/]: {g.error}"
        elif g.failed:
            verdict = "[red]FAIL[/]"
        else:
            verdict = "[green]pass[/]"
        table.add_row(
            g.prop,
            g.op,
            g.dtype,
            str(g.examples),
            str(g.passed),
            str(g.failed),
            _ratio(g.worst_ratio),
            verdict,
        )
    console.print(table)
    for g in report.groups:
        if g.failure is not None:
            console.print(
                f"[red]FAIL[/] {g.prop} {g.op} {g.dtype}: minimal case {g.failure.case.describe()}"
            )
            for line in g.failure.failures:
                console.print(f"    {line}")
            console.print(f"    replay: lora-conformance replay {g.failure.params.get('saved_to')}")
    passed = sum(g.passed for g in report.groups)
    verdict = "[green]PASS[/]" if report.ok else "[red]FAIL[/]"
    console.print(
        f"{verdict}: {passed} examples passed; worst error/tolerance {report.worst_ratio:.3f}"
    )


def _report_json(report) -> dict:
    import torch
    import triton

    return {
        "backend": report.backend,
        "version": report.version,
        "device": report.device,
        "profile": report.profile,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ok": report.ok,
        "worst_ratio": report.worst_ratio,
        "groups": [
            {
                "check": g.prop,
                "op": g.op,
                "dtype": g.dtype,
                "examples": g.examples,
                "passed": g.passed,
                "failed": g.failed,
                "worst_ratio": g.worst_ratio,
                "skipped": g.skipped,
                "error": g.error,
                "failure": None
                if g.failure is None
                else {
                    "case": g.failure.case.to_json(),
                    "failures": g.failure.failures,
                    "replay": g.failure.params.get("saved_to"),
                },
            }
            for g in report.groups
        ],
    }


def cmd_replay(args: argparse.Namespace) -> int:
    from conformance.replay import load_failure, replay

    try:
        doc = load_failure(args.file)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    _prepare_device(args.device)
    from conformance.plugin import pick_device

    name = args.backend or doc["backend"]
    backend_cls = _load_backend(name)
    device = pick_device(backend_cls, args.device)
    result = replay(doc, backend_cls, device)
    print(f"replay {args.file}: backend {name} on {device}, check {doc['check']}")
    print(f"case: {doc['case'].describe()}")
    if result.ok:
        print(
            f"PASS (worst error/tolerance {result.worst_ratio:.3f}): "
            "the saved failure no longer reproduces"
        )
        return EXIT_OK
    for line in result.failures:
        print(f"FAIL: {line}")
    return EXIT_FAIL


def cmd_bench(args: argparse.Namespace) -> int:
    import itertools

    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "bench times device work and needs a CUDA device; on a CPU the benchmark suite runs in "
            "smoke mode: pytest --pyargs conformance.benchsuite"
        )
    from rich.console import Console
    from rich.table import Table

    from conformance.bench.runner import machine_info, roofline_plot, run_grid
    from conformance.bench.workloads import Workload

    for name in args.providers:
        _load_provider(name)
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    machine = machine_info(device)
    console.print(f"{machine.gpu}: copy bandwidth {machine.copy_bw_gbs:.0f} GB/s (measured now)")
    grid = itertools.product(args.models, args.ops, args.layouts, args.ranks)
    workloads = [Workload(m, op, layout, r) for m, op, layout, r in grid]

    def show(row) -> None:
        us = f"{row.us:.1f} us" if row.us is not None else row.note
        console.print(f"{row.workload:<44} {row.provider:<14} {us}")

    rows = run_grid(workloads, list(args.providers), device, machine, out, "bench", show)
    table = Table(title=f"{machine.gpu}, copy bandwidth {machine.copy_bw_gbs:.0f} GB/s")
    for col in ("workload", "provider", "us", "floor us", "% copy BW", "TFLOP/s", "note"):
        table.add_column(col)
    for r in rows:
        pct = f"{r.pct_of_copy_bw:.0f}%" if r.pct_of_copy_bw is not None else "-"
        us = f"{r.us:.1f}" if r.us is not None else "-"
        tf = f"{r.tflops:.1f}" if r.tflops is not None else "-"
        table.add_row(r.workload, r.provider, us, f"{r.floor_us:.1f}", pct, tf, r.note)
    console.print(table)
    roofline_plot(out / "roofline.png", rows, machine)
    console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'roofline.png'}")
    return EXIT_OK


def _load_provider(name: str) -> None:
    from conformance.bench.providers import get_provider

    try:
        get_provider(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cmd_stats(args: argparse.Namespace) -> int:
    """Summarise a ``--lora-stats-file``: examples, failures and worst err/tol per test."""
    groups: dict[str, list[float]] = {}
    try:
        lines = Path(args.file).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"stats file {args.file}: {exc}") from exc
    for line in lines:
        entry = json.loads(line)
        g = groups.setdefault(entry["test"], [0, 0, 0.0])
        g[0] += 1
        g[1] += 0 if entry["ok"] else 1
        g[2] = max(g[2], entry["ratio"])
    for test, (n, failed, worst) in sorted(groups.items()):
        print(
            f"{test:<60} {int(n):>7} examples {int(failed):>4} failed   worst err/tol {worst:.3f}"
        )
    total = sum(int(g[0]) for g in groups.values())
    failed = sum(int(g[1]) for g in groups.values())
    worst = max((g[2] for g in groups.values()), default=0.0)
    print(f"{'all':<60} {total:>7} examples {failed:>4} failed   worst err/tol {worst:.3f}")
    return EXIT_OK if failed == 0 else EXIT_FAIL


def cmd_list(_args: argparse.Namespace) -> int:
    from lora_ref import known_backend_names

    for name in known_backend_names():
        print(name)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="run the conformance suite on a backend")
    check.add_argument("backend", help="built-in name, package.module:Class, or entry-point name")
    check.add_argument("--profile", choices=profiles.PROFILES, default=profiles.default_profile())
    check.add_argument(
        "--max-examples", type=int, default=None, help="examples per (check, op, dtype)"
    )
    check.add_argument(
        "--seed", type=int, default=None, help="random seed (turns derandomization off)"
    )
    check.add_argument("--device", choices=("cpu", "cuda"), default=None)
    check.add_argument("--report-json", default=None, help="write the results as JSON here")
    check.add_argument(
        "--failures-dir", default="conformance-failures", help="where minimal failing cases go"
    )
    check.add_argument("--ops", nargs="+", choices=OPS, default=None)
    check.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=None)
    check.add_argument("--checks", nargs="+", choices=CHECKS, default=None)
    check.set_defaults(func=cmd_check)

    rep = sub.add_parser("replay", help="re-run a saved minimal failing case")
    rep.add_argument("file")
    rep.add_argument("--backend", default=None, help="replay on another backend than the one saved")
    rep.add_argument("--device", choices=("cpu", "cuda"), default=None)
    rep.set_defaults(func=cmd_replay)

    from conformance.bench.workloads import LAYOUTS, MODELS
    from conformance.bench.workloads import OPS as BENCH_OPS

    bench = sub.add_parser(
        "bench", help="time backends side by side on a GPU (table, JSON, roofline PNG)"
    )
    bench.add_argument(
        "providers",
        nargs="*",
        default=["triton", "torch"],
        help="backend names ('triton', 'sglang-triton', 'sglang-csgmv', 'vllm', 'flashinfer', ...) "
        "and 'torch' (the one-adapter floor)",
    )
    bench.add_argument("--models", nargs="+", choices=list(MODELS), default=["llama3-8b"])
    bench.add_argument(
        "--ops", nargs="+", choices=BENCH_OPS, default=["shrink_qkv", "expand", "qkv", "gate_up"]
    )
    bench.add_argument(
        "--layouts", nargs="+", choices=list(LAYOUTS), default=["prefill", "mixed", "decode64"]
    )
    bench.add_argument("--ranks", nargs="+", type=int, default=[16, 64])
    bench.add_argument(
        "--out", default="bench-results", help="folder for bench.json, bench.md, roofline.png"
    )
    bench.set_defaults(func=cmd_bench)

    stats = sub.add_parser("stats", help="summarise a pytest --lora-stats-file")
    stats.add_argument("file")
    stats.set_defaults(func=cmd_stats)

    lst = sub.add_parser("list", help="list the known backend names")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors already
        return int(exc.code or 0)
    if getattr(args, "max_examples", None) is not None and args.max_examples < 1:
        print("lora-conformance: error: --max-examples: expected >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"lora-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
