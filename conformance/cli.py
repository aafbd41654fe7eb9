"""lora-conformance: check a multi-LoRA backend against the float64 reference, replay a saved
failure, time backends on a GPU, list the known backends.

Exit codes (check and replay): 0 pass; 1 a conformance failure (replay: the failure
reproduces); 2 a usage error (a bad option, an unknown backend, a corrupt replay file); 3 the
backend crashed or tried to end the process, or the harness failed; 4 interrupted, or an example
outlived its deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from conformance import profiles, settings
from conformance.api import OutputError, UsageError
from conformance.report import (
    ALONE_LINES,
    EXIT_CODES,
    EXIT_CRASH,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    EXIT_USAGE,
    GROUP_COLUMNS,
    corner_line,
    fmt_ratio,
    group_cells,
    verdict_line,
)
from conformance.versions import harness_version


def _console():
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 132, highlight=False)


# --- check ----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from conformance import api

    console = _console()
    shown = {"header": False}

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def on_progress(progress: dict, report: dict | None) -> None:
            if (
                report is not None
                and not shown["header"]
                and report.get("backend", {}).get("target")
            ):
                shown["header"] = True
                console.print(_header(report))
            plan = (report or {}).get("plan") or []
            done = len((report or {}).get("groups") or [])
            phase = progress.get("phase", "")
            counts = f"{progress.get('examples', 0)} examples"
            if phase == "shrinking":
                counts += f", shrinking: {progress.get('shrink_steps', 0)} steps"
            bar.update(
                task,
                description=f"{progress.get('group', '')} ({counts})",
                total=len(plan) or None,
                completed=done,
            )

        try:
            report = api.check(
                args.backend,
                **{api_name: getattr(args, api_name) for api_name in settings.API_NAMES},
                report_json=args.report_json,
                junit_xml=args.junit_xml,
                markdown=args.markdown,
                pytest_args=args.pytest_args,
                on_progress=on_progress,
            )
        except OutputError as exc:
            raise UsageError(f"{exc} (the run's verdict: {exc.report.verdict})") from exc
    doc = report.data
    if not shown["header"] and doc.get("backend", {}).get("target"):
        console.print(_header(doc))
    if doc.get("status") in ("usage_error", "backend_error"):
        console.print(f"[red]lora-conformance: error:[/] {doc.get('error')}")
        if args.verbose and doc.get("traceback"):
            console.print(doc["traceback"], markup=False)
        return report.exit_code
    _print_table(doc, console)
    if args.verbose and doc.get("log_tail"):
        console.print(doc["log_tail"], markup=False)
    for path, what in ((args.report_json, "JSON report"), (args.junit_xml, "JUnit XML"),
                       (args.markdown, "Markdown summary")):  # fmt: skip
        if path:
            console.print(f"{what} written to {path}")
    return report.exit_code


def _header(doc: dict) -> str:
    b, env, s = doc["backend"], doc.get("environment", {}), doc.get("settings", {})
    gpu = f" ({env['gpu']})" if env.get("gpu") else ""
    return (
        f"[bold]lora-conformance check[/] backend [cyan]{b['name']}[/] = {b['target']} "
        f"({b.get('version')}) on {env.get('device')}{gpu}; profile {s.get('profile')}, "
        f"seed {s.get('seed')}"
        + (f", shard {s['shard']}" if s.get("shard") else "")
        + (f", example database {s['example_db']}" if s.get("example_db") else "")
    )


def _print_table(doc: dict, console) -> None:
    from rich.table import Table

    b, env = doc.get("backend", {}), doc.get("environment", {})
    table = Table(title=f"{b.get('name')} on {env.get('device')} (profile "
                  f"{doc.get('settings', {}).get('profile')})")  # fmt: skip
    for col in GROUP_COLUMNS:
        table.add_column(col, justify="left" if col in ("group", "outcome") else "right")
    colors = {"pass": "green", "skip": "yellow"}
    for g in doc.get("groups", []):
        cells = list(group_cells(g))
        cells[1] = f"[{colors.get(g['outcome'], 'red')}]{cells[1]}[/]"
        table.add_row(*cells)
    console.print(table)
    for g in doc.get("groups", []):
        f = g.get("failure")
        if not f:
            continue
        console.print(f"[red]{g['outcome'].upper()}[/] {g['id']}:")
        for line in f.get("messages", [])[:6]:
            console.print(f"    {line}", markup=False)
        if f.get("case"):
            from conformance.case import Case, CaseError

            with contextlib.suppress(CaseError):
                console.print(f"    case: {Case.from_json(f['case']).describe()}", markup=False)
        if f.get("alone") in ALONE_LINES:
            console.print(f"    alone: {ALONE_LINES[f['alone']]}", markup=False)
        if f.get("file"):
            console.print(f"    replay: lora-conformance replay {f['file']}", markup=False)
    for op, entry in doc.get("coverage", {}).items():
        line = corner_line(op, entry)
        console.print(f"[yellow]{line}[/]" if entry.get("missed") else line, markup=True)
    _print_space(doc, console)
    totals = doc.get("totals", {})
    code = doc.get("exit_code")
    color = "green" if code == EXIT_PASS else "red"
    console.print(
        f"[{color}]{verdict_line(doc)}[/]: {totals.get('examples', 0)} examples "
        f"({totals.get('below_signal_floor', 0)} below the signal floor, not evidence), "
        f"{totals.get('shrink_steps', 0)} shrink steps, worst error/tolerance "
        f"{fmt_ratio(doc.get('worst_ratio'))} (exit {code}: {EXIT_CODES.get(code, '')})"
    )
    if doc.get("error"):
        console.print(f"[red]{doc['error']}[/]", markup=True)


def _print_space(doc: dict, console) -> None:
    """What the run reached of the input space, per op: per dimension the log2 bins of its
    range, the power-of-two boundaries (2^k - 1, 2^k, 2^k + 1) and the largest bin; the
    layouts, data modes, lifecycle steps and embedding id kinds.  Per group in the JSON report
    (``space``)."""
    from rich.table import Table

    from conformance import space

    per_op = {op: space.summary(c) for op, c in space.by_op(doc.get("groups", [])).items()}
    if not per_op:
        return
    dims = [d for d in space.DIMENSIONS if any(d in e for e in per_op.values())]
    table = Table(title="input space reached (per group: space in the JSON report)")
    table.add_column("dimension")
    for op in per_op:
        table.add_column(op)
    for d in dims:
        table.add_row(d, *(space.cell(e.get(d)) for e in per_op.values()))
    layouts = [sum(len(k) for k in e["layouts"].values()) for e in per_op.values()]
    table.add_row("layouts", *(f"{n} arg/kind pairs" for n in layouts))
    table.add_row("data", *(", ".join(e["data"]) for e in per_op.values()))
    steps = [len(e.get("lifecycle_steps", [])) for e in per_op.values()]
    if any(steps):
        table.add_row("lifecycle steps", *(f"{n} kinds" if n else "-" for n in steps))
    ids = [len(e.get("embedding_ids", [])) for e in per_op.values()]
    if any(ids):
        table.add_row("embedding ids", *(f"{n} kinds" if n else "-" for n in ids))
    console.print(table)


# --- merge ----------------------------------------------------------------------------------


def cmd_merge(args: argparse.Namespace) -> int:
    from conformance.api import check_writable
    from conformance.campaign import CampaignError, merge
    from conformance.failures import write_atomic
    from conformance.report import Report, write_report

    outputs = (("--report-json", args.report_json), ("--junit-xml", args.junit_xml),
               ("--markdown", args.markdown))  # fmt: skip
    try:
        for arg, path in outputs:
            if path is not None:
                check_writable(arg, Path(path))
        doc = merge(args.reports, args.shards)
    except CampaignError as exc:
        raise UsageError(str(exc)) from exc
    report = Report(doc)
    texts = (None, report.junit, report.markdown)
    for (arg, path), text in zip(outputs, texts, strict=True):
        if path is None:
            continue
        try:
            write_report(Path(path), doc) if text is None else write_atomic(Path(path), text())
        except OSError as exc:
            raise UsageError(f"{arg}: cannot write {path}: {exc.strerror or exc}") from exc
    console = _console()
    camp = doc["campaign"]
    console.print(
        f"[bold]lora-conformance merge[/]: {len(camp['merged'])} of {camp['count']} shards' "
        f"reports, campaign seed {camp['seed']}, backend {doc['backend'].get('name')}"
    )
    _print_table(doc, console)
    return report.exit_code


# --- replay ---------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from conformance.failures import ReplayFileError, file_backend_is_safe, load_failure

    try:
        doc = load_failure(args.file, args.max_elements)
    except ReplayFileError as exc:
        raise UsageError(f"{args.file}: {exc}") from exc
    name = args.backend or doc["backend"]
    if not args.backend and not args.trust and not file_backend_is_safe(name):
        raise UsageError(
            f"{args.file} names the backend {name!r}, which is neither a built-in nor an "
            "installed entry point: replaying it would import code the file names.  Name the "
            "backend with --backend NAME, or pass --trust"
        )
    if args.emit_script:
        return _emit(args, doc, name)
    from conformance.checks import Example
    from conformance.isolate import IsolatedBackend, WorkerStartError

    worker = IsolatedBackend(name, args.device or "auto", args.deadline or None)
    try:
        worker.start()
    except WorkerStartError as exc:
        print(f"lora-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.status == "usage_error" else EXIT_CRASH
    try:
        result = worker.run(doc["check"], Example(doc["case"], doc["params"]))
    except WorkerStartError as exc:
        raise UsageError(f"{args.file}: {exc}") from exc
    finally:
        worker.close()
    print(f"replay {args.file}: backend {name} ({worker.version}) on {worker.resolved_device}, "
          f"check {doc['check']}")  # fmt: skip
    print(f"case: {doc['case'].describe()}")
    if result.ok:
        print(f"PASS (worst error/tolerance {fmt_ratio(result.worst_ratio)}): "
              "the saved failure no longer reproduces")  # fmt: skip
        if doc.get("alone") == "passes":
            print(f"the run that saved this case saw the same: it {ALONE_LINES['passes']}")
        return EXIT_PASS
    for line in result.failures:
        print(f"{result.kind.upper()}: {line}")
    if result.kind == "fail" or result.kind == doc["kind"]:
        return EXIT_FAIL
    return EXIT_INTERRUPTED if result.kind == "timeout" else EXIT_CRASH


def _emit(args: argparse.Namespace, doc: dict, name: str) -> int:
    from conformance.repro import emit_script
    from lora_ref.registry import backend_target

    target = backend_target(name)
    if target is None:
        raise UsageError(f"--emit-script: backend {name!r} is not a known name or module:Class")
    try:
        text = emit_script(doc, target, args.device or doc["case"].to_json().get("device", "cpu"))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    from conformance.failures import write_atomic

    path = Path(args.emit_script)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"--emit-script: cannot write {path}: {exc}") from exc
    print(f"wrote {path}: python {path} [cpu|cuda] reproduces the failure without the harness")
    return EXIT_PASS


# --- bench ----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    import itertools

    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "bench times device work and needs a CUDA device; on a CPU the benchmark suite runs in "
            "smoke mode (pytest --pyargs conformance.bench.gates), whose timings mean nothing"
        )
    from rich.table import Table

    from conformance.bench.providers import get_provider
    from conformance.bench.runner import machine_info, roofline_plot, run_grid
    from conformance.bench.workloads import Workload

    for name in args.providers:
        try:
            get_provider(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = _console()
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
    return EXIT_PASS


# --- list -----------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    """``probe-domain``: the declared domain's edges, inside and just outside (``probe.py``)."""
    from conformance.machine import pick_device
    from conformance.names import DTYPE_NAMES, OPS, torch_dtype
    from conformance.probe import probe
    from conformance.report import EXIT_NOTHING
    from lora_ref import BackendLoadError, BackendNotFoundError, get_backend_from_name

    try:
        with _stdout_to_stderr():
            cls = get_backend_from_name(args.backend)
    except (BackendNotFoundError, BackendLoadError) as exc:
        raise UsageError(str(exc)) from exc
    domain = cls.capabilities.shapes
    if not domain.restricted:
        print(f"{args.backend} declares the whole space (no Capabilities.domain): no edge to probe")
        return EXIT_NOTHING
    device = pick_device(cls, args.device)
    dtypes = [d for d in DTYPE_NAMES if torch_dtype(d) in cls.capabilities.dtypes]
    ops = tuple(o for o in args.ops or OPS if o in OPS)  # the four ops have a domain
    rows = probe(args.backend, domain, device.type, args.dtypes or dtypes, ops,
                 args.deadline or None)  # fmt: skip
    doc = {"backend": args.backend, "domain": domain.describe(), "device": device.type,
           "dtype": (args.dtypes or dtypes)[0], "edges": rows}  # fmt: skip
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{args.backend} within {doc['domain']} ({doc['dtype']}, {device.type}):")
    print(f"{'restriction':<24} {'op':<8} {'inside':<8} {'just outside':<36} outcome")
    for r in rows:
        print(f"{r['restriction']:<24} {r['op']:<8} {r['inside']:<8} {r['outside_case']:<36} "
              f"{r['outside']}")  # fmt: skip
        for m in r["inside_messages"][:1] if r["inside"] != "works" else ():
            print(f"    inside: {m[:300]}")
        for m in r["outside_messages"][:1]:
            print(f"    outside: {m[:300]}")
    broken = [r for r in rows if r["inside"] != "works"]
    if broken:
        print(f"FAIL: {len(broken)} inside edges do not work: the declared domain is wrong there")
        return EXIT_FAIL
    print(f"PASS: every inside edge works ({len(rows)} edges)")
    return EXIT_PASS


