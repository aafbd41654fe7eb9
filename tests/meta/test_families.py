"""The parametric zoo (``families.py``), drawn afresh per run: one member of every family (the
whole zoo with ``LORA_ZOO_FULL=1``); ``ci`` must catch at least 95% of it, and ``dev`` every
mutant that ``ci`` missed.  ``dev`` runs every hand-built case ``ci`` runs
(``test_dev_runs_every_explicit_case_of_ci``) and 25 times its draws, so what ``ci`` catches with
a hand-built case ``dev`` catches too; a catch by a ``ci`` draw is not re-run at ``dev`` (its
whole plan takes too long for the suite's 20 minutes).

The seed is printed; ``LORA_ZOO_SEED=<seed>`` pins it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import corners
from conformance.checks import CHECKS, GroupContext
from conformance.engine import run_plan
from conformance.names import DTYPE_NAMES, OPS
from conformance.profiles import get
from lora_ref import ReferenceLoRABackend
from tests.meta.families import FAMILIES, SEED_ENV, describe, draw_zoo, sample_zoo, zoo_seed

MISS_BUDGET = 0.05


def _caught(mutant: type, profile: str, tmp_path: Path) -> tuple[bool, bool]:
    """``(caught, by a hand-built case)`` under ``profile``."""
    records = run_plan(
        mutant, mutant.__name__, profile=profile, failures_dir=tmp_path / mutant.__name__,
        shrink=False, stop_on_failure=True,
    )  # fmt: skip
    bad = [r for r in records if r.outcome not in ("pass", "skip")]
    if not bad:
        return False, False
    case = (bad[0].failure or {}).get("case") or {}
    return True, bool(case.get("name"))


def test_every_family_draws_members_over_its_range():
    zoo = draw_zoo(12345)
    assert len(zoo) >= 30 and len({m.__name__ for m in zoo}) == len(zoo)
    assert {f.name for f in FAMILIES} <= {m.__name__.split("_")[0].rstrip("0123456789")
                                          for m in zoo}  # fmt: skip
    # thresholds change with the seed
    assert [m.__name__ for m in draw_zoo(1)] != [m.__name__ for m in draw_zoo(2)]


def test_dev_runs_every_explicit_case_of_ci():
    caps = ReferenceLoRABackend.capabilities
    for name, check in CHECKS.items():
        for op in check.ops:
            for dtype in DTYPE_NAMES if check.dtypes == "all" else DTYPE_NAMES[:1]:
                found = {}
                for profile in ("ci", "dev"):
                    ctx = GroupContext(op, dtype, list(DTYPE_NAMES), get(profile), caps)
                    found[profile] = {e.case.digest() for e in check.explicit(ctx)}
                assert found["ci"] <= found["dev"], (name, op, dtype)
    assert corners  # the corner module is the source of both


def test_ci_catches_a_fresh_parametric_zoo(tmp_path, capsys):
    seed = zoo_seed()
    zoo = sample_zoo(seed)
    with capsys.disabled():
        print(f"\nparametric zoo: seed {seed} ({SEED_ENV}={seed} pins it), {len(zoo)} mutants")
    results = {m: _caught(m, "ci", tmp_path) for m in zoo}
    missed = [m for m, (caught, _) in results.items() if not caught]
    assert len(missed) <= MISS_BUDGET * len(zoo), (
        f"seed {seed}: ci missed {len(missed)} of {len(zoo)}:\n{describe(missed)}"
    )
    dev_missed = [m for m in missed if not _caught(m, "dev", tmp_path)[0]]
    assert not dev_missed, f"seed {seed}: dev missed:\n{describe(dev_missed)}"


@pytest.mark.parametrize("op", OPS)
def test_the_explicit_extremes_reach_the_top_of_every_range(op):
    """The hand-built cases reach the top bin of every dimension the op has."""
    from conformance import space

    shared, _ = corners.corner_cases(op, "ci")
    summary = space.summary(space.count(shared))
    for dim in space.BIG_DIMS[op]:
        top = space.log2_bin(space.DIMENSIONS[dim].hi)
        assert summary[dim]["largest_bin"] == top, (op, dim, summary[dim])
