"""The reference backend on small hand-computed cases: exact expected numbers, one per feature.

Inputs are small integers in float32, so every expected value is exact and written out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from lora_ref import ReferenceLoRABackend, make_batch_info

NAN = math.nan
F32 = torch.float32


def t(rows, dtype=F32):
    return torch.tensor(rows, dtype=dtype)


def backend(seg_lens, slots, ranks, scalings, permutation=None):
    return ReferenceLoRABackend(
        batch_info=make_batch_info(seg_lens, slots, ranks, scalings, permutation=permutation)
    )


def test_shrink_two_adapters_packed_at_own_rank():
    # slot 0 rank 1: row 0 of A[0]; slot 1 rank 2: rows 0-1; the rest is garbage (NaN)
    A = t([[[1, 0], [NAN, NAN]], [[1, 1], [0, 1]]])
    x = t([[1, 2], [3, 4], [5, 6]])
    out = backend([2, 1], [0, 1], [1, 2], [1.0, 1.0]).run_lora_a_sgemm(x, A)
    assert out[0, 0] == 1 and out[1, 0] == 3
    assert out[2].tolist() == [11, 6]


def test_shrink_stacked_slices_at_rank_r():
    # R=2, c=2, slot rank 1: slices at rows 0 and 1 (j*r), not rows 0 and 2 (j*R)
    A = t([[[1, 0], [0, 1], [NAN, NAN], [NAN, NAN]]])
    out = backend([1], [0], [1], [1.0]).run_lora_a_sgemm(t([[2, 3]]), A, stack_num=2)
    assert out[0, :2].tolist() == [2, 3]


def test_expand_scaling_and_base():
    B = t([[[1, NAN], [2, NAN], [0, NAN]]])  # N=3, R=2, rank 1
    x = t([[1, NAN], [2, NAN]])
    base = t([[10, 20, 30], [0, 0, 0]])
    out = backend([2], [0], [1], [0.5]).run_lora_b_sgemm(x, B, base)
    assert out.tolist() == [[10.5, 21, 30], [1, 2, 0]]
    assert base.tolist() == [[10, 20, 30], [0, 0, 0]], "the reference never writes its inputs"


def test_expand_base_none_is_zeros():
    B = t([[[3], [4]]])
    out = backend([1], [0], [1], [2.0]).run_lora_b_sgemm(t([[1]]), B, None)
    assert out.tolist() == [[6, 8]]


def test_rank_zero_rows_bit_identical():
    # slot 0 has rank 0: its rows return base exactly, -0.0 and subnormals included
    base = torch.tensor([[-0.0, 1e-42], [1.5, 2.5]], dtype=F32)
    B = t([[[NAN], [NAN]], [[1], [1]]])
    x = t([[NAN], [4]])
    out = backend([1, 1], [0, 1], [0, 1], [7.0, 1.0]).run_lora_b_sgemm(x, B, base)
    assert torch.equal(out[0].view(torch.int32), base[0].view(torch.int32))
    assert out[1].tolist() == [5.5, 6.5]


def test_empty_segment_and_repeated_adapter():
    B = t([[[1]], [[10]]])
    x = t([[1], [2], [3]])
    # segments: [1 row slot 1][empty slot 0][2 rows slot 1]
    out = backend([1, 0, 2], [1, 0, 1], [1, 1], [1.0, 1.0]).run_lora_b_sgemm(x, B, None)
    assert out.flatten().tolist() == [10, 20, 30]


def test_permutation_maps_logical_to_physical_rows():
    B = t([[[1]], [[100]]])
    x = t([[1], [2], [3]])
    # logical rows 0,1 -> slot 0 ; logical row 2 -> slot 1 ; logical j is physical perm[j]
    out = backend([2, 1], [0, 1], [1, 1], [1.0, 1.0], permutation=[2, 0, 1]).run_lora_b_sgemm(
        x, B, None
    )
    assert out.flatten().tolist() == [1, 200, 3]


def _qkv_inputs():
    # K=1, R=1, rank 1; Nq=2, Nkv=1: columns [q0 q1 | k | v]
    A = t([[[2], [3], [5]]])  # slices q, k, v at rows 0, 1, 2 (j*r)
    B = t([[[1], [10], [100], [1000]]])
    offsets = torch.tensor([0, 2, 3, 4], dtype=torch.int32)
    return A, B, offsets


def test_qkv_gqa_offsets():
    A, B, offsets = _qkv_inputs()
    out = backend([1], [0], [1], [1.0]).run_qkv_lora(t([[1]]), A, B, offsets, 2, None)
    # q: 2 * [1, 10]; k: 3 * 100; v: 5 * 1000
    assert out.tolist() == [[2, 20, 300, 5000]]


def test_qkv_split_layout_matches_stacked():
    A, B, offsets = _qkv_inputs()
    q_b = B[None, :, :2]
    kv_b = torch.stack([B[:, 2:3], B[:, 3:4]])
    ref = backend([1], [0], [1], [1.0])
    out = ref.run_qkv_lora(t([[1]]), A, (q_b, kv_b), offsets, 2, t([[1, 1, 1, 1]]))
    assert out.tolist() == [[3, 21, 301, 5001]]


def test_gate_up_halves():
    A = t([[[1], [2]]])  # gate slice row 0, up slice row 1
    B = t([[[1], [3], [5], [7]]])  # N=2: gate cols 0-1, up cols 2-3
    out = backend([1], [0], [1], [1.0]).run_gate_up_lora(t([[1]]), A, B, None)
    assert out.tolist() == [[1, 3, 10, 14]]
    split = backend([1], [0], [1], [1.0]).run_gate_up_lora(t([[1]]), A, (B[:, :2], B[:, 2:]), None)
    assert split.tolist() == out.tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_returns_input_dtype_computed_in_float64(dtype):
    # 2049 + 1 - 2049 needs more than bf16/fp16 precision in the middle; float64 keeps it
    x = torch.tensor([[2048, 1, -2048]], dtype=dtype)
    A = torch.ones(1, 1, 3, dtype=dtype)
    out = backend([1], [0], [1], [1.0]).run_lora_a_sgemm(x, A)
    assert out.dtype == dtype and out[0, 0].item() == 1
