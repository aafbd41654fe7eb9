"""The one place that decides whether Triton kernels run compiled or through the interpreter.

Triton reads ``TRITON_INTERPRET`` when its own modules are first imported, so the choice must be
made before anything imports Triton.  Every package of this project (the Triton backend, the
conformance harness, the peer adapters) calls :func:`use_interpreter_without_gpu` at import and
reads the outcome from :func:`interpreting`; nothing else touches the variable.  This module
imports no Triton itself.
"""

from __future__ import annotations

import os

ENV = "TRITON_INTERPRET"


def use_interpreter_without_gpu(device: str | None = None) -> bool:
    """Select the interpreter when there is no CUDA device, or when ``device == "cpu"``.

    A value the user already set wins.  Returns :func:`interpreting`.
    """
    if ENV not in os.environ:
        import torch

        if device == "cpu" or not torch.cuda.is_available():
            os.environ[ENV] = "1"
    return interpreting()


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get(ENV, "0") == "1"


def capturing() -> bool:
    """True while the current CUDA stream is capturing a graph (no device value may be read)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
