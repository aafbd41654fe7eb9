"""Hostile backends: each tries to fake a pass or take the harness down.  The command line must
give each the right non-zero exit code (``tests/hostile/test_zoo.py``)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import torch

from lora_ref import ReferenceLoRABackend


class _OnShrink(ReferenceLoRABackend):
    """Misbehaves on the first shrink call (the groups of a ``--ops shrink`` run)."""

    def act(self, x: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        if x.shape[0] == 0:
            return out
        replaced = self.act(out)
        return out if replaced is None else replaced


class ExitsZero(_OnShrink):
    """``sys.exit(0)`` mid-run."""

    def act(self, x):
        sys.exit(0)


class OsExitZero(_OnShrink):
    """``os._exit(0)`` mid-run: ends the process at once, no cleanup, status 0."""

    def act(self, x):
        os._exit(0)


class LibcExitZero(_OnShrink):
    """C's ``_exit(0)`` through ctypes: past any Python-level guard."""

    def act(self, x):
        ctypes.CDLL(None)._exit(0)


class Segfaults(_OnShrink):
    """Reads address 0 through ctypes: SIGSEGV."""

    def act(self, x):
        ctypes.string_at(0)


class Hangs(_OnShrink):
    """Sleeps forever (a Python-level hang)."""

    def act(self, x):
        time.sleep(10**6)


class HangsWithAlarmBlocked(_OnShrink):
    """Blocks SIGALRM, then sleeps: only a watchdog outside the process can stop it."""

    def act(self, x):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
        time.sleep(10**6)


class RaisesKeyboardInterrupt(_OnShrink):
    """Raises ``KeyboardInterrupt`` itself, hoping to pass for the user's Ctrl-C."""

    def act(self, x):
        raise KeyboardInterrupt


class SigintOnFifthShrink(_OnShrink):
    """Sends its own process a real SIGINT (the user's Ctrl-C, a time limit's) on its fifth
    shrink call, in the middle of a group."""

    calls = 0

    def act(self, x):
        SigintOnFifthShrink.calls += 1
        if SigintOnFifthShrink.calls == 5:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises before this ends


class WrongShape(_OnShrink):
    """Returns a result with one column too many."""

    def act(self, out):
        return torch.cat([out, out[:, :1]], dim=1)


class WrongDtype(_OnShrink):
    """Returns float64."""

    def act(self, out):
        return out.double()


class ConstructorRaises(ReferenceLoRABackend):
    """Its constructor raises."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("no GPU context")


class VersionRaises(ReferenceLoRABackend):
    """Its ``version`` raises."""

    @property
    def version(self):
        raise OSError("version file missing")


def _report_paths() -> list[str]:
    """Every ``--lora-report`` path in this process's argv and its ancestors' (as a forger would
    find them through ``/proc``)."""
    found, pid = [], os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        found += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--lora-report"]
    return found


def _forge(path: str) -> None:
    import json

    doc = {"schema": 1, "status": "complete", "exit_code": 0, "verdict": "PASS"}
    doc.update(groups=[], plan=[], backend={"name": "forged"}, settings={}, environment={})
    with open(path, "w") as f:
        json.dump(doc, f)


class ForgesReportAndKillsItself(_OnShrink):
    """Writes a "complete, PASS" report wherever ``--lora-report`` points (its own argv, or its
    parent's under ``--isolate``), then SIGKILLs itself."""

    def act(self, x):
        for path in _report_paths():
            _forge(path)
        os.kill(os.getpid(), signal.SIGKILL)


class ForgesReportAndExitsZero(_OnShrink):
    """Writes a "complete, PASS" report wherever ``--lora-report`` points, then ``os._exit(0)``."""

    def act(self, x):
        for path in _report_paths():
            _forge(path)
        os._exit(0)


class SegfaultsAtExit(ReferenceLoRABackend):
    """Correct, but its process dies of SIGSEGV at interpreter exit, after its last group."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import atexit

        atexit.register(lambda: ctypes.string_at(0))


class LeavesAThreadRunning(ReferenceLoRABackend):
    """Correct, but starts a non-daemon thread that never ends."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import threading

        threading.Thread(target=time.sleep, args=(10**6,), daemon=False).start()


class _Later(ReferenceLoRABackend):
    """Correct shrink results, then a thread that zeroes ``TARGET`` (``"out"``, the result, or
    ``"x"``) ``DELAY`` seconds after the call has returned."""

    TARGET, DELAY = "out", 0.3

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        import threading

        out = super().run_lora_a_sgemm(x, weights, stack_num)
        t = {"out": out, "x": x}[self.TARGET]
        if t.numel() and bool(t.ne(0).any()):

            def write():
                time.sleep(self.DELAY)
                t.zero_()

            threading.Thread(target=write, daemon=True).start()
        return out


class ZeroesItsResultLater(_Later):
    """Zeroes its shrink result 0.3 s after returning it."""


class WritesItsInputLater(_Later):
    """Zeroes ``x`` 0.05 s after returning."""

    TARGET, DELAY = "x", 0.05


class FlushesDenormals(ReferenceLoRABackend):
    """Correct, but its constructor turns on the CPU's flush-to-zero for the whole process."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        torch.set_flush_denormal(True)
