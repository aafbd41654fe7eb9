"""The conformance suite: one test per group of the plan (check, op, dtype).

Run: ``pytest --pyargs conformance.suite --lora-backend NAME``.  Each test runs its group's
hand-built corner cases, then the profile's random draws, through :mod:`conformance.engine`.
"""

from __future__ import annotations

import pytest

from conformance.report import ALONE_LINES


@pytest.mark.lora_conformance
def test_conformance(lora_group, lora_run):
    rec = lora_run(lora_group)
    if rec.outcome == "skip":
        pytest.skip(rec.skip_reason)
    if rec.outcome == "pass":
        return
    lines = [f"{rec.id}: {rec.outcome} after {rec.examples} examples, {rec.shrink_steps} "
             "shrink steps"]  # fmt: skip
    if rec.error:
        lines.append(rec.error)
    failure = rec.failure or {}
    lines += failure.get("messages", [])
    if failure.get("flaky"):
        lines.append("(flaky: the failing case did not fail again when Hypothesis replayed it)")
    if failure.get("alone") in ALONE_LINES:
        lines.append(f"alone: {ALONE_LINES[failure['alone']]}")
    if failure.get("file"):
        lines.append(f"replay: lora-conformance replay {failure['file']}")
    elif failure:
        lines.append("(the case could not be saved: the failures folder is not writable)")
    pytest.fail("\n".join(lines), pytrace=False)
