"""Turn ``lora-conformance check --report-json`` reports into COMPATIBILITY.md rows.

Usage: python benchmarks/compatibility.py REPORT.json [REPORT.json ...]
Prints one row per (backend, check, op, dtype): pass, fail (with its replay file) or unsupported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conformance.report import fmt_ratio


def rows(report: dict) -> list[str]:
    out = []
    env, backend = report["environment"], report["backend"]
    where = f"{env.get('gpu') or env['device']}, torch {env['torch']}, triton {env['triton']}"
    for g in report["groups"]:
        failure = g.get("failure") or {}
        if g["outcome"] == "skip":
            verdict = f"unsupported ({g['skip_reason']})"
        elif g["outcome"] == "pass":
            verdict = (
                f"pass ({g['examples']} examples, worst err/tol {fmt_ratio(g['worst_ratio'])})"
            )
        elif failure:
            replay = Path(failure.get("file") or "-").name
            first = (failure.get("messages") or ["?"])[0]
            verdict = f"**{g['outcome']}**: {first[:140]} (replay `{replay}`)"
            if failure.get("flaky"):
                verdict += "; flaky: the same input failed, then passed"
        else:
            verdict = f"{g['outcome']}: {(g.get('error') or '')[:140]}"
        out.append(
            f"| {backend['name']} {backend.get('version', '')} | {where} | {g['check']} | "
            f"{g['op']} | {g['dtype']} | {verdict} |"
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
