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


@pytest.fixture(autouse=True, scope="session")
def _newcomer_path_started_first(
    request, tmp_path_factory, _temporary_files_under_pytests_basetemp
):
    """The newcomer's path (``tests/test_newcomer.py``, the longest test: its subprocesses keep
    one core busy for about six minutes) starts with the session, where it was selected, so
    that the rest of the suite runs on the other core meanwhile."""
    if any(
        item.nodeid.split("::")[0].endswith("test_newcomer.py") for item in request.session.items
    ):
        from tests.test_newcomer import start_newcomer_path

        start_newcomer_path(tmp_path_factory.mktemp("newcomer"))
    yield
