"""The signal-floor guard: an example whose LoRA terms would not show against base (dropping
them still passes) is counted apart, in every group and in the totals, and not as evidence."""

from __future__ import annotations

from pathlib import Path

from conformance.case import Case
from conformance.checks.diff import below_signal_floor
from conformance.engine import run_plan
from conformance.inputs import build_inputs
from conformance.oracle import expect
from lora_ref import ReferenceLoRABackend


def _case(scale: float, op: str = "expand", has_base: bool = True) -> Case:
    return Case(op=op, dtype="bfloat16", seg_lens=(5, 3), weight_indices=(0, 1),
                lora_ranks=(4, 0), scalings=(scale, 1.0), R=4, K=0 if op == "expand" else 16,
                N=32, has_base=has_base, stack=1 if op != "gate_up" else 2, seed=3)  # fmt: skip


def _floor(case: Case) -> bool:
    inputs = build_inputs(case, "cpu")
    return below_signal_floor(case, inputs, expect(case, inputs))


def test_a_delta_lost_in_base_rounding_is_below_the_floor():
    assert _floor(_case(2.0**-20))
    assert _floor(_case(0.0))
    assert not _floor(_case(1.0))
    assert not _floor(_case(2.0**-20, has_base=False))  # against zeros any term shows
    assert not _floor(_case(0.0, op="shrink").replace(N=0))  # a shrink is all LoRA term


def test_the_report_counts_what_the_guard_removed(tmp_path: Path):
    records = run_plan(ReferenceLoRABackend, "reference", profile="ci", failures_dir=tmp_path,
                       checks=("diff",), dtypes=("bfloat16",), shrink=False)  # fmt: skip
    assert all(r.outcome == "pass" for r in records)
    below = sum(r.below_signal_floor for r in records)
    assert 0 < below < sum(r.examples for r in records)
