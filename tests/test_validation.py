"""Every bad-input path: the error type, a message naming the argument, and nothing written."""

from __future__ import annotations

import pytest
import torch

from lora_ref import LoRABatchInfo, ReferenceLoRABackend, make_batch_info

F16 = torch.float16


def info(**changes):
    base = make_batch_info([2, 1], [0, 1], [2, 1], [1.0, 0.5])
    fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
    fields.update(changes)
    return LoRABatchInfo(**fields)


def ints(values):
    return torch.tensor(values, dtype=torch.int32)


@pytest.mark.parametrize(
    ("changes", "error", "needle"),
    [
        ({"bs": -1}, ValueError, "bs: expected a non-negative int"),
        ({"max_len": 2.0}, ValueError, "max_len: expected an int"),
        ({"seg_lens": ints([2, 1]).long()}, TypeError, "seg_lens: expected dtype int32, got int64"),
        (
            {"scalings": torch.ones(2, dtype=torch.float64)},
            TypeError,
            "scalings: expected dtype float32",
        ),
        ({"seg_lens": ints([[2, 1]])}, ValueError, "seg_lens: expected a 1-D tensor"),
        ({"seg_lens": ints([2, 1, 0])}, ValueError, "seg_lens: expected shape (2,) for bs=2"),
        ({"weight_indices": ints([0])}, ValueError, "weight_indices: expected shape (2,)"),
        ({"seg_indptr": ints([0, 2])}, ValueError, "seg_indptr: expected shape (3,)"),
        (
            {"seg_indptr": ints([0, 2, 4])},
            ValueError,
            "seg_indptr: expected seg_indptr[2] == seg_indptr[1] + seg_lens[1] = 3",
        ),
        (
            {"seg_indptr": ints([1, 3, 4]), "seg_lens": ints([2, 1])},
            ValueError,
            "seg_indptr[0] == 0",
        ),
        (
            {"seg_lens": ints([-1, 1]), "seg_indptr": ints([0, -1, 0])},
            ValueError,
            "seg_lens: expected lengths >= 0, got seg_lens[0]=-1",
        ),
        ({"max_len": 1}, ValueError, "max_len: expected >= max(seg_lens) = 2"),
        (
            {"weight_indices": ints([0, 2])},
            ValueError,
            "weight_indices: expected slots in [0, 2), got weight_indices[1]=2",
        ),
        ({"weight_indices": ints([-1, 0])}, ValueError, "weight_indices[0]=-1"),
        ({"lora_ranks": ints([2, -1])}, ValueError, "lora_ranks: expected ranks >= 0"),
        (
            {"scalings": torch.tensor([1.0, float("nan")])},
            ValueError,
            "scalings: expected finite values",
        ),
        (
            {"permutation": ints([0, 0, 1])},
            ValueError,
            "permutation: expected a permutation of range(3)",
        ),
        ({"permutation": ints([0, 1])}, ValueError, "permutation: expected shape (3,)"),
        ({"scalings": torch.ones(3)}, ValueError, "scalings: expected shape (2,) like lora_ranks"),
        ({"seg_lens": ints([2, 1]).double()}, TypeError, "seg_lens: expected dtype int32"),
    ],
)
def test_batch_info_invalid(changes, error, needle):
    with pytest.raises(error) as exc:
        info(**changes).validate()
    assert needle in str(exc.value)


def test_graph_capacity_padding_must_be_empty():
    padded = make_batch_info([2, 1], [0, 1], [1, 1], [1.0, 1.0], capacity=4)
    assert padded.validate().num_segments == 4
    padded.seg_lens[3] = 1
    with pytest.raises(
        ValueError, match=r"empty padding segments beyond bs=2, got seg_lens\[3\]=1"
    ):
        padded.validate()
    unpadded = make_batch_info([2, 1], [0, 1], [1, 1], [1.0, 1.0], capacity=4)
    unpadded.use_cuda_graph = False
    with pytest.raises(ValueError, match="use_cuda_graph=True"):
        unpadded.validate()


def test_summary_facts():
    s = make_batch_info([2, 0, 3], [1, 0, 1], [4, 0], [1.0, 1.0]).validate()
    assert (s.num_tokens, s.num_slots, s.max_weight_index, s.max_rank, s.num_segments) == (
        5,
        2,
        1,
        4,
        3,
    )


def _ops():
    """(name, call(backend, overrides)) for each operation with valid defaults: T=3, K=4, L=2, R=2."""
    x = torch.randn(3, 4, dtype=F16)
    A = torch.randn(2, 2, 4, dtype=F16)
    B = torch.randn(2, 5, 2, dtype=F16)
    A3 = torch.randn(2, 6, 4, dtype=F16)
    Bq = torch.randn(2, 7, 2, dtype=F16)
    offsets = ints([0, 3, 5, 7])
    A2 = torch.randn(2, 4, 4, dtype=F16)
    Bg = torch.randn(2, 6, 2, dtype=F16)

    def shrink(b, **o):
        return b.run_lora_a_sgemm(o.get("x", x), o.get("weights", A), o.get("stack_num", 1))

    def expand(b, **o):
        return b.run_lora_b_sgemm(o.get("x", x[:, :2]), o.get("weights", B), o.get("base"))

    def qkv(b, **o):
        return b.run_qkv_lora(
            o.get("x", x),
            o.get("weights", A3),
            o.get("lora_b", Bq),
            o.get("offsets", offsets),
            o.get("max_dim", 3),
            o.get("base"),
        )

    def gate_up(b, **o):
        return b.run_gate_up_lora(
            o.get("x", x), o.get("weights", A2), o.get("lora_b", Bg), o.get("base")
        )

    return {"shrink": shrink, "expand": expand, "qkv": qkv, "gate_up": gate_up}


