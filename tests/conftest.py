"""The test suite's own setup."""

from __future__ import annotations

import signal


def pytest_configure(config) -> None:
    # Started where SIGINT is ignored (a background job of a non-interactive shell, nohup, some
    # CI runners), every process this suite starts would inherit the ignore, and the tests that
    # send SIGINT would see nothing arrive.  A handler is not inherited across exec: children
    # then start with the default action.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
