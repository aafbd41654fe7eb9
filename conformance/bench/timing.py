"""Device timing: CUDA-graph replay between CUDA events, inputs rotated to keep L2 cold.

Host clocks around asynchronous work measure the launch, not the kernel; every number here comes
from ``torch.cuda.Event`` pairs around graph replays, one synchronisation per measurement.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

L2_FLUSH_BYTES = 256 * 2**20


def copy_bandwidth(device: torch.device, nbytes: int = 2**30, repeats: int = 10) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / statistics.median(times)


def time_calls(
    calls: list[Callable[[], object]],
    replays: int = 20,
    measurements: int = 7,
    use_graph: bool = True,
) -> float:
    """Median seconds per call of ``calls`` (one call per rotated input set).

    The calls are captured once into a CUDA graph (unless ``use_graph`` is False or capture
    fails) and the graph is replayed ``replays`` times between two events per measurement.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in calls:  # warm up: compile, autotune, allocate
            fn()
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()

    run: Callable[[], None]
    if use_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for fn in calls:
                fn()
        run = graph.replay
    else:

        def run() -> None:
            for fn in calls:
                fn()

    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(measurements):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / (replays * len(calls)))
    return statistics.median(times)


def rotation_count(set_bytes: int, cap: int = 32) -> int:
    """Input sets to rotate so that one pass over them exceeds ``L2_FLUSH_BYTES``."""
    return max(1, min(cap, -(-L2_FLUSH_BYTES // max(set_bytes, 1))))