OPS = _ops()


@pytest.mark.parametrize(
    ("op", "override", "error", "needle"),
    [
        (
            "shrink",
            {"x": torch.randn(3, 4, dtype=torch.float64)},
            TypeError,
            "x: expected dtype float16 or bfloat16 or float32, got float64",
        ),
        ("shrink", {"x": torch.randn(12, dtype=F16)}, ValueError, "x: expected a 2-D tensor"),
        (
            "shrink",
            {"weights": torch.randn(2, 2, 4)},
            TypeError,
            "weights: expected dtype float16, got float32",
        ),
        (
            "shrink",
            {"x": torch.randn(4, 4, dtype=F16)},
            ValueError,
            "x: expected 3 rows (T = seg_indptr[-1]), got 4",
        ),
        (
            "shrink",
            {"weights": torch.randn(2, 2, 5, dtype=F16)},
            ValueError,
            "weights: expected dim 2 (K) equal to x.shape[1] = 4, got 5",
        ),
        (
            "shrink",
            {"weights": torch.randn(3, 2, 4, dtype=F16)},
            ValueError,
            "weights: expected 2 adapter slots",
        ),
        (
            "shrink",
            {"weights": torch.randn(2, 1, 4, dtype=F16)},
            ValueError,
            "weights: expected a pool rank R >= max(lora_ranks) = 2, got R=1",
        ),
        ("shrink", {"stack_num": 4}, ValueError, "stack_num: expected 1, 2 or 3, got 4"),
        (
            "shrink",
            {"stack_num": 3},
            ValueError,
            "weights: expected dim 1 (c*R) divisible by stack_num=3",
        ),
        (
            "expand",
            {"x": torch.randn(3, 1, dtype=F16)},
            ValueError,
            "x: expected >= max(lora_ranks) = 2 columns, got 1",
        ),
        (
            "expand",
            {"base": torch.zeros(3, 4, dtype=F16)},
            ValueError,
            "base_output: expected shape (3, 5), got shape (3, 4)",
        ),
        (
            "expand",
            {"base": torch.zeros(3, 5)},
            TypeError,
            "base_output: expected dtype float16, got float32",
        ),
        (
            "qkv",
            {"offsets": torch.tensor([0, 3, 5, 7])},
            TypeError,
            "output_offset: expected dtype int32, got int64",
        ),
        ("qkv", {"offsets": ints([0, 3, 5])}, ValueError, "output_offset: expected shape (4,)"),
        (
            "qkv",
            {"offsets": ints([0, 3, 8, 7])},
            ValueError,
            "output_offset: expected [0, Nq, Nq+Nkv, Nq+2*Nkv] with Nq+2*Nkv = 7",
        ),
        (
            "qkv",
            {"offsets": ints([0, 3, 4, 7])},
            ValueError,
            "output_offset: expected [0, Nq, Nq+Nkv, Nq+2*Nkv]",
        ),
        (
            "qkv",
            {"max_dim": 2},
            ValueError,
            "max_qkv_out_dim: expected >= the widest slice 3, got 2",
        ),
        ("qkv", {"max_dim": -1}, ValueError, "max_qkv_out_dim: expected a non-negative int"),
        ("qkv", {"max_dim": 0}, ValueError, "max_qkv_out_dim: expected >= the widest slice 3"),
        (
            "qkv",
            {"lora_b": torch.randn(2, 7, 3, dtype=F16)},
            ValueError,
            "qkv_lora_b: expected shape (2, N, 2) matching qkv_lora_a",
        ),
        (
            "qkv",
            {"lora_b": (torch.randn(2, 3, 2, dtype=F16), torch.randn(2, 2, 2, 2, dtype=F16))},
            ValueError,
            "qkv_lora_b[0]: expected a 4-D tensor",
        ),
        (
            "gate_up",
            {"lora_b": torch.randn(2, 5, 2, dtype=F16)},
            ValueError,
            "gate_up_lora_b: expected an even dim 1",
        ),
        (
            "gate_up",
            {"lora_b": (torch.randn(2, 3, 2, dtype=F16), torch.randn(2, 2, 2, dtype=F16))},
            ValueError,
            "gate_up_lora_b[1]: expected shape (2, 3, 2) like the gate half",
        ),
        (
            "gate_up",
            {"weights": torch.randn(2, 3, 4, dtype=F16)},
            ValueError,
            "gate_up_lora_a: expected dim 1 (2*R) divisible by 2",
        ),
    ],
)
def test_operation_invalid_and_nothing_written(op, override, error, needle):
    b = ReferenceLoRABackend(batch_info=make_batch_info([2, 1], [0, 1], [2, 1], [1.0, 0.5]))
    base = override.get("base")
    before = base.clone() if base is not None else None
    with pytest.raises(error) as exc:
        OPS[op](b, **override)
    assert needle in str(exc.value)
    if before is not None:
        assert torch.equal(base, before)


def test_operation_before_batch_info():
    with pytest.raises(ValueError, match="set_batch_info"):
        OPS["shrink"](ReferenceLoRABackend())


def test_set_batch_info_rejects_other_types():
    with pytest.raises(
        TypeError, match="batch_info: expected a LoRABatchInfo or a TokenMapBatchInfo, got dict"
    ):
        ReferenceLoRABackend().set_batch_info({})


def test_valid_defaults_pass():
    b = ReferenceLoRABackend(batch_info=make_batch_info([2, 1], [0, 1], [2, 1], [1.0, 0.5]))
    for call in OPS.values():
        call(b)
