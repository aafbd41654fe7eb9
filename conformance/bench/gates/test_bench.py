"""Benchmarks of the LoRA operations over real model shapes, ranks, layouts and providers.

Regression gate::

    pytest --pyargs conformance.bench.gates --benchmark-autosave \\
        --benchmark-storage=.benchmarks/h200
    pytest --pyargs conformance.bench.gates --benchmark-storage=.benchmarks/h200 \\
        --benchmark-compare --benchmark-compare-fail=median:10%

Select providers with ``LORA_BENCH_PROVIDERS`` (comma-separated; default ``triton,torch``; any
backend name, ``reference`` (small shapes only), ``sglang-triton``, ``sglang-csgmv``, ``vllm``,
``flashinfer``, ``torch`` (one adapter's cuBLAS calls) and ``grouped_mm`` (PyTorch's grouped
GEMM on rows sorted by adapter)).
"""

from __future__ import annotations

import itertools
import math
import os
import time

import pytest
import torch

from conformance.bench.gates.conftest import SMOKE
from conformance.bench.grid import OFF_GRID
from conformance.bench.providers import get_provider
from conformance.bench.timing import rotation_count
from conformance.bench.workloads import Workload, make_inputs
from lora_ref import BackendNotFoundError

PROVIDERS = os.environ.get("LORA_BENCH_PROVIDERS", "triton,torch").split(",")

if SMOKE:
    GRID = [("tiny-model", op, "tiny", 8) for op in ("shrink_qkv", "expand", "qkv", "gate_up")]
else:
    # the off-grid cases that the product already holds (rank 128 prefill and mixed) once
    GRID = list(
        dict.fromkeys(
            [
                *itertools.product(
                    ["llama3-8b", "llama3-70b-tp1", "llama3-70b-tp8", "qwen2.5-7b", "mistral-7b"],
                    ["shrink_qkv", "shrink", "expand", "qkv", "gate_up"],
                    ["decode1", "decode64", "decode256", "mixed", "prefill"],
                    [8, 16, 64, 128],
                ),
                *OFF_GRID,
            ]
        )
    )

# nominal bytes/s used only to pick how many replays make a round of ~2 ms (fixed per case, so
# rounds of two runs are comparable)
NOMINAL_BW = 3e12
ROUND_SECONDS = 2e-3


def _workload(model: str, op: str, layout: str, rank: int) -> Workload:
    return Workload(model, op, layout, rank)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("model", "op", "layout", "rank"), GRID, ids=lambda v: str(v))
def test_lora_op(benchmark, provider, model, op, layout, rank, copy_bw, injected_sleep):
    w = _workload(model, op, layout, rank)
    device = torch.device("cpu" if SMOKE else "cuda")
    try:
        make = get_provider(provider)
    except BackendNotFoundError as exc:
        if "failed to import" not in str(exc):
            raise  # a wrong name is the user's error, not a missing package
        pytest.skip(str(exc))
    first = make_inputs(w, device, seed=0)
    sets = [first] + [
        make_inputs(w, device, seed=s) for s in range(1, rotation_count(first.nbytes()))
    ]
    if SMOKE:
        sets = sets[:1]
    calls = [make(w, s) for s in sets]
    if any(c is None for c in calls):
        pytest.skip(f"{provider} does not run {w.label}")
    if injected_sleep and provider == "triton":
        calls = [_slowed(c, injected_sleep, on_gpu=not SMOKE) for c in calls]

    benchmark.extra_info.update(
        workload=w.label,
        provider=provider,
        bytes=w.bytes_moved(),
        flops=w.flops(),
        calls_per_round=len(calls),
    )
    if SMOKE:
        benchmark.pedantic(lambda: [c() for c in calls], rounds=3, iterations=1, warmup_rounds=1)
        return

    replays = max(
        1, min(1000, math.ceil(ROUND_SECONDS / (w.bytes_moved() * len(calls) / NOMINAL_BW)))
    )
    graph = _capture(calls)

    def one_round() -> None:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(one_round, rounds=15, iterations=1, warmup_rounds=2)
    per_call = benchmark.stats.stats.median / (replays * len(calls))
    benchmark.extra_info.update(
        replays_per_round=replays,
        median_us_per_call=per_call * 1e6,
        pct_of_copy_bw=100 * w.bytes_moved() / copy_bw / per_call,
        tflops=w.flops() / per_call / 1e12,
    )


# cycles per second assumed for the injected device-side spin (Hopper boosts near 1.98 GHz)
SPIN_HZ = 1.98e9


def _slowed(call, seconds, on_gpu):
    """``call`` made slower by ``seconds``: a host sleep in smoke mode, a device-side spin on a GPU
    (captured into the graph with the kernel, so graph replays pay for it)."""

    def slowed():
        if on_gpu:
            torch.cuda._sleep(int(seconds * SPIN_HZ))
        else:
            time.sleep(seconds)
        return call()

    return slowed


def _capture(calls):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    return graph
