"""The command line: exit codes, the report, saved failures and their replay."""

from __future__ import annotations

import json

from conformance.cli import main

MUTANT = "tests.meta.mutants:ScalingTwice"


def test_unknown_backend_is_a_usage_error(capsys):
    assert main(["check", "no-such-backend"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'no-such-backend'" in err and "reference" in err


def test_bad_option_is_a_usage_error():
    assert main(["check", "reference", "--profile", "nope"]) == 2
    assert main(["check", "reference", "--max-examples", "0"]) == 2


def test_reference_passes_with_a_table_and_json(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main(["check", "reference", "--max-examples", "3", "--report-json", str(report)])
    assert code == 0
    err = capsys.readouterr().err
    assert "worst err/tol" in err and "PASS" in err
    doc = json.loads(report.read_text())
    assert doc["ok"] and doc["backend"] == "reference"
    diff = [g for g in doc["groups"] if g["check"] == "diff"]
    assert len(diff) == 12 and all(g["passed"] == g["examples"] >= 3 for g in diff)
    assert any(g["skipped"] for g in doc["groups"] if g["check"] == "cuda_graph")


def test_failure_is_saved_and_replays(tmp_path, capsys):
    failures = tmp_path / "fail"
    code = main(
        [
            "check",
            MUTANT,
            "--max-examples",
            "20",
            "--ops",
            "expand",
            "--dtypes",
            "float32",
            "--checks",
            "diff",
            "--failures-dir",
            str(failures),
        ]
    )
    assert code == 1
    saved = sorted(failures.glob("*.json"))
    assert len(saved) == 1
    doc = json.loads(saved[0].read_text())
    assert doc["check"] == "diff" and doc["backend"] == MUTANT
    assert doc["case"]["op"] == "expand"
    capsys.readouterr()
    assert main(["replay", str(saved[0])]) == 1
    assert "FAIL: wrong result" in capsys.readouterr().out
    # the same case on the correct backend passes
    assert main(["replay", str(saved[0]), "--backend", "reference"]) == 0


def test_replay_rejects_non_case_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main(["replay", str(bad)]) == 2


def test_list(capsys):
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["reference", "triton"]


def test_bench_without_cuda_is_a_usage_error(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["bench", "triton"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
