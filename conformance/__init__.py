"""Hypothesis-driven differential conformance testing of multi-LoRA backends.

``conformance.check(backend, profile=..., ops=..., dtypes=..., device=...)`` runs the suite and
returns a :class:`~conformance.report.Report`; ``lora-conformance check`` is the same from the
shell, and ``pytest --pyargs conformance.suite --lora-backend NAME`` the same under pytest.
Importing this package loads neither torch nor any backend.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report", "UsageError", "check"]


def __getattr__(name: str) -> Any:
    if name in ("check", "UsageError"):
        from conformance import api

        return getattr(api, name)
    if name == "Report":
        from conformance.report import Report

        return Report
    raise AttributeError(f"module 'conformance' has no attribute {name!r}")
