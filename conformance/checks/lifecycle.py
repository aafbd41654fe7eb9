"""Lifecycle: one backend instance serves several batches in turn, and several calls per batch.

A real server keeps one backend and calls ``set_batch_info`` before each forward pass, then runs
every LoRA layer (qkv, gate_up, the plain expands, in their own dtypes) on that batch.  A
backend that caches something per batch (a row layout, a converted weight, a host copy of a
device tensor) and keys it wrongly passes every fresh-instance check and fails here.

An example is a list of *steps*; each step is a batch and the calls made on it, in order.  Calls
of one step share the batch (segments, slots, ranks, scalings) and differ in op, dtype and
shapes; none is permuted (the calls' inputs are drawn from their own seeds).  Each result is
diffed against the oracle.
"""

from __future__ import annotations

import torch

from conformance.case import Case
from conformance.checks.harness import CaseResult, backend_call, record_problem
from conformance.inputs import build_inputs, call
from conformance.oracle import compare, expect
from lora_ref import BaseLoRABackend


def check_lifecycle(
    backend_cls: type[BaseLoRABackend], steps: list[list[Case]], device: torch.device
) -> CaseResult:
    """Run every step's calls on one instance; ``set_batch_info`` once per step."""
    first = steps[0][0]
    params = {"steps": [[c.to_json() for c in step] for step in steps]}
    result = CaseResult(first, check="lifecycle", params=params)
    made, problem = backend_call(backend_cls)
    if problem is not None:
        record_problem(result, problem, "the constructor")
        return result
    backend = made
    for s, step in enumerate(steps):
        built = [build_inputs(case, device) for case in step]
        batch = built[0].batch_info  # every call of the step shares its first call's batch
        _, problem = backend_call(lambda batch=batch: backend.set_batch_info(batch))
        if problem is not None:
            record_problem(result, problem, f"step {s}: set_batch_info")
            return result
        for k, (case, made) in enumerate(zip(step, built, strict=True)):
            inputs = made._replace(batch_info=batch)
            exp = expect(case, inputs, backend_cls.capabilities.float32_matmul)
            base = inputs.base.clone() if inputs.base is not None else None
            out, problem = backend_call(
                lambda case=case, inputs=inputs, base=base: call(backend, case, inputs, base)
            )
            where = f"step {s}, call {k} ({case.op} {case.dtype}, T={case.T})"
            if problem is not None:
                record_problem(result, problem, where)
                return result
            verdict = compare(case, out, exp)
            result.note_ratio(verdict.worst_ratio)
            if not verdict.ok:
                result.fail(
                    f"{where}, after {s} earlier batches on this instance: "
                    f"{verdict.message} [{case.describe()}]"
                )
                return result
    return result
