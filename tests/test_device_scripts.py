"""The device scripts (``benchmarks/device_*.sh``), dry-run on the CPU by ``benchmarks/dry_run.sh``:
each runs to its end, packs its tar, calls no missing command or function, and puts work on
every GPU it claims.  A script can otherwise only be tried on the device, where a typo costs a
call of the session's budget."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p.name for p in (ROOT / "benchmarks").glob("device_*.sh") if p.name != "device_common.sh"
)
GPUS = {"device_peers.sh": 4}  # four (the peers bundle), else two

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("script", SCRIPTS)
def test_device_script_dry_run(script, tmp_path):
    gpus = GPUS.get(script, 2)
    run = subprocess.run(
        ["bash", "benchmarks/dry_run.sh", f"benchmarks/{script}", str(tmp_path / "out"),
         f"DRY_GPUS={gpus}", "DEADLINE=600"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = (tmp_path / "out" / "script.log").read_text()
    assert run.returncode == 0, run.stdout + log
    assert "command not found" not in log and "syntax error" not in log, log
    assert list((tmp_path / "out").glob("*.tar")), f"{script} packed no tar:\n{log}"
    used = {line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("GPU ")}
    assert {f"GPU {i}" for i in range(gpus)} <= used, run.stdout
