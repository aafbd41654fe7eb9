"""The differential check: one call against the float64 oracle, plus every per-call property.

Per example: garbage regions poisoned (:mod:`conformance.inputs`), fresh allocations poisoned,
``base_output`` between guard bands (and laid out as the case asks), inputs snapshotted, rank-0
rows bit-exact, and the same call on a second, fresh instance bitwise equal (determinism).
"""

from __future__ import annotations

import torch

from conformance.case import Case
from conformance.checks.harness import (
    CaseResult,
    backend_call,
    bits_equal_where,
    changed,
    guarded_output,
    poison_allocator,
    record_problem,
    snapshot,
)
from conformance.inputs import Inputs, build_inputs, call
from conformance.ops import torch_dtype
from conformance.oracle import Expectation, compare, expect
from lora_ref import BaseLoRABackend


def run_call(
    backend_cls: type[BaseLoRABackend], case: Case, inputs: Inputs, result: CaseResult, what: str
):
    """Construct a fresh backend, set the batch, call the op once with a guarded
    ``base_output``.  Returns ``(out, guard)`` or None after recording the problem."""
    guard = guarded_output(inputs.base, case.strides) if inputs.base is not None else None
    poison_allocator(case.T * case.out_dim, torch_dtype(case.dtype), inputs.x.device)

    def go():
        backend = backend_cls()
        backend.set_batch_info(inputs.batch_info)
        return call(backend, case, inputs, guard.view if guard is not None else None)

    out, problem = backend_call(go)
    if problem is not None:
        record_problem(result, problem, f"{what} on a valid input")
        return None
    return out, guard


def check_diff(
    backend_cls: type[BaseLoRABackend],
    case: Case,
    device: torch.device,
    exp: Expectation | None = None,
    check: str = "diff",
) -> CaseResult:
    """Run ``case`` on fresh ``backend_cls`` instances and apply every per-call check."""
    result = CaseResult(case, check=check)
    inputs = build_inputs(case, device)
    exp = exp or expect(case, inputs, backend_cls.capabilities.float32_matmul)
    snap = snapshot(inputs)
    first = run_call(backend_cls, case, inputs, result, "the call")
    if first is None:
        return result
    out, guard = first
    verdict = compare(case, out, exp)
    result.note_ratio(verdict.worst_ratio)
    if not verdict.ok:
        result.fail(f"wrong result: {verdict.message}")
    if guard is not None and not guard.intact():
        result.fail("wrote outside base_output: the sentinels around and between its rows changed")
    touched = changed(snap)
    if touched:
        result.fail(f"modified its inputs: {', '.join(touched)}")
    if verdict.ok and isinstance(out, torch.Tensor):
        out = out.clone()  # the second call may write into the same buffer
        second = run_call(backend_cls, case, inputs, result, "the second, identical call")
        if second is not None and not isinstance(second[0], torch.Tensor):
            result.fail(f"the second call returned {type(second[0]).__name__}, not a tensor")
        again = second[0] if second is not None else None
        if isinstance(again, torch.Tensor) and not bits_equal_where(out, again, exp.specified):
            result.fail("not deterministic: the same call twice gave different bits")
    return result
