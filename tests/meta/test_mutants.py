"""The suite tests itself: ``ci`` must catch every mutant of the zoo, pass every correct backend,
and every profile must reach every corner class it promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conformance.checks.guards import CaseResult
from conformance.corners import CLASSES, promised
from conformance.engine import run_plan
from conformance.names import OPS
from lora_ref import ReferenceLoRABackend
from tests.meta.different import CORRECT
from tests.meta.mutants import MUTANTS, NARROW_MUTANTS

CPU = torch.device("cpu")


def _ci(backend, tmp_path: Path, **kw):
    return run_plan(
        backend, backend.__name__, profile="ci", failures_dir=tmp_path, shrink=False, **kw
    )


def test_zoo_is_large_enough():
    assert len(MUTANTS) >= 20 and len(NARROW_MUTANTS) >= 12
    zoo = MUTANTS + NARROW_MUTANTS
    assert len({m.__doc__ for m in zoo}) == len(zoo), "each mutant carries its own bug"


def test_each_narrow_mutant_names_a_real_corner_class():
    names = {k.name for k in CLASSES}
    for m in NARROW_MUTANTS:
        found = re.search(r"Corners?: (.+?)\.?$", " ".join(m.__doc__.split()))
        assert found, f"{m.__name__}: its docstring names no corner class"
        for corner in re.split(r", (?=[a-zA-Z|])", found.group(1)):
            if not corner.startswith("lifecycle"):
                assert corner in names, f"{m.__name__}: {corner!r} is not a corner class"


@pytest.mark.parametrize("mutant", MUTANTS + NARROW_MUTANTS, ids=lambda m: m.__name__)
def test_ci_catches_mutant(mutant, tmp_path):
    records = _ci(mutant, tmp_path, stop_on_failure=True)
    caught = [r for r in records if r.outcome not in ("pass", "skip")]
    assert caught, f"{mutant.__name__} ({mutant.__doc__.strip()}) passed the ci profile"
    assert caught[0].failure is not None and caught[0].failure["messages"]


@pytest.mark.parametrize("backend", [ReferenceLoRABackend, *CORRECT], ids=lambda b: b.__name__)
def test_ci_passes_correct_backend(backend, tmp_path):
    """No false positive: correct backends that compute in other ways pass every group."""
    records = _ci(backend, tmp_path)
    bad = [(r.id, r.outcome, r.failure and r.failure["messages"][:1], r.error) for r in records
           if r.outcome not in ("pass", "skip")]  # fmt: skip
    assert not bad, bad
    assert all(r.worst_ratio is None or r.worst_ratio <= 1.0 for r in records)


def _coverage(profile: str, tmp_path: Path) -> dict[str, dict[str, int]]:
    """Corner counts per op of the diff groups' examples under ``profile`` (the examples are
    drawn and classified; a stand-in runner passes them without computing anything).

    The hand-built corner cases run whatever the example count, so 4 drawn examples per group
    are enough to show a promise holds: more draws can only reach more."""

    def passes(check, example):
        return CaseResult(example.case, check=check)

    records = run_plan(
        ReferenceLoRABackend, "reference", profile=profile, checks=("diff",),
        failures_dir=tmp_path, runner=passes, max_examples=4,
    )  # fmt: skip
    counts: dict[str, dict[str, int]] = {op: {} for op in OPS}
    for r in records:
        for name, n in r.corners.items():
            counts[r.op][name] = counts[r.op].get(name, 0) + n
    return counts


@pytest.mark.parametrize("profile", ["ci", "dev", "thorough"])
def test_profile_reaches_every_promised_corner(profile, tmp_path):
    counts = _coverage(profile, tmp_path)
    missed = {op: [c for c in promised(op, profile) if not counts[op].get(c)] for op in OPS}
    assert not any(missed.values()), f"{profile} misses {missed}"


def test_ci_groups_draw_distinct_cases(tmp_path):
    """Each (check, op, dtype) group has its own seed: two dtype groups of one op draw
    different random cases."""
    seen: dict[str, list[str]] = {}

    def record(check, example):
        if not example.case.name:  # drawn, not hand-built
            seen.setdefault(example.case.dtype, []).append(
                example.case.replace(dtype="float16").dumps()
            )
        return CaseResult(example.case, check=check)

    run_plan(ReferenceLoRABackend, "reference", ops=("qkv",), checks=("diff",),
             failures_dir=tmp_path, runner=record)  # fmt: skip
    # Hypothesis tries the simplest case first in every test; all the others must differ
    shared = set(seen["float16"]) & set(seen["float32"])
    assert len(seen["float16"]) >= 3 and len(shared) <= 1, shared
