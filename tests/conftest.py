"""The test suite's own setup."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest


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
