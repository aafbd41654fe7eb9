"""Hypothesis profiles and the sizes that go with each, in one table.

Every profile draws each dimension over its whole realistic range (:mod:`conformance.space`):
an example draws up to ``big`` dimensions large and the others inside ``limits`` (the small
box), and never allocates more than ``budget`` elements.  The hand-built cases of
:mod:`conformance.corners` (corner classes, the top of every range, every memory layout) run in
every profile, whatever its budget.

* ``ci``: derandomized (a fixed seed per group), no example database, a small budget: the
  interpreter on 2 CPU cores runs ``lora-conformance check triton`` in about two minutes.
* ``dev``: random, more examples, a larger budget and box.
* ``thorough``: GPU campaigns: a budget for full model shapes (real models' layer widths are
  drawn too), many examples.

Select with ``--hypothesis-profile`` (pytest), ``--profile`` (CLI) or
``LORA_CONFORMANCE_PROFILE``; :func:`register` makes them known to Hypothesis (the pytest
plugin calls it at start-up, before Hypothesis loads a profile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

PROFILE_ENV = "LORA_CONFORMANCE_PROFILE"


@dataclass(frozen=True)
class Limits:
    """Size caps of the randomly drawn cases (hand-built corner cases may exceed them)."""

    tokens: int
    segments: int
    K: int
    N: int
    R: int
    slots: int


@dataclass(frozen=True)
class Profile:
    """One profile: examples per diff group, the small box, the budget of elements per drawn
    example, how many dimensions one example draws large, whether real models' layer shapes
    are drawn, the row-count boundaries it promises to reach, and its Hypothesis settings."""

    name: str
    examples: int
    limits: Limits
    row_boundaries: tuple[int, ...]
    budget: int
    big: int = 2
    model_shapes: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci",
        examples=4,
        limits=Limits(tokens=40, segments=10, K=72, N=72, R=20, slots=10),
        row_boundaries=(16, 32, 64, 128),
        budget=1 << 17,
        settings=dict(derandomize=True, database=None),
    ),
    "dev": Profile(
        "dev",
        examples=100,
        limits=Limits(tokens=300, segments=40, K=300, N=300, R=64, slots=20),
        row_boundaries=(16, 32, 64, 128, 256),
        budget=1 << 20,
    ),
    "thorough": Profile(
        "thorough",
        examples=1000,
        limits=Limits(tokens=768, segments=72, K=1536, N=1536, R=128, slots=24),
        row_boundaries=(16, 32, 64, 128, 256),
        budget=1 << 26,
        model_shapes=True,
    ),
}
NAMES = tuple(PROFILES)


def register() -> None:
    """Register every profile with Hypothesis (idempotent)."""
    from hypothesis import HealthCheck, settings

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    for p in PROFILES.values():
        settings.register_profile(
            p.name,
            max_examples=p.examples,
            deadline=None,
            print_blob=True,
            suppress_health_check=slow_ok,
            **p.settings,
        )


def get(name: str) -> Profile:
    """The profile called ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(NAMES)}, got {name!r}")
    return PROFILES[name]


def default_name() -> str:
    """``LORA_CONFORMANCE_PROFILE`` when it names a profile, else ``ci``.  A bad value is an
    error only where a profile is used (``profile_from_env``), never at import or for ``list``."""
    value = os.environ.get(PROFILE_ENV, "ci")
    return value if value in PROFILES else "ci"


def profile_from_env() -> str:
    """``LORA_CONFORMANCE_PROFILE`` (``ci`` when unset); ``ValueError`` for an unknown name."""
    value = os.environ.get(PROFILE_ENV, "ci")
    if value not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}: expected one of {', '.join(NAMES)}, got {value!r}")
    return value
