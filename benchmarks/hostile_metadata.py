"""Hostile CUDA-graph metadata on the GPU: run under ``compute-sanitizer --tool memcheck``.

Every op and dtype of the Triton backend runs on batch buffers that validated and were then
corrupted in place (the table ``HOSTILE`` of tests/hostile/test_inputs.py: ``seg_indptr`` past
``T`` or decreasing, slots 1000 and -7, ranks above ``R`` and negative, permutation entries out
of range), eagerly and replayed from a captured CUDA graph; qkv also with hostile
``output_offset`` values inside the graph (where they are never read on the host).  The script
checks the sentinels around ``base_output`` and the inputs; memcheck checks every access.
A second pass runs the shrink and qkv with their weight tiles through a TMA descriptor
(``ShrinkConfig.tma``), with K = 16 so that the weights allow one.

Usage (on the device):  compute-sanitizer --tool memcheck python3 benchmarks/hostile_metadata.py
"""

from __future__ import annotations

import sys

import torch

from conformance.checks.guards import changed, guarded_output, snapshot
from conformance.inputs import build_inputs, call
from lora_ref import get_backend_from_name
from lora_triton import config
from tests.hostile.test_inputs import HOSTILE, _case, _graph_batch

OFFSETS = [[0, -5, 20, 3], [0, 9, 4, 16], [-100, 2, 100, 16], [16, 0, 16, 0]]


def run(
    op: str, dtype: str, hostile: str | None, offsets: list[int] | None, K: int = 12
) -> list[str]:
    device = torch.device("cuda")
    case = _case(op, dtype=dtype).replace(N=16, n_kv=4 if op == "qkv" else 0)
    if op != "expand":
        case = case.replace(K=K)
    inputs = build_inputs(case, device)
    info = _graph_batch(case)
    info = type(info)(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                         for k, v in vars(info).items()})  # fmt: skip
    backend = get_backend_from_name("triton")()
    backend.set_batch_info(info)
    guard = guarded_output(inputs.base, "col_slice") if inputs.base is not None else None
    live = inputs._replace(batch_info=info)
    call(backend, case, live, guard.view.clone() if guard else None)  # warm-up (compile)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call(backend, case, live, guard.view if guard else None)
    if hostile is not None:
        HOSTILE[hostile](info)
    if offsets is not None:
        live.args[2].copy_(torch.tensor(offsets, dtype=torch.int32))
    snap = snapshot(live)
    problems = []
    for label, fn in (
        ("replay", graph.replay),
        ("eager", lambda: hostile and call(backend, case, live, guard.view if guard else None)),
    ):
        try:
            fn()
            torch.cuda.synchronize()
        except ValueError as exc:  # eager qkv validates its offsets: a clean refusal is fine
            if offsets is None:
                problems.append(f"{label}: {exc}")
        if guard is not None and not guard.intact():
            problems.append(f"{label}: wrote outside base_output")
        if changed(snap):
            problems.append(f"{label}: modified {changed(snap)}")
    return problems


def main() -> int:
    bad = 0
    runs = 0
    for op in ("shrink", "expand", "qkv", "gate_up"):
        for dtype in ("float16", "bfloat16", "float32"):
            for hostile in HOSTILE:
                for problem in run(op, dtype, hostile, None):
                    print(f"FAIL {op} {dtype} {hostile}: {problem}")
                    bad += 1
                runs += 1
            if op == "qkv":
                for offsets in OFFSETS:
                    for problem in run(op, dtype, None, offsets):
                        print(f"FAIL {op} {dtype} offsets {offsets}: {problem}")
                        bad += 1
                    runs += 1
    with config.override(shrink=config.ShrinkConfig(16, 16, 16, num_stages=2, tma=True)):
        for op in ("shrink", "qkv"):
            for hostile in HOSTILE:
                for problem in run(op, "bfloat16", hostile, None, K=16):
                    print(f"FAIL tma {op} bfloat16 {hostile}: {problem}")
                    bad += 1
                runs += 1
    print(f"hostile metadata: {runs} runs (graph replay and eager), {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
