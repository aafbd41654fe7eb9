"""pytest-benchmark hooks (entry point ``pytest11``, beside the conformance plugin): every
benchmark run records its GPU, driver, CUDA, torch and Triton, and a comparison against a
baseline taken on another GPU is refused.  The gates themselves are
:mod:`conformance.bench.gates`."""

from __future__ import annotations

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the GPU (or its absence), driver, CUDA, torch and Triton with every benchmark run."""
    import torch

    from conformance.machine import environment

    cuda = torch.cuda.is_available()
    env = environment(torch.device("cuda") if cuda else None)
    machine_info.update(torch=env["torch"], triton=env["triton"])
    if cuda:
        machine_info.update(
            gpu=env["gpu"], gpu_sms=env["gpu_sms"], cuda=env["cuda"], driver=env["driver"] or "?"
        )
    else:
        machine_info["gpu"] = "none (CPU smoke mode)"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_compare_machine_info(
    config, benchmarksession, machine_info, compared_benchmark
):
    """Timings from different GPUs say nothing about a regression: refuse to compare them."""
    theirs = compared_benchmark.get("machine_info", {}).get("gpu")
    ours = machine_info.get("gpu")
    if theirs is not None and theirs != ours:
        raise pytest.UsageError(
            f"--benchmark-compare: the baseline was taken on {theirs!r}, this run is on {ours!r}; "
            "keep one baseline folder per card (--benchmark-storage=.benchmarks/<card>)"
        )
