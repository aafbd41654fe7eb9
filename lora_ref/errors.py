"""One wording for every bad-input error: the argument, what was expected, what came."""

from __future__ import annotations

from typing import NoReturn

import torch


def fail(arg: str, expected: str, got: str, *, error: type[Exception] = ValueError) -> NoReturn:
    """Raise ``error`` as ``"<arg>: expected <expected>, got <got>"``."""
    raise error(f"{arg}: expected {expected}, got {got}")


def check_dtype(arg: str, tensor: torch.Tensor, *allowed: torch.dtype) -> None:
    """Raise ``TypeError`` unless ``tensor.dtype`` is one of ``allowed``."""
    if tensor.dtype not in allowed:
        names = " or ".join(str(d).removeprefix("torch.") for d in allowed)
        fail(arg, f"dtype {names}", str(tensor.dtype).removeprefix("torch."), error=TypeError)
