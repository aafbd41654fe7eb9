"""Benchmark-gate fixtures.  The pytest-benchmark hooks (GPU machine info, refusing to compare
across GPUs) live in ``conformance.bench.pytest_hooks``, a plugin of its own, which pytest loads
before the baseline is read.

On a GPU, each round is a fixed number of CUDA-graph replays followed by one synchronisation, so
pytest-benchmark's host clock measures device time (the one sync costs well under 2% of a
round).  Without CUDA the suite runs in smoke mode: tiny shapes, Triton interpreted, host
timing, no claim about speed.
"""

from __future__ import annotations

import os

import pytest
import torch

from conformance.bench.timing import copy_bandwidth

SMOKE = not torch.cuda.is_available()
SLEEP_ENV = "LORA_BENCH_INJECT_SLEEP_MS"


@pytest.fixture(scope="session")
def copy_bw() -> float | None:
    """Device-copy bytes/s measured once per session (None in smoke mode)."""
    return None if SMOKE else copy_bandwidth(torch.device("cuda"))


@pytest.fixture(scope="session")
def injected_sleep() -> float:
    """Seconds added to each triton call (``LORA_BENCH_INJECT_SLEEP_MS``): proves the gate bites.

    On a GPU the delay is a device-side spin inside the captured graph; on CPU a host sleep."""
    return float(os.environ.get(SLEEP_ENV, "0")) / 1e3
