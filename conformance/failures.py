"""Minimal failing cases as replay files: saved safely, loaded strictly, replayed, turned into
standalone repro scripts.

* Names: ``<backend>-<check>-<op>-<dtype>-<case hash>.json``, so two backends, two groups or two
  cases never share a file, under xdist and concurrent runs alike; the same failure saved twice
  lands in the same file with the same content.  Writes are atomic (a temporary file, then a
  rename).
* Loading validates the whole document (format, fields, check parameters, the case field by
  field, sizes against a cap) and raises :class:`ReplayFileError` naming what is wrong.
* The ``backend`` a file names is only a suggestion: replay imports it only when it is a built-in
  or an installed entry point, or when the user passes ``--trust``.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from conformance.case import DEFAULT_MAX_ELEMENTS, Case, CaseError

FORMAT = "lora-conformance-case/2"
OLD_FORMATS = ("lora-conformance-case/1",)
MAX_FILE_BYTES = 1 << 22
# what a minimal failing case did when run again in a fresh process: the same failure, a pass
# (it needs what ran before it in the run's process), a crash or timeout, or it could not be run
ALONE = ("reproduces", "passes", "crash", "timeout", "not run")

_TOP = {
    "format", "backend", "check", "op", "dtype", "group", "params", "failures", "kind",
    "worst_ratio", "case", "harness", "alone",
}  # fmt: skip


class ReplayFileError(ValueError):
    """A replay file that cannot be used: unreadable, not JSON, or not a valid case document."""


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80]


def failure_name(backend: str, check: str, op: str, dtype: str, case: Case) -> str:
    """The file name of a saved failure (see the module docstring)."""
    return f"{_safe(backend)}-{check}-{op}-{dtype}-{case.digest()}.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader never sees half a file and concurrent writers never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def failure_document(result: Any, backend: str, group: Any = None) -> dict[str, Any]:
    """The JSON document of a failing :class:`~conformance.checks.guards.CaseResult`."""
    from conformance.versions import harness_version

    harness = harness_version()
    ratio = result.worst_ratio
    return {
        "format": FORMAT,
        "harness": harness,
        "backend": backend,
        "check": result.check,
        "op": group.op if group is not None else result.case.op,
        "dtype": group.dtype if group is not None else result.case.dtype,
        "params": result.params,
        "kind": result.kind,
        "failures": result.failures,
        "worst_ratio": ratio if ratio is not None and math.isfinite(ratio) else None,
        "case": result.case.to_json(),
    }


def save_failure(folder: Path | str, result: Any, backend: str, group: Any = None,
                 alone: str | None = None) -> Path | None:  # fmt: skip
    """Save ``result`` under ``folder`` (with ``alone``, what it did in a fresh process, when
    known); returns the path, or None when the folder cannot be written (the run goes on; the
    report says the case was not saved)."""
    doc = failure_document(result, backend, group)
    if alone is not None:
        doc["alone"] = alone
    op, dtype = doc["op"], doc["dtype"]
    path = Path(folder) / failure_name(backend, result.check, op, dtype, result.case)
    try:
        write_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    except OSError:
        return None
    return path


def _require(ok: bool, where: str, expected: str, got: object) -> None:
    if not ok:
        raise ReplayFileError(f"{where}: expected {expected}, got {got!r:.80}")


def _params(check: str, params: object, max_elements: int) -> dict[str, Any]:
    from conformance.checks.metamorphic import RELATIONS

    _require(isinstance(params, dict), "params", "a JSON object", params)
    assert isinstance(params, dict)
    if check == "metamorphic":
        _require(params.get("relation") in RELATIONS, "params.relation", f"one of {RELATIONS}",
                 params.get("relation"))  # fmt: skip
        choice = params.get("choice")
        _require(isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < 2**63,
                 "params.choice", "a non-negative int", choice)  # fmt: skip
    elif check == "cuda_graph":
        cap = params.get("capacity", 12)
        _require(isinstance(cap, int) and not isinstance(cap, bool) and 1 <= cap <= 4096,
                 "params.capacity", "an int in [1, 4096]", cap)  # fmt: skip
    elif check == "lifecycle":
        from conformance.checks.lifecycle import STEP_KINDS

        steps = params.get("steps")
        _require(isinstance(steps, list) and 1 <= len(steps) <= 64, "params.steps",
                 "a list of 1 to 64 steps", steps)  # fmt: skip
        for s, step in enumerate(steps):
            if isinstance(step, list):  # the older form: a list of cases sharing a batch
                _require(1 <= len(step) <= 16, f"params.steps[{s}]", "a list of 1 to 16 cases",
                         step)  # fmt: skip
                found = [(f"params.steps[{s}][{k}]", c) for k, c in enumerate(step)]
            else:
                _require(isinstance(step, dict) and set(step) == {"kind", "case"},
                         f"params.steps[{s}]", "an object with the keys kind and case",
                         step)  # fmt: skip
                _require(step["kind"] in STEP_KINDS, f"params.steps[{s}].kind",
                         f"one of {STEP_KINDS}", step["kind"])  # fmt: skip
                found = [(f"params.steps[{s}].case", step["case"])]
            for where, c in found:
                try:
                    Case.from_json(c, max_elements)
                except CaseError as exc:
                    raise ReplayFileError(f"{where}: {exc}") from exc
    return params


def load_failure(path: Path | str, max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, Any]:
    """Read and validate a replay file; raises :class:`ReplayFileError` naming the problem."""
    from conformance.checks import CHECKS

    p = Path(path)
    try:
        # a regular file only: a named pipe would block, /dev/zero never ends
        _require(stat.S_ISREG(p.stat().st_mode), f"replay file {p}", "a regular file",
                 "a pipe, device or other special file")  # fmt: skip
        with open(p, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        _require(len(raw) <= MAX_FILE_BYTES, f"replay file {p}",
                 f"at most {MAX_FILE_BYTES} bytes", "more")  # fmt: skip
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayFileError(f"replay file {p}: cannot read it: {exc}") from exc
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers past 4300 digits
        raise ReplayFileError(f"replay file {p}: not JSON: {exc}") from exc
    _require(isinstance(doc, dict), f"replay file {p}", "a JSON object", type(doc).__name__)
    fmt = doc.get("format")
    _require(fmt == FORMAT or fmt in OLD_FORMATS, "format", repr(FORMAT), fmt)
    unknown = sorted(set(doc) - _TOP)
    _require(not unknown, "replay file", "only known fields", unknown)
    _require(isinstance(doc.get("backend"), str) and 0 < len(doc["backend"]) <= 300, "backend",
             "a backend name", doc.get("backend"))  # fmt: skip
    _require(doc.get("check") in CHECKS, "check", f"one of {tuple(CHECKS)}", doc.get("check"))
    try:
        case = Case.from_json(doc.get("case"), max_elements)
    except CaseError as exc:
        raise ReplayFileError(str(exc)) from exc
    params = _params(doc["check"], doc.get("params", {}), max_elements)
    failures = doc.get("failures", [])
    _require(isinstance(failures, list) and all(isinstance(f, str) for f in failures),
             "failures", "a list of strings", failures)  # fmt: skip
    kind = doc.get("kind", "fail")
    _require(kind in ("fail", "crash", "timeout"), "kind", "fail, crash or timeout", kind)
    _require(doc.get("op", case.op) in (case.op, "mixed"), "op", f"the case's op {case.op!r}",
             doc.get("op"))  # fmt: skip
    _require(doc.get("dtype", case.dtype) in (case.dtype, "mixed"), "dtype",
             f"the case's dtype {case.dtype!r}", doc.get("dtype"))  # fmt: skip
    for field in ("harness", "group"):
        value = doc.get(field, "")
        _require(isinstance(value, str) and len(value) <= 300, field, "a short string", value)
    _require(doc.get("alone") in (None, *ALONE), "alone", f"null or one of {ALONE}",
             doc.get("alone"))  # fmt: skip
    ratio = doc.get("worst_ratio")
    _require(ratio is None or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
                               and math.isfinite(ratio) and ratio >= 0),
             "worst_ratio", "null or a finite number >= 0", ratio)  # fmt: skip
    return {**doc, "case": case, "params": params, "failures": failures, "kind": kind}


def file_backend_is_safe(name: str) -> bool:
    """A backend name a replay file may name without ``--trust``: a built-in or an installed
    entry point (never ``module:Class``, which would import whatever the file says)."""
    from lora_ref.registry import backend_target

    return ":" not in name and backend_target(name) is not None
