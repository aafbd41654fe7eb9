"""The SGLang adapters: loud when SGLang is missing; right on plain cases when it is there.

The adapter runs SGLang's own kernels, so these tests check the mapping (batch layouts, slices,
offsets) on cases every multi-LoRA kernel handles; the conformance suite judges SGLang itself.
Run them with ``tox -e sglang`` (SGLang installed without its serving dependencies).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conformance.case import Case
from conformance.checks.diff import check_diff
from conformance.names import stack_count
from lora_ref import BackendNotFoundError, get_backend_from_name

try:
    import conformance.peers.sglang_backends  # noqa: F401

    HAVE_SGLANG = True
except ImportError:
    HAVE_SGLANG = False

needs_sglang = pytest.mark.skipif(
    not HAVE_SGLANG, reason="SGLang's kernels are not importable here"
)


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="SGLang is installed")
@pytest.mark.parametrize("name", ["sglang-triton", "sglang-csgmv"])
def test_missing_sglang_names_the_extra(name):
    with pytest.raises(BackendNotFoundError, match=r"pip install 'lora-conformance\[sglang\]'"):
        get_backend_from_name(name)


def _case(op, dtype, **kw):
    base = dict(
        seg_lens=(5, 3, 7),
        weight_indices=(1, 0, 1),
        lora_ranks=(16, 16),
        scalings=(0.5, 2.0),
        R=16,
        K=64,
        N=48,
        n_kv=16 if op == "qkv" else 0,
        stack=stack_count(op),
        has_base=True,
        poison="nan",
        seed=4,
    )
    base.update(kw)
    return Case(op=op, dtype=dtype, **base)


@needs_sglang
@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
@pytest.mark.parametrize("name", ["sglang-triton", "sglang-csgmv"])
def test_adapter_maps_a_plain_batch(name, op):
    backend = get_backend_from_name(name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type not in backend.capabilities.devices:
        pytest.skip(f"{name} does not run on {device.type}")
    result = check_diff(backend, _case(op, "float16"), device)
    assert result.ok, result.failures
