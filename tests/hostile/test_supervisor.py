"""What no backend can fake about a run of ``lora-conformance check``: a backend that forges a
report, dies after forging it, dies at exit, leaves a thread running, and a supervisor that is
sent SIGTERM or SIGKILL, or runs where SIGINT is ignored (docs/running.md, "What a backend
cannot fake")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import api
from conformance.api import _disagrees
from conformance.report import seal, sealed

ROOT = Path(__file__).resolve().parents[2]
# the fresh replay of a failure (tests/test_cli.py tests it) costs a process start: not here
QUICK = dict(ops=("shrink",), dtypes=("float32",), checks=("diff",), max_examples=1,
             no_fresh_replay=True)  # fmt: skip
CLI = [sys.executable, "-m", "conformance.cli", "check"]
QUICK_ARGS = ["--ops", "shrink", "--dtypes", "float32", "--checks", "diff", "--max-examples", "1"]


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)


def _check(name: str, tmp_path: Path, **kw):
    return api.check(f"tests.hostile.backends:{name}", failures_dir=tmp_path / "failures",
                     report_json=tmp_path / "report.json", **{**QUICK, **kw})  # fmt: skip


@pytest.mark.parametrize("isolate", [False, True])
@pytest.mark.parametrize("backend", ["ForgesReportAndKillsItself", "ForgesReportAndExitsZero"])
def test_a_forged_report_never_passes(backend, isolate, tmp_path):
    report = _check(backend, tmp_path, isolate=isolate)
    assert report.exit_code == 3, (report.data.get("status"), report.data.get("error"))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["verdict"] != "PASS" and on_disk["exit_code"] == 3
    assert on_disk["backend"].get("name") != "forged"


def test_a_crash_at_exit_after_the_last_group_is_a_crash(tmp_path):
    report = _check("SegfaultsAtExit", tmp_path)
    assert report.exit_code == 3 and report.data["status"] == "aborted"
    assert "SIGSEGV" in report.data["error"]


def test_a_thread_left_running_does_not_hold_the_run(tmp_path):
    started = time.monotonic()
    report = _check("LeavesAThreadRunning", tmp_path, deadline=5)
    assert report.exit_code == 0 and time.monotonic() - started < 50


def test_the_seal_and_the_exit_status_must_agree_with_the_report():
    key = os.urandom(32)
    doc = {"status": "complete", "groups": [{"outcome": "pass"}]}
    doc["seal"] = seal(doc, key)
    assert sealed(doc, key) and not sealed(doc, os.urandom(32))
    assert not sealed({**doc, "groups": []}, key)
    assert not _disagrees(doc, 0)
    assert _disagrees(doc, 1) and _disagrees(doc, -signal.SIGSEGV)
    assert _disagrees({**doc, "groups": [{"outcome": "fail"}]}, 0)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_hanging_run(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [*CLI, "tests.hostile.backends:Hangs", *QUICK_ARGS, "--deadline", "0",
         "--report-json", str(tmp_path / "r.json"), "--failures-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        kids = _children(proc.pid)
        if kids and (tmp_path / "r.json").exists():
            return proc, kids[0]
    proc.kill()
    raise AssertionError("the run did not start its pytest child")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_interrupts_the_run_and_its_child(tmp_path):
    proc, child = _start_hanging_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 4
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["status"] == "interrupted" and doc["exit_code"] == 4
    assert not _alive(child)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_takes_the_child_down_with_the_supervisor(tmp_path):
    proc, child = _start_hanging_run(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)


def test_a_sigint_arrives_where_the_caller_ignores_it(tmp_path):
    """Run from a context that ignores SIGINT (a background job, nohup): the CLI's child takes
    the default action again, so a SIGINT inside a backend call still interrupts (exit 4)."""
    run = subprocess.run(
        [*CLI, "tests.hostile.backends:SigintOnFifthShrink", "--ops", "shrink", "--dtypes",
         "float32", "--checks", "diff", "--max-examples", "20", "--failures-dir", str(tmp_path)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]


@pytest.mark.parametrize("backend", ["ZeroesItsResultLater", "WritesItsInputLater"])
def test_a_write_after_the_call_returned_fails(backend, tmp_path):
    report = _check(backend, tmp_path, max_examples=30)
    assert report.exit_code == 1, report.data.get("error")
    failure = next(g for g in report.groups if g["outcome"] == "fail")["failure"]
    assert any("wrote after returning" in m for m in failure["messages"]), failure["messages"]


def test_list_json_stays_json_when_a_backend_prints_on_import():
    code = (
        "import lora_ref, sys\n"
        "from conformance.cli import main\n"
        "lora_ref.known_backend_names = lambda: ['reference', "
        "'tests.hostile.prints_on_import:Backend']\n"
        "sys.exit(main(['list', '--json']))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [r["name"] for r in rows][1] == "tests.hostile.prints_on_import:Backend"
    assert "hello from a backend's import" in run.stderr and "from C code" in run.stderr


def test_a_backend_that_flushes_subnormals_process_wide_is_named(tmp_path):
    """``torch.set_flush_denormal(True)`` in a backend changes every later computation of the
    process (Hypothesis can no longer draw subnormals): an error naming it, not "not run"."""
    report = _check("FlushesDenormals", tmp_path)
    assert report.exit_code == 3 and report.data["status"] == "backend_error"
    assert "flush-to-zero" in report.data["error"]


def test_a_report_path_that_is_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    report = api.check("reference", failures_dir=tmp_path / "f", report_json=link, **QUICK)
    assert report.exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["verdict"] == "PASS"


def test_a_full_disk_at_the_end_is_a_usage_error_naming_the_path(tmp_path, monkeypatch, capsys):
    import errno

    from conformance.cli import main

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(api, "write_atomic", full)
    junit = tmp_path / "out.xml"
    code = main(["check", "reference", "--ops", "shrink", "--dtypes", "float32", "--checks",
                 "diff", "--max-examples", "1", "--failures-dir", str(tmp_path / "f"),
                 "--junit-xml", str(junit)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(junit) in err and "No space left" in err, err
