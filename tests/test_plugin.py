"""The pytest plugin: backend selection, header, skips/xfails files, loud failure when unset."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SUITE_ARGS = ["--pyargs", "conformance.suite", "-p", "no:cacheprovider", "--lora-profile", "ci"]


def test_suite_without_backend_errors_loudly(pytester):
    result = pytester.runpytest_subprocess(*SUITE_ARGS, "-k", "test_bad_inputs and shrink")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--lora-backend*LORA_CONFORMANCE_BACKEND*"])


def test_header_and_pass_on_reference(pytester):
    result = pytester.runpytest_subprocess(
        *SUITE_ARGS, "--lora-backend", "reference", "-k", "shrink"
    )
    result.stdout.fnmatch_lines(
        [
            "*lora-conformance: backend reference = lora_ref.reference:ReferenceLoRABackend*",
            "*torch*triton*profile ci*",
        ]
    )
    assert result.ret == 0


def test_env_var_names_backend_and_mutant_fails(pytester, monkeypatch):
    monkeypatch.setenv("LORA_CONFORMANCE_BACKEND", "tests.meta.mutants:ScalingIgnored")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess(
        *SUITE_ARGS,
        "-k",
        "test_matches_reference and expand and float32",
        f"--lora-failures-dir={pytester.path / 'f'}",
    )
    result.stdout.fnmatch_lines(["*replay: lora-conformance replay*"])
    assert result.ret == 1


def test_skips_and_xfails_files(pytester):
    skips = pytester.makefile(".txt", skips="# known\n*test_bad_inputs[shrink]*\n")
    xfails = pytester.makefile(".txt", xfails="test_bad_inputs[expand]\n")
    result = pytester.runpytest_subprocess(
        *SUITE_ARGS,
        "--lora-backend",
        "reference",
        "-k",
        "test_bad_inputs and (shrink or expand)",
        f"--skips-file={skips}",
        f"--xfails-file={xfails}",
        "-rsxX",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 1
    assert outcomes.get("xpassed", 0) + outcomes.get("xfailed", 0) == 1


def test_undeclared_capability_is_skipped_not_passed(pytester):
    # the triton backend declares no split layouts: that test must report skipped
    result = pytester.runpytest_subprocess(
        *SUITE_ARGS, "--lora-backend", "triton", "-k", "test_split_layouts", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 2 and "passed" not in outcomes
    result.stdout.fnmatch_lines(["*does not declare the split expand-weight layouts*"])


def test_stats_file_survives_and_summarises(pytester, capsys):
    from conformance.cli import main

    stats = pytester.path / "stats.jsonl"
    result = pytester.runpytest_subprocess(
        *SUITE_ARGS,
        "--lora-backend",
        "reference",
        "-k",
        "test_matches_reference and shrink",
        f"--lora-stats-file={stats}",
    )
    assert result.ret == 0
    lines = stats.read_text().splitlines()
    assert len(lines) == 36  # 3 dtypes x 12 ci examples
    assert main(["stats", str(stats)]) == 0
    assert "36 examples    0 failed" in capsys.readouterr().out
