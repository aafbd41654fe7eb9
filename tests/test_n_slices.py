"""The n-slice fused op (``run_qkv_lora(..., n_slices=n)``): uneven slices, empty ones, adapters
without LoRA on some slices; the suite draws them for a backend that declares ``n_slices``, and
fails backends that assume qkv's three slices."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import corners
from conformance.case import Case
from conformance.checks.diff import check_diff
from conformance.inputs import build_inputs, call
from conformance.profiles import PROFILES
from conformance.strategies import cases
from lora_ref import Capabilities, ReferenceLoRABackend, make_batch_info
from lora_ref.validation import check_qkv
from lora_triton.backend import TritonLoRABackend

SLICED = cases("qkv", "float32", PROFILES["ci"], n_slices=True).filter(lambda c: c.slice_widths)


def _loop(case: Case, inputs) -> torch.Tensor:
    """The n-slice result, one row and one slice at a time, in float64."""
    A, B, _, _, _ = inputs.args
    out = torch.zeros(case.T, case.out_dim, dtype=torch.float64)
    if inputs.base is not None:
        out += inputs.base.double()
    perm = inputs.batch_info.permutation
    logical = itertools.chain.from_iterable(
        [w] * n for n, w in zip(case.seg_lens, case.weight_indices, strict=True)
    )
    for t, w in enumerate(logical):
        row = int(perm[t]) if perm is not None else t
        r, s = case.lora_ranks[w], case.scalings[w]
        for j, (lo, hi) in enumerate(case.slices):
            a = A[w, j * r : (j + 1) * r].double()
            b = B[w, lo:hi, :r].double()
            out[row, lo:hi] += s * (b @ (a @ inputs.x[row].double()))
    return out


@settings(max_examples=25, deadline=None)
@given(SLICED.filter(lambda c: c.T * c.out_dim <= 20000 and c.data == "gaussian"))
def test_the_reference_is_the_loop_over_slices(case):
    inputs = build_inputs(case, "cpu")
    ref = ReferenceLoRABackend(batch_info=inputs.batch_info)
    with ref.exact():
        got = call(ref, case, inputs, inputs.base)
    torch.testing.assert_close(got, _loop(case, inputs), rtol=1e-9, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_the_strategy_draws_every_slice_count_and_both_masks(data):
    """Uneven widths, one of them the case's N, qkv's layout for three; masks per slot."""
    case = data.draw(SLICED)
    widths = case.slice_widths
    assert 1 <= len(widths) <= 8 and case.stack == len(widths) and max(widths) == case.N
    if len(widths) == 3:
        assert widths[1] == widths[2]
    assert not case.no_lora or len(case.no_lora) == case.L


def test_the_hand_built_cases_reach_the_n_slice_classes():
    shared, _ = corners.corner_cases("qkv", "ci", n_slices=True)
    reached = {name for c in shared for name in corners.classify(c)}
    assert {"n_slices != 3", "an empty slice", "a slice without LoRA"} <= reached
    plain, _ = corners.corner_cases("qkv", "ci")
    assert not any(c.slice_widths for c in plain)


def test_triton_matches_the_reference_on_the_hand_built_slices():
    shared, _ = corners.corner_cases("qkv", "ci", n_slices=True)
    for case in [c for c in shared if c.slice_widths]:
        inputs = build_inputs(case, "cpu")
        ref = call(ReferenceLoRABackend(batch_info=inputs.batch_info), case, inputs, inputs.base)
        got = call(TritonLoRABackend(batch_info=inputs.batch_info), case, inputs,
                   inputs.base.clone())  # fmt: skip
        torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3, msg=case.name)


@pytest.mark.parametrize(
    ("offsets", "n", "width", "message"),
    [
        ([0, 4, 9], 3, 5, r"output_offset: expected shape \(4,\)"),
        ([0, 6, 4, 9], 3, 6, r"output_offset: expected \[0, Nq, Nq\+Nkv, Nq\+2\*Nkv\]"),
        ([0, 6, 4, 9, 9], 4, 6, "non-decreasing order"),
        ([0, 2, 3, 9, 9], 4, 5, "max_qkv_out_dim: expected >= the widest slice 6"),
        ([0, 9], 0, 9, "n_slices: expected an int >= 1"),
    ],
)
def test_bad_slices_are_refused_by_name(offsets, n, width, message):
    backend = ReferenceLoRABackend(batch_info=make_batch_info([2], [0], [2], [1.0]))
    info, summary = backend._batch()
    x, a = torch.randn(2, 8), torch.randn(1, max(n, 1) * 2, 8)
    b = torch.randn(1, 9, 2)
    off = torch.tensor(offsets, dtype=torch.int32)
    with pytest.raises(ValueError, match=message):
        check_qkv(summary, info.device, x, a, b, off, width, None, n)


class _ThreeSlices(ReferenceLoRABackend):
    """Declares n slices, then computes the first three only (a kernel with qkv's grid)."""

    capabilities = Capabilities(float32_matmul="ieee", n_slices=True)

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        return super()._fused(x, lora_a, lora_b, base_output, T, N, offsets[:4])


class _SkipsAfterEmpty(ReferenceLoRABackend):
    """Stops at the first empty slice (a loop that reads width 0 as the end of the list)."""

    capabilities = Capabilities(float32_matmul="ieee", n_slices=True)

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        pairs = list(itertools.pairwise(offsets))
        ends = next((j for j, (lo, hi) in enumerate(pairs) if hi == lo), len(pairs))
        return super()._fused(x, lora_a, lora_b, base_output, T, N, offsets[: ends + 1])


@pytest.mark.parametrize("mutant", [_ThreeSlices, _SkipsAfterEmpty])
def test_the_diff_check_fails_a_backend_that_assumes_qkv(mutant):
    """On the hand-built n-slice cases the diff check runs in every profile; the reference
    passes them."""
    shared, _ = corners.corner_cases("qkv", "ci", n_slices=True)
    sliced = [c for c in shared if c.slice_widths]
    device = torch.device("cpu")
    assert not any(check_diff(ReferenceLoRABackend, c, device).failures for c in sliced)
    assert any(check_diff(mutant, c, device).failures for c in sliced)
