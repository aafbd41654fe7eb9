"""The device driver (``benchmarks/device.sh``), dry-run on the CPU by ``benchmarks/dry_run.sh``:
each job, and every job in one call, runs to its end, packs the tar, calls no missing command or
function, and puts work on every GPU the call has.  A script can otherwise only be tried on the
device, where a typo costs a call of the session's budget."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "benchmarks" / "device.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _jobs() -> list[str]:
    if shutil.which("bash") is None:
        return []
    listing = subprocess.run(["bash", str(DRIVER), "--list"], capture_output=True, text=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]


JOBS = _jobs()


def _dry_run(tmp_path: Path, jobs: str, gpus: int) -> tuple[subprocess.CompletedProcess, str]:
    run = subprocess.run(
        ["bash", "benchmarks/dry_run.sh", "benchmarks/device.sh", str(tmp_path / "out"),
         f"DRY_GPUS={gpus}", "DEADLINE=600", f"JOBS={jobs}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return run, (tmp_path / "out" / "script.log").read_text()


def test_the_job_table_lists_every_job_the_docs_name():
    assert {"ci", "gpu-tests", "memcheck", "grid", "peers", "gate", "ncu", "thorough"} <= set(JOBS)


@pytest.mark.parametrize("job", JOBS)
def test_each_job_dry_runs(job, tmp_path):
    run, log = _dry_run(tmp_path, job, 2)
    assert run.returncode == 0, run.stdout + log
    assert "command not found" not in log and "syntax error" not in log, log
    assert (tmp_path / "out" / "device.tar").exists(), log
    used = {line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("GPU ")}
    if job == "thorough":  # one shard per GPU
        assert {"GPU 0", "GPU 1"} <= used, run.stdout


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_every_job_in_one_call_spreads_over_the_gpus(gpus, tmp_path):
    run, log = _dry_run(tmp_path, " ".join(JOBS), gpus)
    assert run.returncode == 0, run.stdout + log
    assert "command not found" not in log and "syntax error" not in log, log
    used = {line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("GPU ")}
    assert {f"GPU {i}" for i in range(gpus)} <= used, run.stdout
    # each job's line in jobs.txt (what the call prints at its end)
    for job in JOBS:
        assert f"\n{job} GPU " in "\n" + log, log


def test_an_unknown_job_is_refused_before_anything_runs(tmp_path):
    run, log = _dry_run(tmp_path, "ci no-such-job", 2)
    assert run.returncode == 2
    assert "unknown job 'no-such-job'" in log
    assert not any(line.startswith("GPU ") for line in run.stdout.splitlines()), run.stdout
