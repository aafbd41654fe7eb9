"""The vLLM adapter's mapping, checked on every CI run against a CPU model of vLLM's LoRA ops.

vLLM's ops need a GPU.  This model follows vLLM 0.33's ``lora_shrink`` / ``lora_expand`` and
``LoRAKernelMeta`` as their code reads: a token-to-slot map (-1: no LoRA), a float32
``(c, T, R)`` shrink buffer, and an expand that reads the buffer in the weights' dtype, rounds
its product to that dtype and then adds the output in place.  It asserts the preconditions the
adapter must meet (dtypes, shapes, contiguity).  A model that ignores the slot map must be
caught.  The adapter runs the real ops in ``tests/peers/test_vllm.py`` on a GPU.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from tests.peers import adapter_on_cpu, first_failure

MODULE = "conformance.peers.vllm_backend"


class KernelMetaModel:
    """``LoRAKernelMeta``: the token-to-slot map, handed to the ops by ``meta_args``."""

    @staticmethod
    def make(max_loras: int, max_num_tokens: int, device) -> KernelMetaModel:
        meta = KernelMetaModel()
        meta.mapping = torch.full((max_num_tokens,), -1, dtype=torch.int32, device=device)
        return meta

    def prepare_tensors(self, token_lora_mapping: torch.Tensor) -> None:
        assert token_lora_mapping.dtype == torch.int32
        self.mapping[: token_lora_mapping.shape[0]] = token_lora_mapping

    def meta_args(self, token_nums: int, specialize_active_lora: bool) -> tuple:
        return (self.mapping[:token_nums], None, None, None, None, None, None)


def _rows(mapping: torch.Tensor, one_slot: bool):
    for t, w in enumerate(mapping.tolist()):
        if w >= 0:
            yield t, 0 if one_slot else w


def shrink_model(inputs, lora_a_weights, output_tensor, mapping, *meta_and_scale, one_slot=False):
    scale = meta_and_scale[-1]
    assert inputs.dtype in (torch.float16, torch.bfloat16) and output_tensor.is_contiguous()
    assert output_tensor.dtype == torch.float32 and len(lora_a_weights) == output_tensor.shape[0]
    output_tensor.zero_()
    for j, A in enumerate(lora_a_weights):
        assert A.dtype == inputs.dtype and A.shape[-1] == inputs.shape[1]
        for t, w in _rows(mapping, one_slot):
            output_tensor[j, t] = scale * (A[w].float() @ inputs[t].float())


def expand_model(
    inputs, lora_b_weights, output_tensor, mapping, *meta, one_slot=False, vllm_rounding=True
):
    offset_start, add_inputs = meta[-2], meta[-1]
    assert output_tensor.is_contiguous() and inputs.shape[0] == len(lora_b_weights)
    col = offset_start
    for j, B in enumerate(lora_b_weights):
        n = B.shape[1]
        for t, w in _rows(mapping, one_slot):
            x = inputs[j, t].to(B.dtype).float()
            term = B[w].float() @ x
            if vllm_rounding:
                term = term.to(B.dtype).float()  # vLLM rounds its product before adding
            if add_inputs:
                term = term + output_tensor[t, col : col + n].float()
            output_tensor[t, col : col + n] = term.to(B.dtype)
        col += n


def _adapter_on_cpu(monkeypatch, one_slot: bool = False, vllm_rounding: bool = False) -> type:
    """The adapter against the model; ``vllm_rounding`` rounds the expand's product first."""
    ops = types.ModuleType("vllm.lora.ops.triton_ops")
    ops.LoRAKernelMeta = KernelMetaModel
    ops.lora_shrink = lambda *a: shrink_model(*a, one_slot=one_slot)
    ops.lora_expand = lambda *a: expand_model(*a, one_slot=one_slot, vllm_rounding=vllm_rounding)
    ops.utils = types.SimpleNamespace(_LORA_A_PTR_DICT={}, _LORA_B_PTR_DICT={})
    fakes = {name: types.ModuleType(name) for name in ("vllm", "vllm.lora", "vllm.lora.ops")}
    fakes["vllm.lora.ops.triton_ops"] = ops
    return adapter_on_cpu(monkeypatch, MODULE, "VLLMBackend", fakes)


def test_adapter_passes_the_suite_on_the_modelled_ops(monkeypatch):
    # the expand adds in float32 here, as the contract does: what is left is the adapter's
    # mapping and vLLM's scaling folded into B in the weights' dtype.  In bfloat16 (float32's
    # exponent range) that folding stays within the tolerance, and the whole plan passes
    found = first_failure(_adapter_on_cpu(monkeypatch), dtypes=("bfloat16",))
    assert found is None, found and found.failure["messages"]


def test_folding_small_scalings_into_fp16_weights_is_caught(monkeypatch):
    """vLLM multiplies B by the scaling in the weights' dtype.  For |s| < 2^-10 (drawn since the
    scalings became log-uniform over [2^-20, 2^6]) that product loses bits in float16, and the
    suite reports it: a contract difference (COMPATIBILITY.md), found on the CPU model."""
    # the model computes on the CPU, which keeps subnormals: it is held to "preserve" (the
    # adapter declares "flush", what compiled Triton does on a GPU)
    adapter = _adapter_on_cpu(monkeypatch)
    caps = dataclasses.replace(adapter.capabilities, subnormals="preserve")
    preserving = type("PreservingModel", (adapter,), {"capabilities": caps})
    found = first_failure(preserving, ("expand",), ("float16",), ("diff",))
    assert found is not None and "wrong result" in found.failure["messages"][0]
    case = found.failure["case"]
    used = {w for n, w in zip(case["seg_lens"], case["weight_indices"], strict=True) if n}
    assert any(0 < abs(case["scalings"][w]) < 2.0**-8 for w in used if case["lora_ranks"][w])


def test_a_renamed_vllm_cache_fails_at_import_by_name(monkeypatch):
    """The adapter clears vLLM's private pointer tables; a release that renames one makes the
    import fail with the table's name, not a run fail later with an AttributeError."""
    from conformance.peers import PeerInterfaceError

    ops = types.ModuleType("vllm.lora.ops.triton_ops")
    ops.LoRAKernelMeta = KernelMetaModel
    ops.lora_shrink = ops.lora_expand = lambda *a: None
    ops.utils = types.SimpleNamespace(_LORA_A_PTR_DICT={})  # _LORA_B_PTR_DICT renamed away
    fakes = {name: types.ModuleType(name) for name in ("vllm", "vllm.lora", "vllm.lora.ops")}
    fakes["vllm.lora.ops.triton_ops"] = ops
    with pytest.raises(PeerInterfaceError, match=r"_LORA_B_PTR_DICT is missing, expected a dict"):
        adapter_on_cpu(monkeypatch, MODULE, "VLLMBackend", fakes)


def test_adapter_passes_token_maps_as_vllms_own_mapping(monkeypatch):
    """A token map (-1 rows included) goes to vLLM as its token_lora_mapping as it is."""
    found = first_failure(_adapter_on_cpu(monkeypatch), dtypes=("bfloat16",),
                          checks=("token_map",))  # fmt: skip
    assert found is None, found and found.failure
