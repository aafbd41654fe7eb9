"""Building batch info from host lists, and the in-place CUDA-graph refill."""

from __future__ import annotations

import pytest
import torch

from lora_ref import make_batch_info, refill_batch_info


def test_make_batch_info_fields():
    info = make_batch_info([3, 0, 2], [1, 0, 1], [4, 0], [0.5, -2.0], permutation=[4, 3, 2, 1, 0])
    assert info.bs == 3 and info.max_len == 3 and not info.use_cuda_graph
    assert info.seg_indptr.tolist() == [0, 3, 3, 5]
    assert info.seg_lens.dtype == torch.int32 and info.scalings.dtype == torch.float32
    assert info.permutation.tolist() == [4, 3, 2, 1, 0]
    info.validate()


def test_make_batch_info_capacity_pads_with_empty_segments():
    info = make_batch_info([2, 1], [1, 1], [1, 2], [1.0, 1.0], capacity=5)
    assert info.use_cuda_graph and info.bs == 2
    assert info.seg_lens.tolist() == [2, 1, 0, 0, 0]
    assert info.seg_indptr.tolist() == [0, 2, 3, 3, 3, 3]
    assert info.weight_indices.tolist() == [1, 1, 0, 0, 0]


def test_make_batch_info_rejects_mismatched_lists():
    with pytest.raises(ValueError, match=r"weight_indices: expected 2 entries"):
        make_batch_info([1, 1], [0], [1], [1.0])
    with pytest.raises(ValueError, match="capacity: expected >= bs = 2"):
        make_batch_info([1, 1], [0, 0], [1], [1.0], capacity=1)


def test_refill_more_then_fewer_segments():
    buf = make_batch_info([4], [0], [1, 1, 1], [1.0, 2.0, 3.0], capacity=4)
    ptrs = [buf.seg_lens.data_ptr(), buf.seg_indptr.data_ptr(), buf.weight_indices.data_ptr()]
    refill_batch_info(buf, make_batch_info([1, 1, 1, 1], [2, 1, 0, 2], [1, 1, 1], [1.0, 2.0, 3.0]))
    assert (
        buf.bs == 4
        and buf.seg_lens.tolist() == [1, 1, 1, 1]
        and buf.weight_indices.tolist() == [2, 1, 0, 2]
    )
    refill_batch_info(buf, make_batch_info([3, 1], [1, 2], [1, 1, 1], [1.0, 2.0, 3.0]))
    assert buf.seg_lens.tolist() == [3, 1, 0, 0]
    assert buf.seg_indptr.tolist() == [0, 3, 4, 4, 4]
    assert buf.weight_indices.tolist() == [1, 2, 0, 0]
    assert [
        buf.seg_lens.data_ptr(),
        buf.seg_indptr.data_ptr(),
        buf.weight_indices.data_ptr(),
    ] == ptrs
    buf.validate()


def test_refill_rejects_too_many_segments():
    buf = make_batch_info([2], [0], [1], [1.0], capacity=2)
    with pytest.raises(ValueError, match=r"source\.bs: expected <= the buffer capacity 2, got 3"):
        refill_batch_info(buf, make_batch_info([1, 1, 0], [0, 0, 0], [1], [1.0]))


def _snapshot(info):
    return [t.clone() for t in (info.seg_lens, info.seg_indptr, info.weight_indices,
                                info.lora_ranks, info.scalings)]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # each source is invalid or does not fit; the refill must raise before writing
        (dict(weight_indices=[0, 3]), r"weight_indices: expected slots in \[0, 3\)"),
        (dict(lora_ranks=[1, -1, 1]), r"lora_ranks: expected ranks >= 0"),
        (dict(seg_lens=[3, 1], fix_indptr=False), r"seg_indptr: expected seg_indptr\[1\]"),
        (dict(scalings=[1.0, float("nan"), 1.0]), r"scalings: expected finite values"),
        (dict(seg_lens=[2, 3]), r"source: expected T = 4 tokens"),
        (dict(lora_ranks=[1, 1], scalings=[1.0, 1.0]), r"source\.lora_ranks: expected 3 slots"),
    ],
)
def test_refill_validates_on_the_host_before_writing(source, message):
    buf = make_batch_info([4], [0], [1, 1, 1], [1.0, 2.0, 3.0], capacity=4)
    before = _snapshot(buf)
    args = dict(seg_lens=[2, 2], weight_indices=[0, 1], lora_ranks=[1, 1, 1],
                scalings=[1.0, 2.0, 3.0])  # fmt: skip
    fix = source.pop("fix_indptr", True)
    args.update(source)
    src = make_batch_info(**args)
    if not fix:
        src.seg_indptr[1] = 2  # disagrees with seg_lens
    with pytest.raises(ValueError, match=message):
        refill_batch_info(buf, src)
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(buf), before, strict=True))


def test_refill_needs_graph_buffers():
    plain = make_batch_info([2], [0], [1], [1.0])
    with pytest.raises(ValueError, match=r"target\.use_cuda_graph: expected True"):
        refill_batch_info(plain, make_batch_info([1, 1], [0, 0], [1], [1.0]))


def test_an_empty_batch_is_valid():
    info = make_batch_info([], [], [4, 0], [1.0, 0.5])
    summary = info.validate()
    assert summary.num_tokens == 0 and summary.num_segments == 0


def test_sglangs_fields_are_filled_and_held_to_the_segments():
    import dataclasses

    info = make_batch_info([2, 0, 3, 1], [1, 0, 1, 2], [4, 0, 3], [1.0, 1.0, 1.0],
                           request_segments=[3, 1])  # fmt: skip
    info.validate()
    assert (info.expected_tokens, info.has_active_lora, info.num_segments) == (6, True, 4)
    assert info.req_seg_indptr.tolist() == [0, 5, 6] and info.req_weight_indices.tolist() == [1, 2]
    idle = make_batch_info([3], [1], [4, 0], [1.0, 1.0])
    assert idle.has_active_lora is False
    bad = {
        "expected_tokens": dict(expected_tokens=7),
        "has_active_lora": dict(has_active_lora=False),
        "req_seg_indptr": dict(req_seg_indptr=torch.tensor([0, 4, 6], dtype=torch.int32)),
        "req_weight_indices": dict(req_weight_indices=torch.tensor([1, 1], dtype=torch.int32)),
    }
    for name, change in bad.items():
        with pytest.raises(ValueError, match=f"^{name}: expected"):
            dataclasses.replace(info, **change).validate()
    with pytest.raises(ValueError, match=r"^req_weight_indices: expected given exactly when"):
        dataclasses.replace(info, req_weight_indices=None).validate()


def test_a_refill_keeps_sglangs_fields_true():
    target = make_batch_info([3, 3], [0, 1], [4, 2], [1.0, 1.0], capacity=4)
    source = make_batch_info([6], [1], [0, 0], [1.0, 1.0])
    refill_batch_info(target, source)
    assert target.has_active_lora is False and target.expected_tokens == 6
    target.validate()
