"""Hostile replay files: special files (a named pipe, ``/dev/zero``), a case this machine cannot
run, and text that would escape a naive script template (a line break in a failure message,
triple quotes in a case name).  The corrupt documents of every field are in
``tests/test_replay.py``."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformance.cli import main
from tests.test_replay import GOOD, ROOT, _with, _write


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_special_file_is_a_usage_error_not_a_hang(special, tmp_path, capsys):
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe.json"
        os.mkfifo(path)
    assert main(["replay", str(path)]) == 2
    assert "a regular file" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_case_this_machine_cannot_run_is_a_usage_error(tmp_path, capsys):
    path = _write(tmp_path, "graph", json.dumps(_with("check", "cuda_graph")))
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot run here" in err and err.count("\n") == 1


def _hostile_doc(marker: Path) -> dict:
    """A failure file whose every string carries code that escapes a naive template: a line
    break in a failure message, triple quotes in the case name, quotes in the backend name."""
    code = f"open({marker.name!r}, 'w')"  # the script runs in the marker's folder
    q3, d3 = "'" * 3, '"' * 3
    doc = copy.deepcopy(GOOD)
    doc["failures"] = [f"wrong\n{code}\n#", f"x{q3}; {code}; {q3}", f"{d3}\n{code}\n{d3}"]
    doc["case"]["name"] = f"{d3}\n{code}\n{d3}{q3}\n{code}\n{q3}"
    doc["backend"] = f"reference'\n{code}\n'"
    doc["harness"] = f"1\n{code}"
    return doc


def test_an_emitted_script_carries_hostile_text_only_as_literals(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    marker = tmp_path / "payload-ran"
    path = _write(tmp_path, "hostile", json.dumps(_hostile_doc(marker)))
    script = tmp_path / "repro.py"
    assert main(["replay", str(path), "--backend", "reference", "--emit-script", str(script)]) == 0
    compile(script.read_text(), str(script), "exec")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr  # the reference passes its own case
    assert not marker.exists()


def test_an_emitted_script_names_only_an_importable_backend(tmp_path):
    path = _write(tmp_path, "good", json.dumps(GOOD))
    target = "os:system('true') or __import__"
    code = main(["replay", str(path), "--backend", target, "--emit-script",
                 str(tmp_path / "r.py")])  # fmt: skip
    assert code == 2 and not (tmp_path / "r.py").exists()
