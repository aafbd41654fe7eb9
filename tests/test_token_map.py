"""The token-map batch form (``lora_ref.TokenMapBatchInfo``): conversions both ways are
exact, the reference gives the same bits in either form, bad maps are refused by name, a
backend that does not declare the form refuses it, and the ``token_map`` check fails a
backend that reads -1 as a slot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.engine import run_plan
from conformance.inputs import build_inputs, call
from conformance.profiles import PROFILES
from conformance.strategies import cases
from lora_ref import (
    BaseLoRABackend,
    Capabilities,
    ReferenceLoRABackend,
    TokenMapBatchInfo,
    make_batch_info,
    refill_batch_info,
    to_segments,
    to_token_map,
)
from lora_ref.token_map import NO_LORA, physical_slots
from lora_triton.backend import TritonLoRABackend


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(("shrink", "expand", "qkv", "gate_up")).flatmap(
    lambda op: cases(op, "float32", PROFILES["ci"])))  # fmt: skip
def test_both_forms_convert_exactly_and_give_the_reference_the_same_bits(case):
    segments = build_inputs(case, "cpu")
    mapped = build_inputs(case.replace(token_map=True), "cpu")
    tm = mapped.batch_info
    slots = tm.token_slots.tolist()
    truth = physical_slots(segments.batch_info)
    # the map is the segment batch's physical slots, some rank-0 rows given -1
    assert all(s == t or (s == NO_LORA and case.lora_ranks[t] == 0)
               for s, t in zip(slots, truth, strict=True))  # fmt: skip
    assert to_token_map(segments.batch_info).token_slots.tolist() == truth
    if NO_LORA not in slots or 0 in case.lora_ranks:
        back = to_segments(tm)
        zero = next((w for w, r in enumerate(case.lora_ranks) if r == 0), None)
        assert physical_slots(back) == [zero if s == NO_LORA else s for s in slots]
    outs = []
    for made in (segments, mapped):
        ref = ReferenceLoRABackend(batch_info=made.batch_info)
        outs.append(call(ref, case, made, made.base))
    assert outs[0].shape == outs[1].shape
    assert torch.equal(outs[0].view(torch.int32), outs[1].view(torch.int32))


def _map(slots, ranks=(4, 0, 8)):
    return TokenMapBatchInfo(
        torch.tensor(slots, dtype=torch.int32),
        torch.tensor(ranks, dtype=torch.int32),
        torch.ones(len(ranks), dtype=torch.float32),
    )


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (_map([0, 3]), ValueError, r"token_slots: expected slots in \[0, 3\) or -1 \(no LoRA\), "
         r"got token_slots\[1\]=3"),
        (_map([-2, 0]), ValueError, r"token_slots\[0\]=-2"),
        (TokenMapBatchInfo(torch.tensor([0]), torch.tensor([4], dtype=torch.int32),
                           torch.ones(1)), TypeError, r"token_slots: expected dtype int32"),
        (TokenMapBatchInfo(torch.zeros(2, 2, dtype=torch.int32), torch.tensor([4],
                           dtype=torch.int32), torch.ones(1)), ValueError, r"a 1-D tensor"),
        (_map([0, 1], ranks=(4, -1)), ValueError, r"lora_ranks\[1\]=-1"),
    ],
)  # fmt: skip
def test_a_bad_token_map_is_refused_by_name(batch, error, message):
    with pytest.raises(error, match=message):
        ReferenceLoRABackend().set_batch_info(batch)


def test_minus_one_rows_need_a_rank_0_slot_to_become_segments():
    with pytest.raises(ValueError, match="no_lora_slot: expected a slot of rank 0"):
        to_segments(_map([-1, 0], ranks=(4, 8)))
    with pytest.raises(ValueError, match=r"no_lora_slot: expected a slot in \[0, 3\) of rank 0"):
        to_segments(_map([-1, 0]), no_lora_slot=2)
    assert to_segments(_map([-1, 0, 0, 2])).weight_indices.tolist() == [1, 0, 2]


def test_a_backend_without_the_form_refuses_it():
    with pytest.raises(TypeError, match="does not declare token_map"):
        BaseLoRABackend().set_batch_info(_map([0]))


def test_triton_leaves_minus_one_rows_as_base_or_zero():
    info = make_batch_info([3, 2, 4], [2, 0, 2], [4, 0, 8], [0.5, 1.0, -2.0],
                           permutation=[4, 0, 7, 1, 8, 2, 6, 3, 5])  # fmt: skip
    tm = to_token_map(info)
    tm.token_slots[[0, 5]] = NO_LORA
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 8, generator=gen)
    b = torch.randn(3, 32, 8, generator=gen)
    base = torch.randn(9, 32, generator=gen)
    backend = TritonLoRABackend(batch_info=tm)
    with_base = backend.run_lora_b_sgemm(x, b, base.clone())
    without = backend.run_lora_b_sgemm(x, b, None)
    for row in (0, 5):
        assert torch.equal(with_base[row], base[row])
        assert torch.equal(without[row], torch.zeros(32))
    expected = ReferenceLoRABackend(batch_info=tm).run_lora_b_sgemm(x, b, base)
    torch.testing.assert_close(with_base, expected)


class _LastSlot(ReferenceLoRABackend):
    """Reads a -1 slot as Python's index -1, the last slot (vLLM's torch reference once did)."""

    def set_batch_info(self, batch_info):
        if isinstance(batch_info, TokenMapBatchInfo):
            last = batch_info.lora_ranks.numel() - 1
            slots = batch_info.token_slots.clone()
            slots[slots == NO_LORA] = last
            batch_info = TokenMapBatchInfo(slots, batch_info.lora_ranks, batch_info.scalings)
        super().set_batch_info(batch_info)


class _NoMap(ReferenceLoRABackend):
    capabilities = Capabilities(float32_matmul="ieee")


def test_the_check_fails_a_backend_that_reads_minus_one_as_a_slot(tmp_path: Path):
    kw = dict(profile="ci", failures_dir=tmp_path, checks=("token_map",), dtypes=("float32",),
              ops=("expand", "qkv"), shrink=False)  # fmt: skip
    assert {r.outcome for r in run_plan(ReferenceLoRABackend, "reference", **kw)} == {"pass"}
    assert "fail" in {r.outcome for r in run_plan(_LastSlot, "last-slot", **kw)}
    assert {r.outcome for r in run_plan(_NoMap, "no-map", **kw)} == {"skip"}


class _Unchecked(ReferenceLoRABackend):
    """Takes any token map: entries past the pool read as the last slot, -2 as no LoRA."""

    def set_batch_info(self, batch_info):
        if isinstance(batch_info, TokenMapBatchInfo):
            L = batch_info.lora_ranks.numel()
            slots = batch_info.token_slots.clamp(-1, L - 1)
            batch_info = TokenMapBatchInfo(slots, batch_info.lora_ranks, batch_info.scalings)
        super().set_batch_info(batch_info)


def test_the_check_fails_a_backend_that_takes_bad_maps(tmp_path: Path):
    kw = dict(profile="ci", failures_dir=tmp_path, checks=("token_map",), dtypes=("float32",),
              ops=("expand",), shrink=False)  # fmt: skip
    [record] = run_plan(_Unchecked, "unchecked", **kw)
    assert record.outcome == "fail"
    assert "accepted, expected ValueError or TypeError" in " ".join(record.failure["messages"])


def test_a_token_map_refills_in_place_or_not_at_all():
    target = TokenMapBatchInfo(torch.tensor([0, 1, -1, 1], dtype=torch.int32),
                               torch.tensor([4, 2], dtype=torch.int32),
                               torch.tensor([1.0, 0.5]), use_cuda_graph=True)  # fmt: skip
    pointer = target.token_slots.data_ptr()
    source = TokenMapBatchInfo(
        torch.tensor([1, 1, 0, -1], dtype=torch.int32),
        torch.tensor([3, 0], dtype=torch.int32),
        torch.tensor([2.0, 1.0]),
    )
    refill_batch_info(target, source)
    assert target.token_slots.tolist() == [1, 1, 0, -1] and target.lora_ranks.tolist() == [3, 0]
    assert target.token_slots.data_ptr() == pointer
    longer = TokenMapBatchInfo(torch.tensor([0] * 5, dtype=torch.int32), source.lora_ranks,
                               source.scalings)  # fmt: skip
    with pytest.raises(ValueError, match=r"^source.token_slots: expected T = 4 rows"):
        refill_batch_info(target, longer)
    assert target.token_slots.tolist() == [1, 1, 0, -1]
    segments = make_batch_info([4], [0], [3, 0], [2.0, 1.0])
    with pytest.raises(TypeError, match=r"^source: expected a TokenMapBatchInfo"):
        refill_batch_info(target, segments)
