"""The newcomer's path, end to end, as a stranger would walk it: build the wheel, install it in
a fresh virtual environment, check the Triton backend, install the template backend from
``examples/`` (it passes), install a copy with one planted bug (it fails), replay the saved
failure, and run the standalone repro script it emits.

Slow (a venv, a wheel, installs): about three minutes.  The installed command checks the Triton
backend on the shrink in bfloat16 (every check that applies; the interpreter's bf16 path, a
minute of one core); the whole ``ci`` run of the README's first command takes nine minutes of
the suite's two cores, more than its share of the suite's twenty, and is run as that command
(``tox -e conformance``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "lora_backend_template"

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "LORA_"))}
    env.pop("TRITON_INTERPRET", None)  # the installed package decides, as on a user's machine
    return env


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False, **kw
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _plant_bug(tmp: Path) -> Path:
    """A copy of the template under other names, with the scaling applied twice."""
    broken = tmp / "broken_backend"
    shutil.copytree(TEMPLATE, broken)
    (broken / "my_lora_backend").rename(broken / "broken_lora_backend")
    project = broken / "pyproject.toml"
    project.write_text(
        project.read_text()
        .replace('name = "my-lora-backend"', 'name = "broken-lora-backend"')
        .replace('template = "my_lora_backend', 'template-broken = "broken_lora_backend')
        .replace('packages = ["my_lora_backend"]', 'packages = ["broken_lora_backend"]')
    )
    code = broken / "broken_lora_backend" / "__init__.py"
    text = code.read_text().replace('version("my-lora-backend")', 'version("broken-lora-backend")')
    assert "out[rows, lo:hi] += s * term" in text
    code.write_text(
        text.replace("out[rows, lo:hi] += s * term", "out[rows, lo:hi] += s * s * term")
    )
    return broken


def test_newcomer_path(tmp_path):
    wheels = tmp_path / "dist"
    _ok(_run([sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(ROOT)], ROOT))
    wheel = next(wheels.glob("lora_conformance-*.whl"))

    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], tmp_path))
    py = str(venv / "bin" / "python")
    cli = str(venv / "bin" / "lora-conformance")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir"]
    _ok(_run([*pip, "torch==2.13.0"], tmp_path))  # the CPU build, as the README says
    _ok(_run([*pip, str(wheel)], tmp_path))

    work = tmp_path / "work"
    work.mkdir()
    assert _ok(_run([cli, "--version"], work)).stdout.startswith("lora-conformance 0.")
    # the Triton check runs beside the rest of the path (its longest step; two cores)
    log = (tmp_path / "triton.log").open("w")
    triton_job = subprocess.Popen(
        [cli, "check", "triton", "--ops", "shrink", "--dtypes", "bfloat16", "--report-json",
         "triton.json"], cwd=work, env=_env(),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    # the template backend, installed from its own folder, passes under its entry-point name
    _ok(_run([*pip, str(TEMPLATE)], tmp_path))
    _ok(_run([cli, "check", "template"], work))

    # a broken copy fails, its case is saved, replays, and its script reproduces without us
    _ok(_run([*pip, str(_plant_bug(tmp_path))], tmp_path))
    quick = ["--ops", "expand", "--dtypes", "float32", "--checks", "diff"]
    failed = _run([cli, "check", "template-broken", *quick], work)
    assert failed.returncode == 1, failed.stderr[-3000:]
    saved = sorted((work / "conformance-failures").glob("template-broken-diff-expand-*.json"))
    assert len(saved) == 1
    assert _run([cli, "replay", str(saved[0])], work).returncode == 1
    _ok(_run([cli, "replay", str(saved[0]), "--emit-script", "repro.py"], work))
    repro = _run([py, "repro.py"], work)
    assert repro.returncode == 1 and "REPRODUCED" in repro.stdout, repro.stdout + repro.stderr

    triton_job.wait(timeout=1800)
    log.close()
    output = (tmp_path / "triton.log").read_text()
    assert triton_job.returncode == 0, output[-3000:]
    report = json.loads((work / "triton.json").read_text())
    assert report["verdict"] == "PASS" and report["settings"]["profile"] == "ci"
    assert "Failed to initialize NumPy" not in output
