"""``--isolate``: the backend runs in a worker process, so no crash can take the harness down.

The parent sends ``(check, example)`` over a pipe; the worker runs the check and sends back the
:class:`~conformance.checks.guards.CaseResult`.  If the worker dies (a segfault, ``exit()`` from
C code, ``os._exit``), the example is a *crash*, reported with its case, and the next example
starts a new worker.  If it outlives the deadline it is killed: a *timeout*.  A worker whose CUDA
context an example broke (a sticky error: an illegal or misaligned address) reports that example
as a crash and exits, so the examples after it run on a fresh context.  The worker's
standard output is pointed at its standard error, so nothing the backend prints can corrupt the
channel.  ``lora-conformance replay`` uses the same worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from conformance.checks import CHECKS, Example
from conformance.checks.guards import CaseResult
from conformance.plan import cannot_run
from conformance.process import child_setup

_TIMEOUT = object()


class WorkerStartError(RuntimeError):
    """The worker could not load the backend; ``status`` is ``usage_error`` or
    ``backend_error`` (as in a report)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"it was killed by {name}"
    return f"it exited with status {returncode}"


class IsolatedBackend:
    """A worker process holding one backend; :meth:`run` is an engine ``runner``."""

    def __init__(self, backend: str, device: str, deadline: float | None) -> None:
        self.backend = backend
        self.device = device
        self.deadline = deadline
        self.proc: subprocess.Popen | None = None
        self.version = ""
        self.resolved_device = device

    def _start(self) -> None:
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.isolate", str(child_r), str(child_w)],
            pass_fds=(child_r, child_w),
            stdin=subprocess.DEVNULL,
            preexec_fn=child_setup,
        )
        os.close(child_r)
        os.close(child_w)
        self._send = Connection(parent_w, readable=False)
        self._recv = Connection(parent_r, writable=False)
        self._send.send(("load", self.backend, self.device))
        reply = self._receive(timeout=600)
        if reply is None or reply is _TIMEOUT:
            code = self.proc.poll()
            self.close()
            raise WorkerStartError(
                "backend_error",
                f"backend {self.backend!r}: its worker process died while loading it "
                f"({describe_exit(code)})",
            )
        if reply[0] != "ready":
            self.close()
            raise WorkerStartError(reply[1], reply[2])
        self.version, self.resolved_device = reply[1], reply[2]

    def _receive(self, timeout: float | None) -> Any:
        """The worker's reply; ``_TIMEOUT`` when none came in time, None when it died."""
        try:
            if not self._recv.poll(timeout):
                return _TIMEOUT
            return self._recv.recv()
        except (EOFError, OSError):
            return None

    def start(self) -> None:
        """Start the worker now (else the first :meth:`run` does); raises
        :class:`WorkerStartError` when the backend cannot be loaded."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def run(self, check: str, example: Example) -> CaseResult:
        self.start()
        assert self.proc is not None
        with contextlib.suppress(OSError):
            self._send.send(("run", check, example))
        reply = self._receive(self.deadline)
        if isinstance(reply, tuple) and reply[0] == "cannot":
            raise WorkerStartError("usage_error", reply[1])
        if isinstance(reply, tuple) and reply[0] == "broken":  # the worker has exited
            self.close()
            return reply[1]
        if reply is not None and reply is not _TIMEOUT:
            return reply
        result = CaseResult(example.case, check=check, params=example.params)
        try:
            code = self.proc.wait(timeout=10) if reply is None else self.proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is None:  # alive: the deadline passed
            self.close()
            result.fail(f"timed out: the example outlived its deadline of {self.deadline:g} s",
                        "timeout")  # fmt: skip
        else:
            self.close()
            result.fail(f"the backend's process died during the example: {describe_exit(code)}",
                        "crash")  # fmt: skip
        return result

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        for conn in ("_send", "_recv"):
            c = getattr(self, conn, None)
            if c is not None:
                c.close()
                setattr(self, conn, None)


def replay_alone(
    backend: str, device: str, deadline: float | None
) -> Callable[[str, Example], str]:
    """A ``RunOptions.fresh_replay``: runs one example of a check in a new worker process and
    says what it did there (``reproduces``, ``passes``, ``crash``, ``timeout``, or ``not run``
    when the worker could not load the backend)."""

    def run(check: str, example: Example) -> str:
        worker = IsolatedBackend(backend, device, deadline)
        try:
            result = worker.run(check, example)
        except WorkerStartError:
            return "not run"
        finally:
            worker.close()
        if result.ok:
            return "passes"
        return "reproduces" if result.kind == "fail" else result.kind

    return run


def _worker(read_fd: int, write_fd: int) -> None:
    os.dup2(2, 1)  # the backend's prints go to stderr; the pipes carry the protocol
    recv = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    _, name, device_name = recv.recv()
    from lora_ref.runtime import use_interpreter_without_gpu

    use_interpreter_without_gpu(None if device_name == "auto" else device_name.split(":")[0])
    import torch

    from conformance.checks.guards import backend_call, broken_context
    from lora_ref import get_backend_from_name
    from lora_ref.registry import BackendLoadError, BackendNotFoundError

    try:
        cls = get_backend_from_name(name)
    except BackendNotFoundError as exc:
        send.send(("error", "usage_error", str(exc)))
        return
    except BackendLoadError as exc:
        send.send(("error", "backend_error", str(exc)))
        return
    made, problem = backend_call(lambda: str(cls().version))
    if problem is not None:
        send.send(
            (
                "error",
                "backend_error",
                f"backend {name!r}: its constructor or version raised {problem.describe()}",
            )
        )
        return
    from conformance.machine import pick_device

    device = pick_device(cls, None if device_name == "auto" else device_name.split(":")[0])
    if device_name not in ("auto", "cpu", "cuda"):
        device = torch.device(device_name)
    send.send(("ready", made, str(device)))
    while True:
        try:
            _, check, example = recv.recv()
        except EOFError:
            return
        reason = cannot_run(check, cls.capabilities, device.type)
        if reason:
            send.send(("cannot", f"the {check} check cannot run here: {reason}"))
            continue
        try:
            result = CHECKS[check].run(cls, example, device)
        except Exception as exc:  # the harness itself failed: say so, as a crash of the run
            result = CaseResult(example.case, check=check, params=example.params)
            result.fail(f"the harness failed: {type(exc).__name__}: {exc}", "crash")
        broken = broken_context(device)
        if broken is not None:
            result.fail(f"the CUDA context is broken after this example ({broken}); the next "
                        "example gets a new worker", "crash")  # fmt: skip
            send.send(("broken", result))
            return
        send.send(result)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]))
