"""No backend can fake a pass: each hostile backend gets its exit code, and the case that
killed the run is saved (exit codes: 1 failure, 2 usage, 3 crash, 4 interrupted/timeout)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import api

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
# the fresh replay of a failure (tests/test_cli.py tests it) costs a process start: not here
QUICK = dict(ops=("shrink",), dtypes=("float32",), checks=("diff",), max_examples=1,
             no_fresh_replay=True)  # fmt: skip


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)


def _check(name: str, tmp_path: Path, **kw):
    kw = {**QUICK, **kw}
    report = api.check(
        f"tests.hostile.{name}",
        failures_dir=tmp_path / "failures",
        report_json=tmp_path / "report.json",
        **kw,
    )
    saved = sorted((tmp_path / "failures").glob("*.json"))
    return report, saved


@pytest.mark.parametrize(
    ("backend", "code", "kind"),
    [
        ("backends:ExitsZero", 3, "crash"),
        ("backends:OsExitZero", 3, "crash"),
        ("backends:RaisesKeyboardInterrupt", 3, "crash"),
        ("backends:WrongShape", 1, "fail"),
        ("backends:WrongDtype", 1, "fail"),
    ],
)
def test_in_process_misbehaviour_is_caught(backend, code, kind, tmp_path):
    report, saved = _check(backend, tmp_path)
    assert report.exit_code == code, report.data.get("error")
    bad = [g for g in report.groups if g["outcome"] not in ("pass", "skip")]
    assert bad and bad[0]["failure"]["kind"] == kind
    assert len(saved) == 1 and json.loads(saved[0].read_text())["kind"] == kind
    # the report on disk agrees, and says the run did not pass
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["exit_code"] == code and doc["verdict"] != "PASS"


@pytest.mark.parametrize("backend", ["backends:Segfaults", "backends:LibcExitZero"])
def test_a_dying_process_is_a_crash_with_its_case(backend, tmp_path):
    report, saved = _check(backend, tmp_path)
    assert report.exit_code == 3
    assert report.data["status"] == "aborted"
    crashed = [g for g in report.groups if g["outcome"] == "crash"]
    assert len(crashed) == 1 and crashed[0]["failure"]["file"]
    assert len(saved) == 1 and json.loads(saved[0].read_text())["case"]["op"] == "shrink"


@pytest.mark.parametrize("backend", ["backends:Segfaults", "backends:LibcExitZero"])
def test_isolate_reports_the_crash_and_goes_on(backend, tmp_path):
    report, saved = _check(backend, tmp_path, isolate=True, ops=("shrink", "expand"))
    assert report.exit_code == 3 and report.data["status"] == "complete"
    outcomes = {g["id"]: g["outcome"] for g in report.groups}
    assert outcomes["diff-shrink-float32"] == "crash"
    assert outcomes["diff-expand-float32"] == "pass"  # the run went on with a new worker
    assert len(saved) == 1


def test_a_python_hang_times_out(tmp_path):
    report, saved = _check("backends:Hangs", tmp_path, deadline=3)
    assert report.exit_code == 4
    g = next(g for g in report.groups if g["outcome"] == "timeout")
    assert "deadline" in g["failure"]["messages"][0] and len(saved) == 1


def test_a_hang_the_alarm_cannot_reach_is_killed_by_the_watchdog(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "WATCHDOG_GRACE", 3.0)
    report, saved = _check("backends:HangsWithAlarmBlocked", tmp_path, deadline=2)
    assert report.exit_code == 4 and report.data["status"] == "aborted"
    assert report.data["child"]["killed_for"] == "timeout"
    assert len(saved) == 1


@pytest.mark.parametrize(
    ("backend", "code", "status"),
    [
        ("import_raises:Backend", 3, "backend_error"),
        ("no_such_module:Backend", 2, "usage_error"),
        ("backends:NoSuchClass", 2, "usage_error"),
        ("backends:ConstructorRaises", 3, "backend_error"),
        ("backends:VersionRaises", 3, "backend_error"),
    ],
)
def test_a_broken_backend_is_one_line_naming_it(backend, code, status, tmp_path):
    report, _ = _check(backend, tmp_path)
    assert report.exit_code == code and report.data["status"] == status
    error = report.data["error"]
    assert f"tests.hostile.{backend}" in error and "\n" not in error


def test_an_import_that_exits_zero_is_not_a_pass(tmp_path):
    report, _ = _check("import_exits:Backend", tmp_path)
    assert report.exit_code == 3 and report.data["status"] == "aborted"
    assert "before the first example" in report.data["error"]


def test_a_sigint_mid_group_reports_what_the_group_ran(tmp_path):
    """A real SIGINT inside a group's fifth backend call: the run is interrupted (exit 4), and
    the group in flight is reported as "interrupted" with the examples it ran, not as "not run"
    with none."""
    report, _ = _check("backends:SigintOnFifthShrink", tmp_path, max_examples=20)
    assert report.exit_code == 4 and report.data["status"] == "interrupted"
    cut = [g for g in report.groups if g["outcome"] == "interrupted"]
    assert len(cut) == 1 and cut[0]["examples"] > 0, report.groups


def test_a_sigint_during_a_backend_call_interrupts_a_plain_pytest_run(pytester):
    """A Ctrl-C (or a time limit's SIGINT) that lands inside a backend call made by any test
    interrupts the run, as pytest's own would, and fails no test as a backend crash; a backend
    raising ``KeyboardInterrupt`` itself is still a crash."""
    pytester.makepyfile(
        test_calls="""
        import os, signal, time
        from conformance.checks.guards import backend_call

        def raises():
            raise KeyboardInterrupt

        def test_a_backend_raising_it_is_a_crash():
            value, problem = backend_call(raises)
            assert problem is not None and problem.kind == "crash"

        def test_z_a_real_sigint_interrupts():
            def backend():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            backend_call(backend)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.assert_outcomes(passed=1, failed=0)


_SIGINT_IN_A_BACKEND_CALL = """
import os, signal, time
from conformance.checks.guards import backend_call

def backend():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)

value, problem = backend_call(backend)
print("went on:", problem and problem.describe())
"""


def test_a_sigint_during_a_backend_call_interrupts_without_the_plugin(pytester):
    """Without the pytest plugin (``-p no:lora_conformance``, or a source tree on PYTHONPATH
    that registers no entry point, as on the device machine) a SIGINT inside a backend call
    still interrupts the run: before, no handler marked it as the user's, so each one failed
    the test in flight as a backend crash and the session went on."""
    pytester.makepyfile(
        test_calls=f"""
        def test_a_real_sigint_interrupts():
            exec({_SIGINT_IN_A_BACKEND_CALL!r}, {{}})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:lora_conformance")
    # pytest ends with its INTERRUPTED status, or (here, without the plugin) by the signal itself
    assert result.ret in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), result.stdout.str()
    assert "KeyboardInterrupt" in result.stdout.str()
    result.assert_outcomes()  # no test passed or failed: the run was interrupted


def test_a_sigint_during_a_backend_call_interrupts_a_script():
    """The API in a plain script (no pytest): the user's Ctrl-C ends it as Python's would, and
    is not reported as the backend's crash."""
    run = subprocess.run(
        [sys.executable, "-c", _SIGINT_IN_A_BACKEND_CALL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr, run.stdout + run.stderr
    assert "went on" not in run.stdout


def test_a_broken_cuda_context_is_the_examples_crash(monkeypatch, tmp_path):
    """In process, once a kernel breaks the CUDA context the harness's own calls raise: the
    example is a crash that says so, not a failure of the harness (the probe is faked here;
    tests/gpu/test_broken_context.py breaks a real context)."""
    import dataclasses

    from conformance import engine
    from conformance.checks import CHECKS
    from lora_ref import ReferenceLoRABackend

    def raises(*_):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(CHECKS, "diff", dataclasses.replace(CHECKS["diff"], run=raises))
    monkeypatch.setattr(engine, "broken_context", lambda d: "AcceleratorError: illegal address")
    one = dict(ops=("shrink",), dtypes=("float32",), checks=("diff",), failures_dir=tmp_path)
    (rec,) = engine.run_plan(ReferenceLoRABackend, "reference", **one)
    assert rec.outcome == "crash"
    assert "the CUDA context is broken" in rec.failure["messages"][0]
    monkeypatch.setattr(engine, "broken_context", lambda d: None)  # a context still sound
    with pytest.raises(RuntimeError, match="illegal memory"):
        engine.run_plan(ReferenceLoRABackend, "reference", **one)
