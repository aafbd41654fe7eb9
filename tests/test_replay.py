"""Replay trusts nothing in its file: a corrupted file is a usage error (exit 2), never "the
failure reproduces" (exit 1); sizes are capped; the module a file names is imported only when
the user says so."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conformance.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "format": "lora-conformance-case/2",
    "backend": "reference",
    "check": "diff",
    "op": "expand",
    "dtype": "float32",
    "params": {},
    "kind": "fail",
    "failures": ["wrong result"],
    "worst_ratio": 3.0,
    "case": {
        "op": "expand", "dtype": "float32", "seg_lens": [2, 1], "weight_indices": [0, 1],
        "lora_ranks": [2, 0], "scalings": [1.5, 0.0], "R": 2, "K": 0, "N": 5, "n_kv": 0,
        "stack": 1, "permute": False, "has_base": True, "poison": "nan", "seed": 7,
        "layout": "random", "split_b": False, "data": "gaussian", "strides": "contiguous",
        "extra_cols": 0, "poison_unused": False, "name": "",
    },
}  # fmt: skip


def _with(path: str, value) -> dict:
    doc = copy.deepcopy(GOOD)
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


_DELETE = object()
CORRUPT_DOCS = {
    "wrong format": _with("format", "something-else/9"),
    "no format": _with("format", _DELETE),
    "unknown top-level field": _with("evil", 1),
    "backend is a number": _with("backend", 3),
    "backend is empty": _with("backend", ""),
    "unknown check": _with("check", "rm -rf"),
    "case is a list": _with("case", [1, 2]),
    "case missing": _with("case", _DELETE),
    "case field missing": _with("case.seg_lens", _DELETE),
    "case field unknown": _with("case.evil", 1),
    "negative segment length": _with("case.seg_lens", [2, -1]),
    "segment length a string": _with("case.seg_lens", ["2", 1]),
    "slot out of range": _with("case.weight_indices", [0, 5]),
    "rank above R": _with("case.lora_ranks", [9, 0]),
    "NaN scaling": _with("case.scalings", [float("nan"), 0.0]),
    "infinite scaling": _with("case.scalings", [float("inf"), 0.0]),
    "one scaling too few": _with("case.scalings", [1.0]),
    "unknown dtype": _with("case.dtype", "float8"),
    "unknown op": _with("case.op", "conv"),
    "stack 4": _with("case.stack", 4),
    "stack for the op": _with("case.stack", 3),
    "huge N": _with("case.N", 1 << 25),
    "huge T": _with("case.seg_lens", [1 << 24, 1 << 24]),
    "negative seed": _with("case.seed", -1),
    "boolean K": _with("case.K", True),
    "n_kv on expand": _with("case.n_kv", 3),
    "unknown data mode": _with("case.data", "random"),
    "metamorphic without a relation": _with("check", "metamorphic"),
    "lifecycle without steps": _with("check", "lifecycle"),
    "cuda_graph capacity 0": _with("params", {"capacity": 0}) | {"check": "cuda_graph"},
    "failures not strings": _with("failures", [1, 2]),
    "unknown kind": _with("kind", "oops"),
    "op unlike the case's": _with("op", "shrink"),
    "op garbage": _with("op", {"x": 1}),
    "dtype unlike the case's": _with("dtype", "float16"),
    "harness a number": _with("harness", 7),
    "group a list": _with("group", [1]),
    "worst_ratio a string": _with("worst_ratio", "big"),
    "worst_ratio negative": _with("worst_ratio", -1.0),
}
CORRUPT_TEXTS = {
    "a 5000-digit integer": json.dumps(GOOD).replace('"seed": 7', '"seed": ' + "9" * 5000),
    "empty file": "",
    "not JSON": "{not json",
    "truncated": json.dumps(GOOD)[:100],
    "a JSON list": "[1, 2, 3]",
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
}


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / f"{name.replace(' ', '_')}.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("name", [*CORRUPT_DOCS, *CORRUPT_TEXTS, "binary", "too large"])
def test_a_corrupted_file_is_a_usage_error(name, tmp_path, capsys):
    if name in CORRUPT_DOCS:
        text: str | bytes = json.dumps(CORRUPT_DOCS[name])
    elif name in CORRUPT_TEXTS:
        text = CORRUPT_TEXTS[name]
    elif name == "binary":
        text = bytes(range(256)) * 4
    else:
        text = json.dumps(GOOD) + " " * (5 << 20)
    path = _write(tmp_path, name, text)
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lora-conformance: error:") and err.count("\n") == 1


def test_corrupted_files_are_many():
    assert len(CORRUPT_DOCS) + len(CORRUPT_TEXTS) + 2 >= 25


def test_the_size_cap_is_configurable(tmp_path, capsys):
    doc = _with("case.N", 3000)
    doc["case"]["seg_lens"] = [3000, 0]
    path = _write(tmp_path, "big", json.dumps(doc))
    assert main(["replay", str(path), "--max-elements", "1000000"]) == 2
    assert "exceeds the limit of 1000000" in capsys.readouterr().err
    assert main(["replay", str(path), "--max-elements", "100000000"]) == 0


def test_a_good_file_replays(tmp_path):
    path = _write(tmp_path, "good", json.dumps(GOOD))
    assert main(["replay", str(path)]) == 0  # the reference passes its own case


def test_a_module_the_file_names_is_not_imported_without_trust(tmp_path, monkeypatch, capsys):
    """An ``evilmod.py`` beside the file would run its code at import: replay refuses to import
    a module:Class the file names unless --backend or --trust says so."""
    marker = tmp_path / "evil-ran"
    (tmp_path / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from lora_ref import ReferenceLoRABackend as Backend\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{ROOT}")
    path = _write(tmp_path, "evil", json.dumps(_with("backend", "evilmod:Backend")))
    assert main(["replay", str(path)]) == 2
    assert not marker.exists()
    assert "--trust" in capsys.readouterr().err
    assert main(["replay", str(path), "--backend", "reference"]) == 0
    assert not marker.exists()
    assert main(["replay", str(path), "--trust"]) == 0
    assert marker.exists()


def test_replay_says_1_only_when_the_failure_reproduces(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    path = _write(tmp_path, "good", json.dumps(GOOD))
    assert main(["replay", str(path), "--backend", "tests.meta.mutants:ScalingTwice"]) == 1
    assert main(["replay", str(path), "--backend", "tests.hostile.backends:ConstructorRaises"]) == 3
    assert main(["replay", str(path), "--backend", "no.such.module:Backend"]) == 2
