"""The reference agrees with Hugging Face PEFT's mixed-adapter LoRA layers (a second oracle)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from conformance.inputs import build_inputs, call
from conformance.profiles import PROFILES
from conformance.strategies import cases
from lora_ref import ReferenceLoRABackend

peft = pytest.importorskip(
    "peft", reason="PEFT is not installed (pip install 'lora-conformance[peft]')"
)

from conformance.peers.peft_oracle import peft_fused  # noqa: E402


@pytest.mark.parametrize("op", ["qkv", "gate_up"])
def test_reference_agrees_with_peft(op):
    @settings(max_examples=25, derandomize=True, deadline=None, database=None)
    @given(
        case=cases(op, "float32", PROFILES["ci"], permutation=True).map(
            lambda c: c.replace(has_base=False)
        )
    )
    def run(case):
        inputs = build_inputs(case, "cpu")
        ref = ReferenceLoRABackend(batch_info=inputs.batch_info)
        with ref.exact():
            ours = call(ref, case, inputs, None)
        theirs = peft_fused(case, inputs)
        scale = ours.abs().max().item() if ours.numel() else 0.0
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12 * max(scale, 1.0))

    run()


def test_peft_oracle_sees_a_swapped_slice():
    """The comparison bites: swapping the k and v slices of B makes PEFT disagree."""
    from conformance.case import Case

    case = Case(
        op="qkv",
        dtype="float32",
        seg_lens=(3,),
        weight_indices=(0,),
        lora_ranks=(2,),
        scalings=(1.5,),
        R=2,
        K=5,
        N=4,
        n_kv=3,
        stack=3,
        has_base=False,
        seed=1,
    )
    inputs = build_inputs(case, "cpu")
    theirs = peft_fused(case, inputs)
    A, B, offsets, max_dim = inputs.args
    swapped = torch.cat([B[:, :4], B[:, 7:10], B[:, 4:7]], dim=1)
    ref = ReferenceLoRABackend(batch_info=inputs.batch_info)
    with ref.exact():
        ours = ref.run_qkv_lora(inputs.x, A, swapped, offsets, max_dim)
    assert not torch.allclose(ours, theirs)