def cmd_list(args: argparse.Namespace) -> int:
    from lora_ref import known_backend_names

    with _stdout_to_stderr():  # what a backend prints on import must not corrupt the listing
        rows = [_describe_backend(name) for name in known_backend_names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_PASS
    for r in rows:
        if r["installed"]:
            caps = r["capabilities"]
            print(
                f"{r['name']:<14} {r['target']:<52} {r['version']}\n"
                f"{'':<14} dtypes {','.join(caps['dtypes'])}; devices {','.join(caps['devices'])}; "
                f"permutation {caps['permutation']}; split layouts {caps['split_layouts']}; "
                f"CUDA graphs {caps['cuda_graph']}; token maps {caps.get('token_map')}; "
                f"batch invariant {caps.get('batch_invariant')}; n slices {caps.get('n_slices')}; "
                f"embedding {caps.get('embedding')}"
            )
        else:
            print(f"{r['name']:<14} not installed: {r['error']}")
    return EXIT_PASS


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Standard output, Python's and the file descriptor's (C code prints there too), goes to
    standard error within the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _describe_backend(name: str) -> dict:
    from conformance.checks.guards import backend_call
    from conformance.machine import describe_backend
    from lora_ref import get_backend_from_name

    cls, problem = backend_call(lambda: get_backend_from_name(name))
    if problem is not None:
        text = str(problem.exc).splitlines()[0] if str(problem.exc) else type(problem.exc).__name__
        return {"name": name, "installed": False, "error": text[:200]}
    version, problem = backend_call(lambda: str(cls().version))
    shown = version if problem is None else f"version raised {problem.describe()}"
    return {"installed": True, **describe_backend(cls, name, shown)}


# --- the parser -----------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help texts with their defaults, where a default says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-conformance", description=__doc__, formatter_class=_Formatter
    )
    parser.add_argument(
        "--version", action="version", version=f"lora-conformance {harness_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="run the conformance suite on a backend",
        description="Run the conformance suite on a backend (pytest and the conformance "
        "plugin, in a supervised child process). Arguments after -- go to pytest.",
        formatter_class=_Formatter,
    )
    check.add_argument("backend", help="built-in name, package.module:Class, or entry-point name")
    settings.add_arguments(check, profile={"default": profiles.default_name()})
    check.add_argument("--report-json", default=None, help="write the JSON report here")
    check.add_argument("--junit-xml", default=None, help="write JUnit XML here")
    check.add_argument("--markdown", default=None, help="write a Markdown summary here")
    check.add_argument("-v", "--verbose", action="store_true",
                       help="print tracebacks and the pytest log")  # fmt: skip
    check.set_defaults(func=cmd_check)

    mrg = sub.add_parser(
        "merge",
        help="merge the reports of a campaign's shards into one",
        description="Merge the JSON reports of the shards of one campaign (check --shard i/n) "
        "into one report. Its verdict is PASS only when every planned group ran on some shard "
        "and passed; exit codes as for check.",
        formatter_class=_Formatter,
    )
    mrg.add_argument("reports", nargs="+", metavar="REPORT", help="the shards' --report-json files")
    mrg.add_argument("--report-json", required=True, help="write the merged JSON report here")
    mrg.add_argument("--junit-xml", default=None, help="write JUnit XML here")
    mrg.add_argument("--markdown", default=None, help="write a Markdown summary here")
    mrg.add_argument(
        "--shards", type=int, default=None,
        help="how many shards the campaign had (default: as the reports say)",
    )  # fmt: skip
    mrg.set_defaults(func=cmd_merge)

    rep = sub.add_parser(
        "replay",
        help="re-run a saved minimal failing case",
        description="Re-run a saved failing case in a worker process. Exit 1 when it still "
        "fails, 0 when it no longer does, 2 for a corrupt file.",
        formatter_class=_Formatter,
    )
    rep.add_argument("file")
    rep.add_argument("--backend", default=None,
                     help="the backend to replay on (default: the one the file names)")  # fmt: skip
    rep.add_argument("--trust", action="store_true",
                     help="import the module:Class the file names")  # fmt: skip
    settings.add_arguments(rep, ("device", "deadline"))
    rep.add_argument("--max-elements", type=int, default=1 << 26,
                     help="largest tensor a file may ask for, in elements")  # fmt: skip
    rep.add_argument("--emit-script", default=None, metavar="PATH",
                     help="write a standalone repro script instead")  # fmt: skip
    rep.set_defaults(func=cmd_replay)

    from conformance.bench.grid import BENCH_OPS, LAYOUTS, MODELS

    bench = sub.add_parser(
        "bench",
        help="time backends side by side on a GPU (table, JSON, roofline PNG)",
        formatter_class=_Formatter,
    )
    bench.add_argument(
        "providers", nargs="*", default=["triton", "torch"],
        help="backend names and 'torch' (one adapter's torch.mm: the floor) or 'grouped_mm'",
    )  # fmt: skip
    bench.add_argument("--models", nargs="+", choices=list(MODELS), default=["llama3-8b"])
    bench.add_argument(
        "--ops", nargs="+", choices=BENCH_OPS, default=["shrink_qkv", "expand", "qkv", "gate_up"]
    )
    bench.add_argument(
        "--layouts", nargs="+", choices=list(LAYOUTS), default=["prefill", "mixed", "decode64"]
    )
    bench.add_argument("--ranks", nargs="+", type=int, default=[16, 64])
    bench.add_argument("--out", default="bench-results",
                       help="folder for bench.json, bench.md, roofline.png")  # fmt: skip
    bench.set_defaults(func=cmd_bench)

    prb = sub.add_parser(
        "probe-domain",
        help="run a backend at the edges of its declared domain, inside and just outside",
        description="For each restriction of the backend's declared domain (Capabilities."
        "domain), run one case just inside and one just outside it (the diff check, in a worker "
        "process) and say what happens outside: works, error (a clean refusal), wrong, crash "
        "or timeout. Exit 1 when an inside edge does not work, 5 when nothing is declared.",
        formatter_class=_Formatter,
    )
    prb.add_argument("backend", help="built-in name, package.module:Class, or entry-point name")
    settings.add_arguments(prb, ("device", "deadline", "ops", "dtypes"))
    prb.add_argument("--report-json", default=None, help="write the edges as JSON here")
    prb.set_defaults(func=cmd_probe)

    lst = sub.add_parser(
        "list", help="list the known backends: installed, version, capabilities",
        formatter_class=_Formatter,
    )  # fmt: skip
    lst.add_argument("--json", action="store_true", help="as JSON")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after -- goes to pytest (check only)
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors already, 0 for --help
        return int(exc.code or 0)
    if extra and args.command != "check":
        print("lora-conformance: error: arguments after -- are for check only", file=sys.stderr)
        return EXIT_USAGE
    args.pytest_args = extra
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"lora-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lora-conformance: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a failure of the harness itself
        print(f"lora-conformance: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if getattr(args, "verbose", False):
            traceback.print_exc()
        return EXIT_CRASH


__all__ = ["EXIT_FAIL", "main"]


if __name__ == "__main__":
    sys.exit(main())
