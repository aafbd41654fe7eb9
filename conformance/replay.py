"""Save a minimal failing case to JSON, and replay it on any machine.

A replay file holds the check, its parameters, the case structure and the backend's name; tensor
values are rebuilt from the case's seed, so the file is a few hundred bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from conformance.case import Case
from conformance.checks import (
    CaseResult,
    check_bad_inputs,
    check_case,
    check_cuda_graph,
    check_metamorphic,
)
from lora_ref import BaseLoRABackend

FORMAT = "lora-conformance-case/1"


def save_failure(path: Path | str, result: CaseResult, backend: str) -> Path:
    """Write ``result`` as a replay file at ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "backend": backend,
        "check": result.check,
        "params": result.params,
        "failures": result.failures,
        "worst_ratio": result.worst_ratio if math.isfinite(result.worst_ratio) else None,
        "case": result.case.to_json(),
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def load_failure(path: Path | str) -> dict[str, Any]:
    """Read a replay file; raises ``ValueError`` if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"replay file {path}: cannot read it: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(
            f"replay file {path}: expected format {FORMAT!r}, got {doc.get('format')!r}"
        )
    doc["case"] = Case.from_json(doc["case"])
    return doc


def replay(
    doc: dict[str, Any], backend_cls: type[BaseLoRABackend], device: torch.device
) -> CaseResult:
    """Run the saved check again on ``backend_cls``."""
    case: Case = doc["case"]
    check, params = doc["check"], doc.get("params", {})
    if check == "diff":
        return check_case(backend_cls, case, device)
    if check == "metamorphic":
        return check_metamorphic(backend_cls, case, params["relation"], params["choice"], device)
    if check == "bad_input":
        return check_bad_inputs(backend_cls, case, device)
    if check == "cuda_graph":
        return check_cuda_graph(backend_cls, case, params.get("capacity", 12))
    raise ValueError(f"replay file: unknown check {check!r}")
