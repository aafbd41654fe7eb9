"""The report of a run: one JSON document, written as the run goes, read by CI.

The document (``report.schema.json`` beside this file) holds the harness and backend versions,
the environment (torch, Triton, GPU, driver), the settings (profile, seed, example limits, size
caps), one record per group (outcome, examples, shrink steps, seconds, worst error/tolerance,
corner counts, what it reached of the input space, the minimal failure with its replay file),
the corner coverage per op and, per group, the space coverage: per dimension the log2 bins and
power-of-two boundaries reached, per argument the layouts (:func:`conformance.space.summary`).  JSON
has no NaN or infinity: a worst ratio is a number, ``null`` (not measured), or the strings
``"nan"`` and ``"inf"``.

From the document come the exit code (:func:`exit_code`), a Markdown summary for a CI job page
(:meth:`Report.markdown`) and JUnit XML (:meth:`Report.junit`).  Nothing here imports torch: the
command line's supervising process renders reports without loading it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.failures import ALONE, write_atomic

SCHEMA = "lora-conformance-report/1"
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")

# exit codes, in pytest's spirit
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED, EXIT_NOTHING = 0, 1, 2, 3, 4, 5
EXIT_CODES = {
    EXIT_PASS: "every group ran and passed (skips are listed, never counted as passes)",
    EXIT_FAIL: "a conformance failure: a wrong result, a wrong error, an accepted bad input",
    EXIT_USAGE: "a usage error: a bad option, an unknown backend, a corrupt replay file",
    EXIT_CRASH: "the backend crashed (or tried to end the process) or the harness failed",
    EXIT_INTERRUPTED: "interrupted, or an example outlived its deadline",
    EXIT_NOTHING: "nothing ran: every group was skipped (what the backend does not declare), "
    "so there is no pass to report",
}


def group_record(group_id: str, outcome: str, **fields: Any) -> dict[str, Any]:
    """A group's report record with nothing measured (a skip, a group never run, a crash the
    supervisor saw); ``fields`` override the defaults."""
    check, op, dtype = group_id.split("-")
    record: dict[str, Any] = {
        "id": group_id, "check": check, "op": op, "dtype": dtype, "outcome": outcome,
        "examples": 0, "shrink_steps": 0, "seconds": 0.0, "worst_ratio": None, "corners": {},
        "space": {}, "skip_reason": None, "error": None, "failure": None,
    }  # fmt: skip
    record.update(fields)
    return record


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def ratio_to_json(x: float | None) -> float | str | None:
    if x is None:
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    return round(x, 6)


def ratio_from_json(x: float | str | None) -> float | None:
    if isinstance(x, str):
        return math.nan if x == "nan" else math.inf
    return x


def fmt_ratio(x: float | str | None) -> str:
    """A worst ratio for a table: ``-`` when not measured, ``nan`` and ``inf`` as such."""
    x = ratio_from_json(x)
    if x is None:
        return "-"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.3f}"


def exit_code(doc: dict[str, Any]) -> int:
    """The exit code of a report (see :data:`EXIT_CODES`).  A run that did not finish never
    gets 0."""
    status = doc.get("status")
    if status == "usage_error":
        return EXIT_USAGE
    if status == "interrupted":
        return EXIT_INTERRUPTED
    outcomes = {g.get("outcome") for g in doc.get("groups", [])}
    if "timeout" in outcomes:
        return EXIT_INTERRUPTED
    if status != "complete" or outcomes & {"crash", "error", "not run"}:
        return EXIT_CRASH
    if "fail" in outcomes:
        return EXIT_FAIL
    if outcomes <= {"skip"}:
        return EXIT_NOTHING
    return EXIT_PASS


def verdict(doc: dict[str, Any]) -> str:
    return {
        EXIT_PASS: "PASS",
        EXIT_FAIL: "FAIL",
        EXIT_USAGE: "USAGE ERROR",
        EXIT_CRASH: "CRASH",
        EXIT_INTERRUPTED: "INTERRUPTED" if doc.get("status") == "interrupted" else "TIMEOUT",
        EXIT_NOTHING: "NOTHING RUN",
    }[exit_code(doc)]


def summarize(doc: dict[str, Any]) -> None:
    """Fill in the totals, the worst ratio and the corner coverage per op from the groups."""
    from conformance.corners import promised

    groups = doc.get("groups", [])
    totals: dict[str, int] = {
        "examples": 0, "shrink_steps": 0, "outside_domain": 0, "below_signal_floor": 0,
    }  # fmt: skip
    for g in groups:
        totals["examples"] += g.get("examples", 0)
        totals["below_signal_floor"] += g.get("below_signal_floor", 0)
        totals["shrink_steps"] += g.get("shrink_steps", 0)
        totals["outside_domain"] += g.get("outside_domain", 0)
        totals[g["outcome"]] = totals.get(g["outcome"], 0) + 1
    doc["totals"] = totals
    worst: float | None = None
    for g in groups:
        r = ratio_from_json(g.get("worst_ratio"))
        if r is None:
            continue
        worst = (
            r if worst is None or math.isnan(r) else (worst if math.isnan(worst) else max(worst, r))
        )
    doc["worst_ratio"] = ratio_to_json(worst)
    coverage: dict[str, Any] = {}
    profile = doc.get("settings", {}).get("profile", "ci")
    declared = doc.get("backend", {}).get("capabilities", {})
    permutation = declared.get("permutation", True)
    n_slices = declared.get("n_slices", False)
    for g in groups:
        if g["check"] != "diff" or g["outcome"] == "skip":
            continue
        entry = coverage.setdefault(g["op"], {"counts": {}, "promised": [], "missed": []})
        for name, n in g.get("corners", {}).items():
            entry["counts"][name] = entry["counts"].get(name, 0) + n
    for op, entry in coverage.items():
        entry["promised"] = promised(op, profile, permutation, n_slices)
        entry["missed"] = [c for c in entry["promised"] if not entry["counts"].get(c)]
    doc["coverage"] = coverage
    from conformance import space

    doc["space"] = {g["id"]: space.summary(g["space"]) for g in groups if g.get("space")}
    doc["exit_code"] = exit_code(doc)
    doc["verdict"] = verdict(doc)


def seal(doc: dict[str, Any], key: bytes) -> str:
    """The HMAC-SHA256 of ``doc`` (its ``seal`` field left out) under ``key``: the CLI gives
    its pytest child a secret, and takes only a report sealed with it as the child's."""
    body = json.dumps({k: v for k, v in doc.items() if k != "seal"}, sort_keys=True)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sealed(doc: dict[str, Any], key: bytes) -> bool:
    """Whether ``doc`` carries the seal of ``key``."""
    return isinstance(doc.get("seal"), str) and hmac.compare_digest(doc["seal"], seal(doc, key))


