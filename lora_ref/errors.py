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


def check_plain(arg: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a dense tensor with storage: not sparse, not
    on the ``meta`` device, and with no pending negation or conjugation (a view from
    ``.conj().imag`` reads its storage negated: ``.resolve_neg()`` makes the values real)."""
    if tensor.layout != torch.strided:
        fail(arg, "a dense (strided) tensor", f"layout {str(tensor.layout).removeprefix('torch.')}")
    if tensor.device.type == "meta":
        fail(arg, "a tensor with data", "one on the meta device")
    if tensor.is_neg() or tensor.is_conj():
        fail(arg, "a tensor without a pending negation or conjugation (call .resolve_neg() or "
             ".resolve_conj() first)", "a negative or conjugate view")  # fmt: skip
