"""The pytest-benchmark gate, in CPU smoke mode: a slowed kernel fails the compare, and a baseline
from another GPU is refused."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

ARGS = [
    "--pyargs",
    "conformance.bench.gates",
    "-p",
    "no:cacheprovider",
    "-k",
    "triton and (qkv or expand)",
]


@pytest.fixture
def storage(pytester, monkeypatch):
    monkeypatch.setenv("LORA_BENCH_PROVIDERS", "triton")
    folder = pytester.path / "bench-store"
    result = pytester.runpytest_subprocess(
        *ARGS, "--benchmark-autosave", f"--benchmark-storage={folder}"
    )
    assert result.ret == 0
    saved = list(folder.rglob("*.json"))
    assert len(saved) == 1
    doc = json.loads(saved[0].read_text())
    assert doc["machine_info"]["gpu"] == "none (CPU smoke mode)" and "triton" in doc["machine_info"]
    assert all(b["extra_info"]["bytes"] > 0 for b in doc["benchmarks"])
    return folder


def test_slowed_kernel_fails_the_gate(pytester, storage, monkeypatch):
    monkeypatch.setenv("LORA_BENCH_INJECT_SLEEP_MS", "200")
    result = pytester.runpytest_subprocess(
        *ARGS,
        f"--benchmark-storage={storage}",
        "--benchmark-compare",
        "--benchmark-compare-fail=median:10%",
    )
    assert result.ret != 0
    assert "Performance has regressed" in result.stdout.str() + result.stderr.str()


def test_baseline_from_another_gpu_is_refused(pytester, storage):
    saved = next(storage.rglob("*.json"))
    doc = json.loads(saved.read_text())
    doc["machine_info"]["gpu"] = "NVIDIA H100 80GB HBM3"
    saved.write_text(json.dumps(doc))
    result = pytester.runpytest_subprocess(
        *ARGS,
        f"--benchmark-storage={storage}",
        "--benchmark-compare",
        "--benchmark-compare-fail=median:10%",
    )
    assert result.ret != 0
    assert (
        "baseline was taken on 'NVIDIA H100 80GB HBM3'" in result.stdout.str() + result.stderr.str()
    )
