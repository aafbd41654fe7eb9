"""Helpers for driving the peers' adapters against CPU models of the peers' ops."""

from __future__ import annotations

import importlib
import sys
import types

import torch
from hypothesis import settings

from conformance.case import OPS
from conformance.profiles import limits_for
from conformance.runner import GroupStats, find_failure
from lora_ref import BaseLoRABackend, Capabilities

SEARCH = settings(max_examples=15, derandomize=True, deadline=None, database=None, print_blob=False)


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
    props: tuple[str, ...] = ("diff", "metamorphic"),
) -> GroupStats | None:
    """The suite's first failing group on the CPU at the ``ci`` limits, or None."""
    return find_failure(backend, ops, dtypes, props, torch.device("cpu"), limits_for("ci"), SEARCH)
