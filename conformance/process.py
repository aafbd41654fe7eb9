"""Process hygiene for the harness's own processes (Linux; elsewhere these do nothing).

The supervisor (``lora-conformance check``), its pytest child and the ``--isolate`` worker
start each other with :func:`child_setup`; the processes that hold the report's secret mark
themselves non-dumpable with :func:`set_dumpable`.  No torch here: the supervisor imports it.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG, _PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 1, 3, 4


def _prctl(option: int, value: int = 0) -> int:
    if not sys.platform.startswith("linux"):
        return -1
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0))


def child_setup() -> None:
    """``preexec_fn`` of every process the harness starts: it dies with its parent (SIGKILL,
    whatever killed the parent), and takes SIGINT's default action even when the parent's was
    to ignore it (a background job, ``nohup``), so an interrupt reaches it."""
    parent = os.getppid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def set_dumpable(flag: bool) -> bool | None:
    """Mark this process (non-)dumpable; returns the previous setting (None off Linux).  A
    non-dumpable process's memory and file descriptors are closed to other processes of the
    same user, a backend's worker among them (its ``/proc/PID`` entries belong to root)."""
    before = _prctl(_PR_GET_DUMPABLE)
    if before < 0:
        return None
    _prctl(_PR_SET_DUMPABLE, 1 if flag else 0)
    return bool(before)
