"""The pytest plugin: backend selection, header, one test per group, skips/xfails files,
failure files named like the CLI's, xdist, loud failure when no backend is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SUITE = ["--pyargs", "conformance.suite", "-p", "no:cacheprovider", "--hypothesis-profile", "ci"]
# (the fresh replay of a failure, tested in test_cli.py, costs a process start: not here)
QUICK = ["--lora-checks", "diff", "--lora-dtypes", "float32", "--lora-max-examples", "2",
         "--lora-no-fresh-replay"]  # fmt: skip


def test_suite_without_backend_errors_loudly(pytester):
    result = pytester.runpytest_subprocess(*SUITE)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--lora-backend*LORA_CONFORMANCE_BACKEND*"])


def test_header_and_one_test_per_group(pytester):
    result = pytester.runpytest_subprocess(
        *SUITE, *QUICK, "--lora-backend", "reference", "--lora-ops", "shrink,expand", "-v"
    )
    result.stdout.fnmatch_lines(
        [
            "*lora-conformance: backend reference = lora_ref.reference:ReferenceLoRABackend*",
            "*torch*triton*profile ci, seed 0*",
            "*test_conformance?diff-shrink-float32? PASSED*",
            "*test_conformance?diff-expand-float32? PASSED*",
        ]
    )
    assert result.ret == 0


def test_env_var_names_backend_and_two_backends_never_share_a_failure_file(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    folder = pytester.path / "f"
    for mutant in ("ScalingIgnored", "ScalingTwice"):
        monkeypatch.setenv("LORA_CONFORMANCE_BACKEND", f"tests.meta.mutants:{mutant}")
        result = pytester.runpytest_subprocess(
            *SUITE, *QUICK, "--lora-ops", "expand", f"--lora-failures-dir={folder}"
        )
        result.stdout.fnmatch_lines(["*replay: lora-conformance replay*"])
        assert result.ret == 1
    names = sorted(p.name for p in folder.glob("*.json"))
    assert len(names) == 2 and names[0].startswith("tests.meta.mutants_ScalingIgnored-diff-expand")


def test_skips_and_xfails_files(pytester):
    skips = pytester.makefile(".txt", skips="# known\n*diff-shrink-float32*\n")
    xfails = pytester.makefile(".txt", xfails="test_conformance[diff-expand-float32]\n")
    result = pytester.runpytest_subprocess(
        *SUITE, *QUICK, "--lora-backend", "reference", "--lora-ops", "shrink,expand",
        f"--skips-file={skips}", f"--xfails-file={xfails}", "-rsxX",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 1
    assert outcomes.get("xpassed", 0) + outcomes.get("xfailed", 0) == 1


def test_undeclared_capability_is_skipped_not_passed(pytester):
    # the triton backend declares no split layouts: those groups report skipped, with why
    result = pytester.runpytest_subprocess(
        *SUITE, "--lora-backend", "triton", "--lora-checks", "split_layout", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 2 and "passed" not in outcomes
    result.stdout.fnmatch_lines(["*split expand-weight layouts not declared by backend*"])


def test_report_merges_xdist_workers(pytester):
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        *SUITE, *QUICK, "--lora-backend", "reference", "-p", "xdist", "-n", "2",
        f"--lora-report={report}",
    )  # fmt: skip
    assert result.ret == 0
    doc = json.loads(report.read_text())
    assert doc["status"] == "complete" and len(doc["groups"]) == len(doc["plan"]) == 4
    assert all(g["outcome"] == "pass" and g["examples"] > 0 for g in doc["groups"])


def test_hypothesis_seed_is_the_run_seed(pytester):
    report = pytester.path / "r.json"
    pytester.runpytest_subprocess(
        *SUITE, *QUICK, "--lora-backend", "reference", "--lora-ops", "shrink",
        "--hypothesis-seed", "1234", f"--lora-report={report}",
    )  # fmt: skip
    assert json.loads(report.read_text())["settings"]["seed"] == 1234


def test_plugin_names_the_bad_option(pytester):
    result = pytester.runpytest_subprocess(
        *SUITE, "--lora-backend", "reference", "--lora-max-examples", "0"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--lora-max-examples: expected >= 1, got 0" in result.stderr.str()
