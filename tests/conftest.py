"""The test suite's own setup."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# set in the pytest subprocess that runs a background test: there it runs as any test does
BACKGROUND_ENV = "LORA_TEST_IN_BACKGROUND"
_BACKGROUND: dict[str, tuple[subprocess.Popen, Path]] = {}


def pytest_configure(config) -> None:
    # Started where SIGINT is ignored (a background job of a non-interactive shell, nohup, some
    # CI runners), every process this suite starts would inherit the ignore, and the tests that
    # send SIGINT would see nothing arrive.  A handler is not inherited across exec: children
    # then start with the default action.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_under_pytests_basetemp(tmp_path_factory):
    """Temporary files of this process and of every process it starts (a supervisor killed by
    SIGKILL cannot remove its own) land under pytest's base temporary folder, which pytest
    prunes, not in the system's."""
    folder = tmp_path_factory.mktemp("tmpdir")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


def pytest_collection_finish(session) -> None:
    """Start each selected test marked ``background`` in a pytest subprocess of its own, now:
    the suite has two cores, and these tests (minutes of one core each) then run beside the
    rest.  In the session, such a test waits for its subprocess and fails with its output."""
    if os.environ.get(BACKGROUND_ENV):
        return
    chosen = [item for item in session.items if item.get_closest_marker("background")]
    if not chosen:
        return
    folder = Path(tempfile.mkdtemp(prefix="lora-background-"))
    session.config.add_cleanup(functools.partial(_stop_background, folder))
    for k, item in enumerate(chosen):
        log = folder / f"{k}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", item.nodeid, "-q", "-rfE", "-p",
                 "no:cacheprovider"],
                cwd=session.config.rootpath, env={**os.environ, BACKGROUND_ENV: "1"},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _BACKGROUND[item.nodeid] = (proc, log)
        item.runtest = functools.partial(_await_background, item.nodeid)


def _await_background(nodeid: str) -> None:
    proc, log = _BACKGROUND[nodeid]
    try:
        proc.wait(timeout=2400)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{nodeid}, run in the background, took more than 40 minutes", pytrace=False)
    output = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"{nodeid}, run in the background, exited {proc.returncode}:\n"
                    f"{output[-8000:]}", pytrace=False)  # fmt: skip
    for line in output.splitlines():  # what the test reports of itself (a zoo's seed)
        if re.search(r"\bseed \d+", line):
            sys.__stdout__.write(f"\n{line}")


def _stop_background(folder: Path) -> None:
    for proc, _ in _BACKGROUND.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _BACKGROUND.clear()
    shutil.rmtree(folder, ignore_errors=True)
