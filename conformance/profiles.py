"""Hypothesis profiles and the size caps that go with each.

* ``ci``: derandomized and bounded; small shapes, minutes on 2 CPU cores under the interpreter.
* ``dev``: random, more examples, larger shapes.
* ``thorough``: GPU campaigns; large shapes, many examples.

Select with ``--hypothesis-profile`` (pytest), ``--profile`` (CLI) or ``LORA_CONFORMANCE_PROFILE``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from conformance.strategies import LIMITS, Limits

PROFILES = ("ci", "dev", "thorough")
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# examples per (op, dtype) property
EXAMPLES = {"ci": 12, "dev": 100, "thorough": 1000}

# ci is reproducible run to run: derandomized and with no example database
_ONLY = {"ci": dict(derandomize=True, database=None), "dev": {}, "thorough": {}}
for _name in PROFILES:
    settings.register_profile(
        _name,
        max_examples=EXAMPLES[_name],
        deadline=None,
        print_blob=True,
        suppress_health_check=_SLOW_OK,
        **_ONLY[_name],
    )


def default_profile() -> str:
    """``LORA_CONFORMANCE_PROFILE``, else ``ci``."""
    name = os.environ.get("LORA_CONFORMANCE_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"LORA_CONFORMANCE_PROFILE: expected one of {PROFILES}, got {name!r}")
    return name


def limits_for(profile: str) -> Limits:
    if profile not in LIMITS:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    return LIMITS[profile]
