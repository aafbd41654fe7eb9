"""Versions of installed distributions, and the harness's own: one lookup for the whole harness.
Imports no torch (the command line's supervising process uses it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version(dist: str) -> str:
    """The installed version of ``dist``, or ``"not installed"``."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def harness_version() -> str:
    """This harness's version, or ``"source tree"`` when it runs uninstalled."""
    v = package_version("lora-conformance")
    return "source tree" if v == "not installed" else v
