"""The command line: exit codes, reports (JSON against its schema, JUnit, Markdown), saved
failures, replay, repro scripts, interrupts, and the CLI running exactly pytest's plan."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from conformance import oracle, tolerance
from conformance.cli import main
from conformance.plan import build_plan
from conformance.report import SCHEMA_FILE
from tests.capabilities import ALL as CAPABILITY_SETS

ROOT = Path(__file__).resolve().parents[1]
MUTANT = "tests.meta.mutants:ScalingTwice"
QUICK = ["--ops", "expand", "--dtypes", "float32", "--checks", "diff", "--max-examples", "3"]
SCHEMA = json.loads(SCHEMA_FILE.read_text())


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)


def test_unknown_backend_is_a_usage_error(capsys, tmp_path):
    assert main(["check", "no-such-backend", "--failures-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'no-such-backend'" in err and "reference" in err


def test_bad_options_are_usage_errors(tmp_path, capsys):
    assert main(["check", "reference", "--profile", "nope"]) == 2
    assert main(["check", "reference", "--max-examples", "0"]) == 2
    capsys.readouterr()
    blocked = tmp_path / "file"
    blocked.write_text("")
    # an output path that cannot be written fails at once, before any example runs
    started = time.monotonic()
    assert main(["check", "reference", "--report-json", str(blocked / "r.json")]) == 2
    assert main(["check", "reference", "--failures-dir", str(blocked / "f")]) == 2
    assert time.monotonic() - started < 5
    assert "cannot write" in capsys.readouterr().err


def test_version_and_plain_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lora-conformance ")
    assert main(["check", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "``" not in text and "::" not in text
    assert "(default: 300.0)" in text and "(default: None)" not in text


def test_reference_passes_with_every_report(tmp_path, capsys):
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "md")}
    code = main(
        ["check", "reference", "--report-json", str(paths["json"]), "--junit-xml",
         str(paths["xml"]), "--markdown", str(paths["md"]), "--failures-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert "PASS" in capsys.readouterr().err
    doc = json.loads(paths["json"].read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["status"] == "complete" and doc["exit_code"] == 0
    assert doc["backend"]["name"] == "reference" and doc["harness"]
    assert doc["settings"]["seed"] == 0 and doc["settings"]["limits"]["tokens"] > 0
    assert doc["environment"]["torch"] and doc["environment"]["triton"]
    by_check = {g["check"]: g for g in doc["groups"]}
    assert by_check["bad_input"]["worst_ratio"] is None  # not measured, not 0.0
    assert by_check["cuda_graph"]["outcome"] == "skip" and by_check["cuda_graph"]["skip_reason"]
    assert all(not e["missed"] for e in doc["coverage"].values())
    assert all(g["seconds"] >= 0 for g in doc["groups"])
    suite = ET.parse(paths["xml"]).getroot()
    assert suite.get("tests") == str(len(doc["groups"])) and suite.get("failures") == "0"
    assert "| group |" in paths["md"].read_text()


def test_failure_is_saved_replayed_and_emitted_as_a_script(tmp_path, capsys):
    failures = tmp_path / "fail"
    report = tmp_path / "r.json"
    code = main(["check", MUTANT, *QUICK, "--failures-dir", str(failures),
                 "--report-json", str(report)])  # fmt: skip
    assert code == 1
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    group = doc["groups"][0]
    assert group["outcome"] == "fail" and group["shrink_steps"] > 0
    # the hand-built cases of one group and its draws; shrink steps are counted apart
    from conformance import corners

    built = corners.explicit_cases("expand", "float32", ["float32"], "ci", True)
    assert group["examples"] <= len(built) + 3, (group["examples"], len(built))
    saved = sorted(failures.glob("*.json"))
    assert [p.name.split("-")[:4] for p in saved] == [
        ["tests.meta.mutants_ScalingTwice", "diff", "expand", "float32"]
    ]
    # run again in a fresh process, it fails the same way
    assert group["failure"]["alone"] == "reproduces"
    capsys.readouterr()
    assert main(["replay", str(saved[0]), "--trust"]) == 1
    assert "FAIL: wrong result" in capsys.readouterr().out
    assert main(["replay", str(saved[0]), "--backend", "reference"]) == 0
    # the standalone script: torch and the backend, not the harness
    script = tmp_path / "repro.py"
    assert main(["replay", str(saved[0]), "--trust", "--emit-script", str(script)]) == 0
    text = script.read_text()
    assert "import conformance" not in text and "from conformance" not in text
    # the oracle is carried, not retyped: its comparison and tolerance model, as they are
    for part in (oracle.compare, oracle.expect, tolerance.tolerance, tolerance.magnitudes):
        assert textwrap.dedent(inspect.getsource(part)) in text, part.__name__
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=False)  # fmt: skip
    assert run.returncode == 1 and "REPRODUCED" in run.stdout, run.stdout + run.stderr
    # the harness's own message: the same comparison made the same verdict
    assert group["failure"]["messages"][0].removeprefix("wrong result: ") in run.stdout


def test_a_failure_that_needs_earlier_calls_passes_alone(tmp_path, capsys):
    """A cache kept for the whole process under too coarse a key: the minimal case fails in the
    run and passes in a fresh process, and every summary says so; --no-fresh-replay skips it."""
    report = tmp_path / "r.json"
    args = ["check", "tests.meta.mutants:ProcessCacheKeyedOnK", "--ops", "shrink", "--dtypes",
            "float32", "--checks", "diff", "--max-examples", "4", "--failures-dir",
            str(tmp_path / "f"), "--report-json", str(report)]  # fmt: skip
    assert main([*args, "--markdown", str(tmp_path / "r.md")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    failure = doc["groups"][0]["failure"]
    assert failure["alone"] == "passes", failure
    assert "FAIL (passes alone)" in err and "PASSES alone, in a fresh process" in err
    assert "PASSES alone" in (tmp_path / "r.md").read_text()
    saved = json.loads(Path(failure["file"]).read_text())
    assert saved["alone"] == "passes"
    assert main(["replay", failure["file"], "--trust"]) == 0
    assert "the run that saved this case saw the same" in capsys.readouterr().out
    assert main([*args, "--no-fresh-replay"]) == 1
    assert json.loads(report.read_text())["groups"][0]["failure"]["alone"] is None


def test_nan_is_reported_as_nan(tmp_path):
    report = tmp_path / "r.json"
    args = ["--ops", "qkv", "--dtypes", "float32", "--checks", "diff", "--no-fresh-replay"]
    out = ["--failures-dir", str(tmp_path), "--report-json", str(report)]
    code = main(["check", "tests.meta.mutants:NaNTailTile", *args, *out])
    assert code == 1
    doc = json.loads(report.read_text())
    assert doc["groups"][0]["worst_ratio"] == "nan" and doc["worst_ratio"] == "nan"


def test_a_bogus_profile_variable_breaks_only_what_uses_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LORA_CONFORMANCE_PROFILE", "bogus")
    assert main(["list"]) == 0
    capsys.readouterr()
    assert main(["check", "reference", *QUICK, "--failures-dir", str(tmp_path)]) == 0
    monkeypatch.setenv("LORA_CONFORMANCE_PROFILE", "dev")
    assert main(["check", "reference", *QUICK, "--failures-dir", str(tmp_path),
                 "--report-json", str(tmp_path / "r.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["profile"] == "dev"


def test_list_says_what_is_installed(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["reference"]["installed"] and rows["triton"]["installed"]
    assert rows["triton"]["capabilities"]["dtypes"] == ["bfloat16", "float16", "float32"]
    peers = [r for n, r in rows.items() if n not in ("reference", "triton")]
    assert all(r["installed"] or r["error"] for r in peers)


def test_interrupt_leaves_a_partial_report_and_code_4(tmp_path):
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "check", "triton", "--report-json",
         str(report), "--failures-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)
        if report.exists() and json.loads(report.read_text()).get("groups"):
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 4
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["status"] == "interrupted" and doc["exit_code"] == 4
    assert 0 < len([g for g in doc["groups"] if g["outcome"] == "pass"]) < len(doc["plan"])


@pytest.mark.parametrize("backend", CAPABILITY_SETS, ids=lambda b: b.__name__)
def test_cli_runs_exactly_pytests_collection(backend, tmp_path):
    """The CLI's groups (its report's plan) equal pytest's collection of the suite, and both
    equal the plan built from the backend's capabilities."""
    name = f"tests.capabilities:{backend.__name__}"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "conformance.suite", "--collect-only", "-q",
         "-p", "no:cacheprovider", "--lora-backend", name],
        capture_output=True, text=True, cwd=ROOT, check=False,
    ).stdout  # fmt: skip
    ids = [line.split("[", 1)[1].rstrip("]") for line in collected.splitlines() if "[" in line]
    report = tmp_path / "r.json"
    main(["check", name, "--failures-dir", str(tmp_path), "--report-json", str(report),
          "--", "--collect-only"])  # fmt: skip
    cli = json.loads(report.read_text())["plan"]
    planned = [g.id for g in build_plan(backend.capabilities, "cpu")]
    assert ids == cli == planned


