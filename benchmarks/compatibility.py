"""Turn ``lora-conformance check --report-json`` reports into COMPATIBILITY.md rows.

Usage: python benchmarks/compatibility.py REPORT.json [REPORT.json ...]
Prints one row per (backend, check, op, dtype): pass, fail (with its replay file) or unsupported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(report: dict) -> list[str]:
    out = []
    where = f"{report['device']}, torch {report['torch']}, triton {report['triton']}"
    for g in report["groups"]:
        if g["skipped"]:
            verdict = f"unsupported ({g['skipped']})"
        elif g["error"] and not g["failed"]:
            verdict = f"error: {g['error'].splitlines()[0][:140]}"
        elif g["failed"]:
            replay = (g["failure"] or {}).get("replay") or "-"
            first = ((g["failure"] or {}).get("failures") or ["?"])[0]
            verdict = f"**fail**: {first[:140]} (replay `{Path(replay).name}`)"
            if g["error"] and g["error"].startswith("FlakyFailure"):
                verdict += "; flaky: the same input failed, then passed"
        else:
            verdict = f"pass ({g['passed']} examples, worst err/tol {g['worst_ratio']:.3f})"
        out.append(
            f"| {report['backend']} {report['version']} | {where} | {g['check']} | {g['op']} | "
            f"{g['dtype']} | {verdict} |"
        )
    return out


def main(paths: list[str]) -> None:
    print("| backend | where | check | op | dtype | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in paths:
        for line in rows(json.loads(Path(p).read_text())):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
