"""A kernel that breaks the CUDA context: under --isolate its example is a crash that names the
broken context, and the groups after it run on a new worker; in process it is a crash too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("isolate", [True, False])
def test_a_broken_context_is_a_crash_and_isolate_replaces_the_worker(isolate, tmp_path):
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "conformance.cli", "check",
           "tests.gpu.broken_context:ShrinkBreaksContext", "--device", "cuda", "--ops", "shrink",
           "expand", "--dtypes", "float32", "--checks", "diff", "--max-examples", "2",
           "--failures-dir", str(tmp_path), "--report-json", str(report)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd + (["--isolate"] if isolate else []), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    groups = {g["id"]: g for g in json.loads(report.read_text())["groups"]}
    shrink, expand = groups["diff-shrink-float32"], groups["diff-expand-float32"]
    assert shrink["outcome"] == "crash", run.stderr[-2000:]
    assert "the CUDA context is broken" in " ".join(shrink["failure"]["messages"])
    if isolate:  # the expand group ran on a new worker's context
        assert expand["outcome"] == "pass", expand