def write_report(path: Path | str, doc: dict[str, Any], key: bytes | None = None) -> None:
    """Summarize ``doc`` and write it atomically (sealed with ``key``, when given)."""
    summarize(doc)
    doc.pop("seal", None)
    if key is not None:
        doc["seal"] = seal(doc, key)
    write_atomic(Path(path), json.dumps(doc, indent=2) + "\n")


@dataclass
class Report:
    """A run's report: the JSON document, with the views a caller wants."""

    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path | str) -> Report:
        return cls(json.loads(Path(path).read_text()))

    @property
    def exit_code(self) -> int:
        return exit_code(self.data)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_PASS

    @property
    def groups(self) -> list[dict[str, Any]]:
        return self.data.get("groups", [])

    @property
    def worst_ratio(self) -> float | None:
        summarize(self.data)
        return ratio_from_json(self.data.get("worst_ratio"))

    @property
    def verdict(self) -> str:
        return verdict(self.data)

    def markdown(self) -> str:
        return to_markdown(self.data)

    def junit(self) -> str:
        return to_junit(self.data)


GROUP_COLUMNS = ("group", "outcome", "examples", "shrink steps", "worst err/tol", "seconds")


def group_cells(g: dict[str, Any]) -> tuple[str, ...]:
    """One group's row of :data:`GROUP_COLUMNS`, as every table of a run shows it (the command
    line's, pytest's terminal summary and the Markdown summary)."""
    outcome = "FAIL" if g["outcome"] == "fail" else g["outcome"]
    if g.get("skip_reason"):
        outcome += f": {g['skip_reason']}"
    elif (g.get("failure") or {}).get("flaky"):
        outcome += " (flaky)"
    elif (g.get("failure") or {}).get("alone") == "passes":
        outcome += " (passes alone)"
    return (g["id"], outcome, str(g.get("examples", 0)), str(g.get("shrink_steps", 0)),
            fmt_ratio(g.get("worst_ratio")), f"{g.get('seconds', 0):.1f}")  # fmt: skip


def verdict_line(doc: dict[str, Any]) -> str:
    """The verdict with the domain it holds in: ``PASS within K >= 16, rank % 8 == 0 (3
    hand-built cases outside it not run)``; the bare verdict for the whole space."""
    domain = (doc.get("settings") or {}).get("domain")
    if not domain:
        return str(doc.get("verdict"))
    left = (doc.get("totals") or {}).get("outside_domain", 0)
    return f"{doc.get('verdict')} within {domain} ({left} hand-built cases outside it not run)"


def corner_line(op: str, entry: dict[str, Any]) -> str:
    """How many of the corner classes promised for ``op`` a run reached, and which it missed."""
    promised, missed = entry.get("promised", []), entry.get("missed", [])
    line = (
        f"corners, {op}: {len(promised) - len(missed)} of {len(promised)} promised classes reached"
    )
    return line + (f"; missed: {', '.join(missed)}" if missed else "")


