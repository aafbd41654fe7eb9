"""The oracle: infinities where the exact value lies past the range, never NaN; the bound of
a fused op's shrink result rounded into the subnormal range (a GPU false positive)."""

from __future__ import annotations

import math

import torch

from conformance.case import Case
from conformance.inputs import build_inputs, call
from conformance.oracle import compare, expect
from lora_ref import ReferenceLoRABackend


def _expand(base_value: float, scaling: float) -> tuple[Case, object, object]:
    case = Case(op="expand", dtype="float16", seg_lens=(2,), weight_indices=(0,),
                lora_ranks=(1,), scalings=(scaling,), R=1, K=0, N=3, seed=1)  # fmt: skip
    inputs = build_inputs(case, "cpu")
    inputs.base.fill_(base_value)
    inputs.x.fill_(1.0)
    inputs.args[0].fill_(1.0)
    return case, inputs, expect(case, inputs, "ieee")


def test_infinity_is_right_where_the_exact_value_passes_the_range():
    # base 65504 (float16's largest) plus 40: the exact 65544 rounds to +inf
    case, _inputs, exp = _expand(65504.0, 40.0)
    assert bool((exp.ref > 65504).all())
    inf = torch.full((2, 3), math.inf, dtype=torch.float16)
    assert compare(case, inf, exp).ok
    assert not compare(case, -inf, exp).ok  # the wrong sign
    assert not compare(case, torch.full_like(inf, math.nan), exp).ok
    v = compare(case, torch.full_like(inf, math.nan), exp)
    assert math.isnan(v.worst_ratio)  # reported as NaN, not as the largest float


def test_infinity_is_wrong_inside_the_range():
    case, _inputs, exp = _expand(100.0, 1.0)
    out = torch.full((2, 3), math.inf, dtype=torch.float16)
    verdict = compare(case, out, exp)
    assert not verdict.ok and verdict.worst_ratio == math.inf


def test_a_fused_shrink_result_in_the_subnormal_range_is_allowed_its_rounding():
    """The case an H200 grid run failed (float16 gate_up, dynamic-range data, scaling 40): the
    shrink result, rounded to float16 as the contract allows, was subnormal."""
    case = Case(
        op="gate_up", dtype="float16", seg_lens=(1,) * 31,
        weight_indices=(1, 2, 3, 4, 5, 6, 7, 8, 0) * 3 + (1, 2, 3, 4),
        lora_ranks=(0, 0, 0, 0, 0, 0, 1, 0, 0), scalings=(0.0,) * 6 + (40.0, 0.0, 0.0),
        R=1, K=1, N=1, stack=2, has_base=False, data="dynamic", seed=0,
    )  # fmt: skip
    inputs = build_inputs(case, "cpu")
    exp = expect(case, inputs, "tf32")
    # what a conforming kernel computes: float32 products, the shrink result rounded to float16
    ref = ReferenceLoRABackend(batch_info=inputs.batch_info)
    x, A, B = inputs.x, inputs.args[0], inputs.args[1]
    inter = (x.float() @ A[6, :2].float().T).to(torch.float16).float()
    out = call(ref, case, inputs, None).clone()
    rows = [t for t, w in enumerate(case.weight_indices) if w == 6]
    for half in range(2):
        out[rows, half] = (40.0 * inter[rows, half] * B[6, half, 0].float()).to(torch.float16)
    verdict = compare(case, out, exp)
    assert verdict.ok, verdict.message