def test_one_option_table_feeds_every_front_end():
    """Each run option of ``conformance/settings.py`` is a ``check`` argument with the table's
    default, a keyword of the API with the same default, and a pytest option (or one of
    Hypothesis' or xdist's); docs/running.md shows the table as the code renders it."""
    from conformance import api, plugin, settings
    from conformance.cli import build_parser

    args = build_parser().parse_args(["check", "x"])
    signature = inspect.signature(api.check).parameters
    owned: list[str] = []

    class Group:  # what pytest_addoption is handed, recording the names
        def getgroup(self, *_):
            return self

        def addoption(self, *names, **_):
            owned.extend(names)

    plugin.pytest_addoption(Group())
    for s in settings.SETTINGS:
        name = s.spelled("api")
        if s.name != "profile":  # the CLI's profile default is LORA_CONFORMANCE_PROFILE's
            assert getattr(args, name) == s.default, s.name
        assert signature[name].default == s.default, s.name
        assert (s.spelled("pytest") in owned) == (s.pytest is None), s.name
    assert settings.markdown_table() in (ROOT / "docs" / "running.md").read_text()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"ops": ["nope"]}, "ops: expected a non-empty subset of shrink, expand, qkv, gate_up"),
        ({"checks": []}, "checks: expected a non-empty subset"),
        ({"max_examples": 0}, "max_examples: expected >= 1, got 0"),
        ({"deadline": -1.0}, "deadline: expected >= 0, got -1.0"),
        ({"device": "tpu"}, "device: expected one of cpu, cuda, got 'tpu'"),
        ({"profile": "fast"}, "profile: expected one of ci, dev, thorough, got 'fast'"),
    ],
)
def test_api_names_the_bad_option(given, message, tmp_path):
    from conformance import api

    with pytest.raises(api.UsageError, match=message.replace("(", r"\(")):
        api.check("reference", failures_dir=tmp_path, **given)
    assert not any(tmp_path.iterdir())  # nothing written before the error


def test_the_schema_names_every_check_and_exit_code():
    from conformance.failures import ALONE
    from conformance.names import CHECK_NAMES
    from conformance.report import EXIT_CODES

    group = SCHEMA["$defs"]["group"]["properties"]
    assert group["check"]["enum"] == list(CHECK_NAMES)
    assert SCHEMA["properties"]["exit_code"]["enum"] == sorted(EXIT_CODES)
    failure = group["failure"]["oneOf"][1]["properties"]
    assert failure["alone"]["enum"] == [*ALONE, None]
