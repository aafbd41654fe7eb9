"""The machinery every check shares: guarded backend calls, poisoned allocations, guard bands
around ``base_output``, snapshots of the inputs, and the per-example deadline.

A backend under test is hostile until proven otherwise.  :func:`backend_call` runs one piece of
backend code and turns *anything* it raises into a :class:`Problem`: an ``Exception`` is a
conformance failure; a ``BaseException`` (``SystemExit``, a stray ``KeyboardInterrupt``,
``os._exit`` from Python code, which is intercepted for the duration) is a *crash*.  Only the
user's own interrupt and the harness's deadline pass through.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from conformance.case import Case
from conformance.inputs import Inputs
from conformance.oracle import bitwise_equal
from lora_ref.token_map import batch_tensors

GUARD = 64
SENTINEL = -1234.5
V = TypeVar("V")


@dataclass
class CaseResult:
    """Outcome of one example: failures (empty when it passed) and the worst error/tolerance.

    ``kind`` says what a failure is: ``fail`` (a wrong result, a wrong error, a raised
    exception), ``crash`` (the backend ended or tried to end the process), ``timeout`` (it
    outlived the deadline).  ``below_signal_floor``: the example passed, but would have
    passed with every LoRA term dropped, so it is no evidence (the diff checks' guard).
    """

    case: Case
    failures: list[str] = field(default_factory=list)
    worst_ratio: float | None = None
    check: str = "diff"
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "fail"
    below_signal_floor: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str, kind: str = "fail") -> None:
        """Add a failure; a crash or a timeout outranks a plain failure."""
        self.failures.append(message)
        if kind != "fail":
            self.kind = kind

    def note_ratio(self, ratio: float) -> None:
        """Keep the worst error/tolerance ratio; NaN wins over any number."""
        self.worst_ratio = worse(self.worst_ratio, ratio)


def worse(a: float | None, b: float | None) -> float | None:
    """The worse of two error/tolerance ratios (None: not measured; NaN beats any number)."""
    if a is None or b is None:
        return b if a is None else a
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


class ExampleTimeout(BaseException):
    """The example outlived its deadline (raised by the deadline's alarm)."""


class BackendExit(BaseException):
    """The backend called ``os._exit``; intercepted so the process survives to report it."""

    def __init__(self, code: object) -> None:
        super().__init__(f"os._exit({code!r})")


_user_interrupted = threading.Event()


def user_interrupted() -> bool:
    """True once the user interrupted the run (SIGINT seen by :func:`watch_interrupts`)."""
    return _user_interrupted.is_set()


_watcher: Callable[..., Any] | None = None


def watch_interrupts() -> None:
    """Mark SIGINT as the user's, so a ``KeyboardInterrupt`` a backend raises is a crash.

    Idempotent, and called by every :func:`backend_call`, so the mark holds without the pytest
    plugin too (a script using the API, ``-p no:lora_conformance``, a source tree that registers
    no entry point).  Does nothing off the main thread, or where SIGINT has no Python handler
    (ignored, or the OS default): there no ``KeyboardInterrupt`` can come from it.
    """
    global _watcher
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is _watcher or not callable(previous):
        return

    def handler(signum, frame):
        _user_interrupted.set()
        previous(signum, frame)
        raise KeyboardInterrupt

    _watcher = handler
    signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ExampleTimeout` in the main thread after ``seconds`` (None: no limit).

    Works for Python code and for sleeping; a backend stuck in C code that holds the GIL is
    caught by the command line's watchdog, or by ``--isolate``.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def alarm(signum, frame):
        raise ExampleTimeout(f"the example outlived its deadline of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _no_exit() -> Iterator[None]:
    real = os._exit

    def refuse(code: object = 0) -> None:
        raise BackendExit(code)

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real


@dataclass
class Problem:
    """What a guarded backend call raised: ``kind`` is ``exception`` or ``crash``."""

    kind: str
    exc: BaseException

    def describe(self) -> str:
        text = str(self.exc).strip().splitlines()
        detail = f": {text[0][:300]}" if text else ""
        return f"{type(self.exc).__name__}{detail}"


def backend_call(fn: Callable[[], V]) -> tuple[V | None, Problem | None]:
    """Run backend code; return ``(value, None)`` or ``(None, Problem)``.  Never raises, but for
    the user's interrupt and the deadline.  Backend code that leaves the CPU flushing
    subnormals is a problem too (the flag is restored)."""
    watch_interrupts()
    with _no_exit():
        try:
            value, problem = fn(), None
        except ExampleTimeout:
            raise
        except KeyboardInterrupt as exc:
            if user_interrupted():
                raise
            value, problem = None, Problem("crash", exc)
        except Exception as exc:
            value, problem = None, Problem("exception", exc)
        except BaseException as exc:  # SystemExit, os._exit, GeneratorExit, ...
            value, problem = None, Problem("crash", exc)
    flushed = restore_subnormals()
    if flushed is not None and problem is None:
        return None, Problem("exception", flushed)
    return value, problem


def broken_context(device: torch.device) -> str | None:
    """Why ``device``'s CUDA context can no longer run work (a sticky error such as an illegal
    or misaligned address, left by the last kernel), or None when it can (and on the CPU)."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:  # torch raises RuntimeError (AcceleratorError in newer builds)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return None


def restore_subnormals() -> FloatingPointError | None:
    """If the CPU now flushes subnormals to zero (``torch.set_flush_denormal(True)``, or code
    built with ``-ffast-math``), turn that off and return the error saying so; else None."""
    if torch.tensor(2.0**-130, dtype=torch.float32).mul(1.0).item() != 0.0:
        return None
    torch.set_flush_denormal(False)
    return FloatingPointError(
        "the backend turned on flush-to-zero of subnormals for the whole process "
        "(torch.set_flush_denormal(True) or -ffast-math): every later computation would change"
    )


def record_problem(result: CaseResult, problem: Problem, what: str) -> None:
    """Add ``problem`` to ``result``: a crash as a crash, an exception as a failure."""
    if problem.kind == "crash":
        result.fail(f"{what}: the backend tried to end the process: {problem.describe()}", "crash")
    else:
        result.fail(f"{what}: raised {problem.describe()}")
    result.worst_ratio = math.inf


# --- memory ---------------------------------------------------------------------------------


@dataclass
class GuardedOutput:
    """``base_output`` laid out as the case asks, inside a buffer whose every other element is a
    sentinel: ``view`` is what the backend gets; ``outside`` marks the buffer's other elements."""

    buffer: torch.Tensor
    view: torch.Tensor
    outside: torch.Tensor

    def intact(self) -> bool:
        rest = self.buffer[self.outside]
        return bool(bitwise_equal(rest, torch.full_like(rest, SENTINEL)).all())


def guarded_output(base: torch.Tensor, kind: str) -> GuardedOutput:
    """A copy of ``base (T, N)`` laid out as ``kind`` says (``case.LAYOUT_KINDS["base"]``),
    with ``GUARD`` sentinels on each side and in every element of the buffer the view does not
    cover: between its rows (``col_slice``: rows of ``N + 7``; ``row_stride``: every other
    row), before it (``offset``: one element)."""
    T, N = base.shape
    strides, start, span = (N, 1), 0, T * N
    if kind == "col_slice":
        strides, start, span = (N + 7, 1), 3, T * (N + 7)
    elif kind == "row_stride":
        strides, start, span = (2 * N, 1), N, 2 * T * N + N
    elif kind == "transposed":
        strides = (1, T)
    elif kind == "offset":
        start, span = 1, T * N + 1
    total = 2 * GUARD + span
    buf = torch.full((total,), SENTINEL, dtype=base.dtype, device=base.device)
    view = buf.as_strided((T, N), strides, GUARD + start)
    view.copy_(base)
    index = torch.arange(total, device=base.device).as_strided((T, N), strides, GUARD + start)
    outside = torch.ones(total, dtype=torch.bool, device=base.device)
    outside[index.reshape(-1)] = False
    return GuardedOutput(buf, view, outside)


def poison_allocator(numel: int, dtype: torch.dtype, device: torch.device) -> None:
    """Leave NaN-filled blocks of the output's size in the allocator's free lists.

    A backend that allocates its output and leaves an element unwritten then returns NaN there,
    not a lucky zero.  Reliable with CUDA's caching allocator; best effort on the CPU.
    """
    for _ in range(2):
        block = torch.full((max(numel, 1),), float("nan"), dtype=dtype, device=device)
        del block


def _storage_view(t: torch.Tensor) -> torch.Tensor:
    """The whole buffer a (strided) view lives in, so writes beside the view count too."""
    return t._base if t._base is not None else t


def snapshot(inputs: Inputs) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Copies of every input tensor (whole buffers for views) to compare after the call."""
    named: list[tuple[str, torch.Tensor]] = [("x", _storage_view(inputs.x))]
    for i, a in enumerate(inputs.args):
        if isinstance(a, torch.Tensor):
            named.append((f"arg{i}", _storage_view(a)))
        elif isinstance(a, tuple):
            named += [(f"arg{i}[{k}]", _storage_view(v)) for k, v in enumerate(a)]
    for name, t in batch_tensors(inputs.batch_info):
        named.append((f"batch_info.{name}", _storage_view(t)))
    return [(name, t, t.clone()) for name, t in named]


def changed(snap: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[str]:
    """Names of the snapshotted tensors whose bits differ now."""
    return [name for name, t, before in snap if not bool(bitwise_equal(t, before).all())]


def bits_equal_where(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> bool:
    """Equal bits at every element ``where`` marks."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool((bitwise_equal(a, b) | ~where).all())
