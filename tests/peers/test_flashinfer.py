"""The FlashInfer adapter: loud when FlashInfer is missing; its mapping right on every property.

FlashInfer's kernel runs on CUDA only.  So that the mapping (ranks, scaling, permutation, padded
dims, the split layouts) is checked on every CI run, the adapter is also driven here by a CPU
model of ``SegmentGEMMWrapper.run`` as FlashInfer documents it: ``y[seg] = x[seg] @ W[w]^T``,
float32 accumulation, output in the input dtype.  The model also enforces the kernel's
preconditions the adapter must meet (int64 indices, contiguous rows, 16-byte aligned dims).  A
second model that ignores ``weight_indices`` must be caught, so these tests can fail.
On a GPU with FlashInfer installed the real kernel runs instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import types

import pytest
import torch

from conformance.checks.diff import check_diff
from conformance.names import OPS
from lora_ref import BackendNotFoundError, get_backend_from_name
from tests.peers import adapter_on_cpu, first_failure
from tests.peers.test_sglang import _case

HAVE_FLASHINFER = importlib.util.find_spec("flashinfer") is not None
MODULE = "conformance.peers.flashinfer_backend"


class SegmentGEMMModel:
    """``flashinfer.SegmentGEMMWrapper`` as documented, on any device, with its preconditions."""

    one_weight = False  # the broken model: every segment multiplies slot 0

    def __init__(self, float_workspace_buffer: torch.Tensor, backend: str = "auto") -> None:
        self.workspace = float_workspace_buffer

    def run(self, x, weights, batch_size, weight_column_major, *, seg_indptr, weight_indices):
        assert weight_column_major and weights.dim() == 3 and x.dim() == 2
        assert x.dtype == weights.dtype and x.dtype in (torch.float16, torch.bfloat16)
        assert seg_indptr.dtype == weight_indices.dtype == torch.int64
        assert x.is_contiguous() and weights.is_contiguous()
        assert x.shape[1] == weights.shape[2]
        assert x.shape[1] % 8 == 0 and weights.shape[1] % 8 == 0, "16-byte rows"
        assert seg_indptr.shape == (batch_size + 1,) and weight_indices.shape == (batch_size,)
        y = torch.zeros(x.shape[0], weights.shape[1], dtype=x.dtype, device=x.device)
        bounds = seg_indptr.tolist()
        for i, w in enumerate(weight_indices.tolist()):
            rows = slice(bounds[i], bounds[i + 1])
            W = weights[0 if self.one_weight else w].float()
            y[rows] = (x[rows].float() @ W.T).to(x.dtype)
        return y


class OneWeightModel(SegmentGEMMModel):
    one_weight = True


def _adapter_on_cpu(monkeypatch, model: type) -> type:
    """The adapter class, imported against ``model`` and declared for the CPU."""
    fake = types.ModuleType("flashinfer")
    fake.SegmentGEMMWrapper = model
    return adapter_on_cpu(monkeypatch, MODULE, "FlashInferBackend", {"flashinfer": fake})


@pytest.mark.skipif(HAVE_FLASHINFER, reason="FlashInfer is installed")
def test_missing_flashinfer_names_the_extra():
    with pytest.raises(BackendNotFoundError, match=r"pip install 'lora-conformance\[flashinfer\]'"):
        get_backend_from_name("flashinfer")


def test_adapter_passes_the_suite_on_the_documented_kernel(monkeypatch):
    found = first_failure(_adapter_on_cpu(monkeypatch, SegmentGEMMModel))
    assert found is None, found and found.failure["messages"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_adapter_fast_paths_on_the_documented_kernel(monkeypatch, op, dtype):
    # one rank of 16 on every row, no permutation: the slice inputs are plain column blocks
    backend = _adapter_on_cpu(monkeypatch, SegmentGEMMModel)
    for permute in (False, True):
        result = check_diff(backend, _case(op, dtype, permute=permute), torch.device("cpu"))
        assert result.ok, result.failures


def test_suite_catches_a_kernel_that_ignores_weight_indices(monkeypatch):
    backend = _adapter_on_cpu(monkeypatch, OneWeightModel)
    found = first_failure(backend, ("expand",), ("float16",), ("diff",))
    assert found is not None and "wrong result" in "; ".join(found.failure["messages"])


@pytest.mark.skipif(
    not (HAVE_FLASHINFER and torch.cuda.is_available()), reason="needs FlashInfer and CUDA"
)
@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
def test_flashinfer_runs_a_plain_batch(op):
    result = check_diff(get_backend_from_name("flashinfer"), _case(op, "float16"), "cuda")
    assert result.ok, result.failures
