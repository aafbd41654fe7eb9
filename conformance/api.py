"""The Python API: :func:`check` runs the suite on a backend and returns its :class:`Report`.

The run happens in a child process (pytest with the conformance plugin, nothing else loaded),
supervised by this one, which never imports the backend.  So nothing a backend does can fake a
pass: if the child dies (a segfault, ``os._exit(0)`` at import or mid-run) or stops making
progress (a hang in C code), the supervisor kills it if need be, saves the case that was in
flight as a failure file, marks the rest of the plan "not run", and the report's exit code is
never 0.  Ctrl-C reaches the child once; it stops, the partial report is kept, and the code is 4.

``lora-conformance check`` is this function plus a progress display and a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conformance.case import Case, CaseError
from conformance.failures import save_failure, write_atomic
from conformance.process import child_setup, set_dumpable
from conformance.report import (
    EXIT_NOTHING,
    EXIT_PASS,
    SCHEMA,
    Report,
    exit_code,
    group_record,
    now,
    sealed,
    summarize,
    verdict,
    write_report,
)
from conformance.settings import API_NAMES, DEFAULTS, UsageError, pytest_argv, renamed, validate

WATCHDOG_GRACE = 60.0


def check_writable(arg: str, path: Path, folder: bool = False) -> None:
    """Fail now, not after the run, when ``path`` (a file, or a folder) cannot be written."""
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".lora-conformance-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{arg}: cannot write to {target}: {exc.strerror or exc}") from exc
    if not folder and path.is_dir():
        raise UsageError(f"{arg}: {path} is a folder, expected a file path")


def check(
    backend: str,
    *,
    profile: str = DEFAULTS["profile"],
    ops: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    checks: Sequence[str] | None = None,
    device: str | None = None,
    max_examples: int | None = None,
    seed: int | None = None,
    deadline: float = DEFAULTS["deadline"],
    isolate: bool = False,
    no_fresh_replay: bool = False,
    jobs: int | None = None,
    failures_dir: str | Path = DEFAULTS["failures_dir"],
    report_json: str | Path | None = None,
    junit_xml: str | Path | None = None,
    markdown: str | Path | None = None,
    pytest_args: Sequence[str] = (),
    on_progress: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None,
    example_db: str | None = None,
    shard: str | None = None,
    shard_times: str | Path | None = None,
) -> Report:
    """Run the conformance suite on ``backend`` and return its report.

    Args:
        backend: a built-in (``reference``, ``triton``), ``package.module:Class``, or an entry
            point of the ``lora_conformance.backends`` group.
        profile: ``ci``, ``dev`` or ``thorough``.
        ops, dtypes, checks: subsets of the ops, dtypes and checks (default: all).
        device: ``cpu`` or ``cuda`` (default: CUDA when present and declared).
        max_examples: drawn examples per diff group (default: the profile's).
        seed: the run seed (default: 0 for ``ci``, random otherwise; the report records it).
        deadline: seconds one example may take (0: none).  A hang in Python code is stopped
            after it; one in C code is killed by the supervisor a minute later.
        isolate: run the backend in a worker process (a crash then fails its group only).
        no_fresh_replay: do not run each group's minimal failing case again in a fresh process
            (by default it is: a case that passes there needs what ran before it).
        jobs: run groups in that many processes (pytest-xdist).
        failures_dir: where minimal failing cases go.
        report_json, junit_xml, markdown: where to write the report (checked before the run).
        pytest_args: extra arguments for the pytest run (``-k``, ``-x``, ...).
        on_progress: called about five times a second with the in-flight example's progress
            (group, phase, counts) and the report so far.
        example_db: a Hypothesis example database shared by a campaign's runners: a folder,
            ``redis://host:port/db``, or ``readonly:`` and either (:mod:`conformance.campaign`);
            checked (and a redis server reached) before the run.
        shard: ``"i/n"``: run shard ``i`` of ``n`` of the plan (``lora-conformance merge``
            joins the shards' reports).  Outside ``ci``, every shard needs the same ``seed``.
        shard_times: an earlier report whose group times balance the shards.

    Raises:
        UsageError: for a bad argument or an output path that cannot be written.
    """
    given = {k: v for k, v in locals().items() if k in API_NAMES}
    values = validate(given)
    if jobs is not None:
        try:
            import xdist  # noqa: F401
        except ImportError as exc:
            raise UsageError("jobs: needs pytest-xdist (pip install pytest-xdist)") from exc
    from conformance import campaign

    try:
        if shard is not None:
            campaign.parse_shard(shard)
        campaign.require_seed(shard, seed, profile, "seed")
        if shard_times is not None:
            campaign.load_times(shard_times)
        if example_db is not None:
            campaign.open_shared(example_db)
    except campaign.CampaignError as exc:
        raise UsageError(renamed(str(exc), "api")) from exc
    failures = Path(failures_dir)
    check_writable("failures_dir", failures, folder=True)
    # a symbolic link is followed once, here: every write of the run goes to its target (a
    # rename onto the link itself would replace the link with a file)
    report_json, junit_xml, markdown = (
        Path(p).resolve() if p is not None and Path(p).is_symlink() else p
        for p in (report_json, junit_xml, markdown)
    )
    outputs = {"report_json": report_json, "junit_xml": junit_xml, "markdown": markdown}
    for arg, path in outputs.items():
        if path is not None:
            check_writable(arg, Path(path))

    with tempfile.TemporaryDirectory(prefix="lora-conformance-") as tmp:
        work = Path(tmp)
        # the child writes its report here, sealed with a secret it reads from a pipe; only
        # this process writes the report the caller asked for
        report_path = work / "report.json"
        progress_path = work / "progress.json"
        (work / "pytest.ini").write_text("[pytest]\n")
        cmd = [
            sys.executable, "-m", "pytest", "-p", "_hypothesis_pytestplugin",
            "-p", "conformance.plugin", "-p", "no:cacheprovider", "--noconftest",
            "-c", str(work / "pytest.ini"), "--rootdir", str(work), "-q", "-rN",
            "--pyargs", "conformance.suite",
            "--lora-backend", backend,
            "--lora-report", str(report_path.resolve()), "--lora-progress", str(progress_path),
            *pytest_argv({**values, "failures_dir": str(failures.resolve())}),
        ]  # fmt: skip
        cmd += list(pytest_args)
        env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}
        log_path = work / "pytest.log"
        mirror = Path(report_json) if report_json else None
        key = secrets.token_bytes(32)
        dumpable = set_dumpable(False) if isolate else None
        try:
            doc = _supervise(
                cmd, env, log_path, report_path, progress_path, deadline, on_progress, key, mirror
            )
        finally:
            if dumpable:
                set_dumpable(True)
        doc.setdefault("log_tail", log_path.read_text(errors="replace")[-4000:])
        if (
            doc.get("status") == "running"
            and doc["child"]["returncode"] == 4
            and not doc.get("plan")
        ):
            tail = doc["log_tail"].strip().splitlines()
            doc.update(status="usage_error", error=tail[-1] if tail else "pytest usage error")
        elif doc.get("status") == "running":
            _aborted(doc, progress_path, failures, backend)
        summarize(doc)
        report = Report(doc)
        for arg, path, text in (
            ("report_json", report_json, None),
            ("junit_xml", junit_xml, report.junit),
            ("markdown", markdown, report.markdown),
        ):
            if path is None:
                continue
            try:
                if text is None:
                    write_report(Path(path), doc)
                else:
                    write_atomic(Path(path), text())
            except OSError as exc:
                raise OutputError(arg, Path(path), exc, report) from exc
        return report


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class OutputError(OSError):
    """An output file (``arg``: ``report_json``, ``junit_xml`` or ``markdown``) could not be
    written after the run; ``report`` is the run's report all the same."""

    def __init__(self, arg: str, path: Path, exc: OSError, report: Report) -> None:
        super().__init__(f"{arg}: cannot write {path}: {exc.strerror or exc}")
        self.report = report


class _Terminated(Exception):
    """SIGTERM reached the supervisor (a CI cancel, ``timeout``, ``docker stop``)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _supervise(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    report_path: Path,
    progress_path: Path,
    deadline: float,
    on_progress: Callable[[dict[str, Any], dict[str, Any] | None], None] | None,
    key: bytes,
    mirror: Path | None,
) -> dict[str, Any]:
    """Run the child; return the report it left (or a stub), with ``child`` facts added.

    The child dies with this process (``child_setup``); SIGTERM here interrupts the child as
    Ctrl-C does.  ``mirror``: where to copy the child's report as it grows."""
    started = time.time()
    killed_for = None
    interrupted = False
    seal_r, seal_w = os.pipe()
    os.write(seal_w, key)
    os.close(seal_w)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    mirrored = None
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [*cmd, "--lora-seal-fd", str(seal_r)], stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, pass_fds=(seal_r,), preexec_fn=child_setup,
            )  # fmt: skip
            os.close(seal_r)
            try:
                while proc.poll() is None:
                    time.sleep(0.2)
                    progress = _read_json(progress_path)
                    current = _read_json(report_path)
                    if mirror is not None and current is not None and current != mirrored:
                        mirrored = current
                        with contextlib.suppress(OSError):
                            write_report(mirror, {**current, "status": "running"})
                    if on_progress is not None and progress is not None:
                        on_progress(progress, current)
                    if deadline and progress is not None and killed_for is None:
                        stuck = time.time() - progress.get("time", started)
                        if stuck > deadline + WATCHDOG_GRACE:
                            killed_for = "timeout"
                            _kill(proc)
            except (KeyboardInterrupt, _Terminated):
                interrupted = True
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                    proc.wait(timeout=60)
                except (subprocess.TimeoutExpired, KeyboardInterrupt, _Terminated,
                        ProcessLookupError):  # fmt: skip
                    _kill(proc)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    doc = _read_json(report_path)
    forged = doc is not None and not sealed(doc, key)
    if doc is None or forged:
        doc = {
            "schema": SCHEMA, "status": "running", "started": now(), "backend": {},
            "settings": {}, "environment": {}, "groups": [], "error": None,
        }  # fmt: skip
    doc.pop("seal", None)
    code = proc.returncode
    doc["child"] = {"returncode": code, "killed_for": killed_for}
    if interrupted:
        doc["status"] = "interrupted"
    elif forged:
        doc.update(
            status="aborted",
            error="the test process's report was not written by the harness (its seal is "
            "missing or wrong): the backend tampered with it",
        )
    elif doc.get("status") == "complete" and _disagrees(doc, code):
        from conformance.isolate import describe_exit

        doc.update(
            status="aborted",
            error=f"the test process's report says {verdict(doc)}, but {describe_exit(code)}",
        )
    return doc


def _disagrees(doc: dict[str, Any], returncode: int) -> bool:
    """Whether pytest's exit status contradicts a complete report: killed by a signal, a
    status other than 0 for a pass (or a run of skips only), or 0 for anything else."""
    if returncode < 0:
        return True
    return (exit_code(doc) in (EXIT_PASS, EXIT_NOTHING)) != (returncode == 0)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _aborted(doc: dict[str, Any], progress_path: Path, failures: Path, backend: str) -> None:
    """The child ended without finishing: blame the example in flight, save its case."""
    from conformance.isolate import describe_exit

    child = doc.get("child", {})
    timed_out = child.get("killed_for") == "timeout"
    how = (
        "it stopped making progress and was killed"
        if timed_out
        else describe_exit(child.get("returncode"))
    )
    doc["status"] = "aborted"
    progress = _read_json(progress_path)
    records = {g["id"]: g for g in doc.get("groups", [])}
    message = f"the test process did not finish: {how}"
    ran = {gid for gid, g in records.items() if g.get("outcome") != "not run"}
    if progress is not None and progress.get("group") and progress["group"] not in ran:
        kind = "timeout" if timed_out else "crash"
        file = _save_inflight(progress, failures, backend, kind, message)
        records[progress["group"]] = group_record(
            progress["group"], kind, examples=progress["examples"],
            shrink_steps=progress["shrink_steps"], error=message,
            failure={"kind": kind, "messages": [message + " during this example"],
                     "case": progress.get("case"), "params": progress.get("params"),
                     "file": file, "flaky": False},
        )  # fmt: skip
    plan = doc.get("plan") or list(records)
    doc["groups"] = [records.get(gid) or group_record(gid, "not run") for gid in plan]
    if not doc.get("error"):
        doc["error"] = message + (
            " before the first example (while loading the backend?)" if progress is None else ""
        )


def _save_inflight(
    progress: dict[str, Any], failures: Path, backend: str, kind: str, message: str
) -> str | None:
    """Save the in-flight example as a failure file; None when its case is unreadable or the
    folder unwritable."""
    try:
        case = Case.from_json(progress.get("case"))
    except CaseError:
        return None
    result = SimpleNamespace(
        check=progress["check"], params=progress.get("params") or {}, kind=kind,
        failures=[message + " during this example"], worst_ratio=None, case=case,
    )  # fmt: skip
    group = SimpleNamespace(op=progress["op"], dtype=progress["dtype"])
    path = save_failure(failures, result, backend, group)
    return str(path) if path is not None else None
