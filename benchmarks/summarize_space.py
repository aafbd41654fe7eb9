"""Summarize conformance reports: verdict, examples per second per group and in all, failures,
and the space reached per op.  Usage: python3 benchmarks/summarize_space.py REPORT.json..."""

from __future__ import annotations

import json
import sys

from conformance import space


def main(paths: list[str]) -> None:
    for path in paths:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{path}: no report ({exc})")
            continue
        groups = doc.get("groups", [])
        ran = [g for g in groups if g["outcome"] not in ("skip", "not run")]
        examples = sum(g["examples"] for g in ran)
        seconds = sum(g["seconds"] for g in ran)
        rate = examples / seconds if seconds else 0.0
        print(f"{path}: {doc.get('status')} {doc.get('verdict')}, {examples} examples in "
              f"{seconds:.0f} s of groups ({rate:.2f} examples/s), worst error/tolerance "
              f"{doc.get('worst_ratio')}")  # fmt: skip
        for g in ran:
            line = f"  {g['id']:32s} {g['outcome']:8s} {g['examples']:5d} in {g['seconds']:7.1f} s"
            if g.get("failure"):
                line += f"  {g['failure']['messages'][0][:150]}"
            print(line)
        for op, counts in space.by_op(groups).items():
            s = space.summary(counts)
            dims = ", ".join(f"{d} {space.cell(s[d])}" for d in space.DIMENSIONS if d in s)
            print(f"  space {op}: {dims}")


if __name__ == "__main__":
    main(sys.argv[1:])
