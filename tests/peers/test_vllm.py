"""The vLLM adapter: loud when vLLM is missing; right on plain cases where vLLM runs (CUDA).

The adapter drives vLLM's own ops, so these tests check the mapping (token-to-adapter map,
per-slice weights, scaling folded into ``B``) on cases every multi-LoRA kernel handles; the
conformance suite judges vLLM itself.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conformance.checks.diff import check_diff
from lora_ref import BackendNotFoundError, get_backend_from_name
from tests.peers.test_sglang import _case

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed")
def test_missing_vllm_names_the_extra():
    with pytest.raises(BackendNotFoundError, match=r"pip install 'lora-conformance\[vllm\]'"):
        get_backend_from_name("vllm")


@pytest.mark.skipif(not (HAVE_VLLM and torch.cuda.is_available()), reason="needs vLLM and CUDA")
@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
def test_vllm_adapter_maps_a_plain_batch(op):
    backend = get_backend_from_name("vllm")
    result = check_diff(backend, _case(op, "float16"), torch.device("cuda"))
    assert result.ok, result.failures
