"""Hypothesis profiles and the size caps that go with each, in one table.

* ``ci``: derandomized (a fixed seed per group), no example database, small random shapes; the
  hand-built corner cases of :mod:`conformance.corners` carry the large ones.  About two
  minutes for ``lora-conformance check triton`` on 2 CPU cores under the interpreter.
* ``dev``: random, more examples, larger shapes, row boundaries up to 256.
* ``thorough``: GPU campaigns; large shapes, many examples.

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
    """One profile: examples per diff group, size caps, the row-count boundaries it promises to
    reach, and its Hypothesis settings."""

    name: str
    examples: int
    limits: Limits
    row_boundaries: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci",
        examples=4,
        limits=Limits(tokens=40, segments=10, K=72, N=72, R=20, slots=10),
        row_boundaries=(16, 32, 64, 128),
        settings=dict(derandomize=True, database=None),
    ),
    "dev": Profile(
        "dev",
        examples=100,
        limits=Limits(tokens=300, segments=40, K=300, N=300, R=64, slots=20),
        row_boundaries=(16, 32, 64, 128, 256),
    ),
    "thorough": Profile(
        "thorough",
        examples=1000,
        limits=Limits(tokens=768, segments=72, K=1536, N=1536, R=128, slots=24),
        row_boundaries=(16, 32, 64, 128, 256),
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