# what a failure's ``alone`` field means, in the words every summary shows
# (one line per value of ``failures.ALONE``, in its order)
ALONE_LINES = dict(zip(ALONE, (
    "fails again alone, in a fresh process",
    "PASSES alone, in a fresh process: the failure needs what ran before it in the run's "
    "process (state kept between calls: a cache keyed too coarsely, a pool, a stale buffer); "
    "replay it after the calls before it, or read the backend's caches",
    "crashes alone, in a fresh process",
    "times out alone, in a fresh process",
    "could not be run again in a fresh process (the worker did not load the backend)",
), strict=True))  # fmt: skip


def _failure_line(g: dict[str, Any]) -> str:
    f = g.get("failure") or {}
    text = "; ".join(f.get("messages", []))[:400] or g.get("error") or ""
    alone = ALONE_LINES.get(f.get("alone") or "")
    return f"{text} ({alone})" if alone else text


def to_markdown(doc: dict[str, Any]) -> str:
    """A short summary for a CI job page: verdict, versions, one row per group, failures."""
    summarize(doc)
    b = doc.get("backend", {})
    env = doc.get("environment", {})
    s = doc.get("settings", {})
    lines = [
        f"## lora-conformance: {verdict_line(doc)} ({b.get('name')})",
        "",
        f"- backend `{b.get('name')}` = `{b.get('target')}`, version {b.get('version')}",
        f"- device {env.get('device')}{' (' + env['gpu'] + ')' if env.get('gpu') else ''}, "
        f"torch {env.get('torch')}, Triton {env.get('triton')}, harness {doc.get('harness')}",
        f"- profile {s.get('profile')}, seed {s.get('seed')}, "
        f"{doc['totals']['examples']} examples ({doc['totals'].get('below_signal_floor', 0)} "
        f"below the signal floor, not evidence), {doc['totals']['shrink_steps']} shrink steps, "
        f"worst error/tolerance {fmt_ratio(doc.get('worst_ratio'))}",
        "",
        "| " + " | ".join(GROUP_COLUMNS) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += ["| " + " | ".join(group_cells(g)) + " |" for g in doc.get("groups", [])]
    bad = [
        g for g in doc.get("groups", []) if g["outcome"] in ("fail", "crash", "timeout", "error")
    ]
    if bad:
        lines += ["", "### Failures", ""]
        for g in bad:
            f = g.get("failure") or {}
            lines.append(f"- **{g['id']}** ({g['outcome']}): {_failure_line(g)}")
            if f.get("file"):
                lines.append(f"  replay: `lora-conformance replay {f['file']}`")
    missed = [op for op, e in doc.get("coverage", {}).items() if e["missed"]]
    if missed:
        lines += ["", "### Corner classes not reached", ""]
        lines += [f"- {corner_line(op, doc['coverage'][op])}" for op in missed]
    if doc.get("error"):
        lines += ["", f"**{doc['error']}**"]
    return "\n".join(lines) + "\n"


def to_junit(doc: dict[str, Any]) -> str:
    """JUnit XML: one test case per group; failures as ``failure``, crashes, timeouts and
    harness errors as ``error``, skips as ``skipped``."""
    summarize(doc)
    groups = doc.get("groups", [])
    name = f"lora-conformance.{doc.get('backend', {}).get('name')}"
    count = {k: sum(g["outcome"] == k for g in groups) for k in ("fail", "skip")}
    errors = sum(g["outcome"] in ("crash", "timeout", "error", "not run") for g in groups)
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(groups)),
        failures=str(count["fail"]),
        errors=str(errors + (1 if doc.get("error") else 0)),
        skipped=str(count["skip"]),
        time=f"{sum(g.get('seconds', 0) for g in groups):.3f}",
        timestamp=doc.get("started", ""),
    )
    props = ET.SubElement(suite, "properties")
    for key in ("status", "harness", "verdict"):
        ET.SubElement(props, "property", name=key, value=str(doc.get(key)))
    for key, value in doc.get("settings", {}).items():
        ET.SubElement(props, "property", name=key, value=json.dumps(value))
    for g in groups:
        case = ET.SubElement(
            suite, "testcase", classname=name, name=g["id"], time=f"{g.get('seconds', 0):.3f}"
        )
        line = _failure_line(g)
        replay = (g.get("failure") or {}).get("file")
        text = line + (f"\nreplay: lora-conformance replay {replay}" if replay else "")
        if g["outcome"] == "fail":
            ET.SubElement(case, "failure", message=line[:200]).text = text
        elif g["outcome"] in ("crash", "timeout", "error", "not run"):
            ET.SubElement(case, "error", message=f"{g['outcome']}: {line[:200]}").text = text
        elif g["outcome"] == "skip":
            ET.SubElement(case, "skipped", message=g.get("skip_reason") or "")
    if doc.get("error"):
        case = ET.SubElement(suite, "testcase", classname=name, name="load")
        ET.SubElement(case, "error", message=doc["error"][:200]).text = doc["error"]
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )
