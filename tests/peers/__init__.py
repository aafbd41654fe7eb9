"""Helpers for driving the peers' adapters against CPU models of the peers' ops."""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path

from conformance.engine import GroupRecord, run_plan
from conformance.names import OPS
from lora_ref import BaseLoRABackend, Capabilities


def adapter_on_cpu(
    monkeypatch, module_name: str, class_name: str, fakes: dict[str, types.ModuleType]
) -> type[BaseLoRABackend]:
    """The adapter class ``module_name.class_name``, imported with ``fakes`` standing in for the
    peer's modules (``sys.modules`` entries, undone after the test) and declared for the CPU."""
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    adapter = getattr(importlib.import_module(module_name), class_name)
    monkeypatch.delitem(sys.modules, module_name)  # the next import sees the real peer (or none)
    caps = Capabilities(**{**vars(adapter.capabilities), "devices": frozenset({"cpu"})})
    return type(f"{class_name}OnCPU", (adapter,), {"capabilities": caps})


def first_failure(
    backend: type[BaseLoRABackend],
    ops: tuple[str, ...] = OPS,
    dtypes: tuple[str, ...] = ("float16", "bfloat16"),
    checks: tuple[str, ...] = ("diff", "metamorphic"),
) -> GroupRecord | None:
    """The suite's first failing group on the CPU under the ``ci`` profile, or None (its case
    is the first failing one, not shrunk)."""
    records = run_plan(
        backend,
        backend.__name__,
        ops=ops,
        dtypes=dtypes,
        checks=checks,
        stop_on_failure=True,
        shrink=False,
        failures_dir=Path(tempfile.mkdtemp(prefix="peer-failures-")),
    )
    bad = [r for r in records if r.outcome not in ("pass", "skip")]
    return bad[0] if bad else None
