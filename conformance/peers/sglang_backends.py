"""SGLang 0.5.23's LoRA kernels as backends of this project's contract.

Registered as ``sglang-triton`` and ``sglang-csgmv`` (entry points).  Importing this module
imports SGLang; without it the import fails with :class:`PeerNotInstalledError`, which names the
pip extra, so ``get_backend_from_name`` reports it.

The adapters check every call as the contract says (:func:`conformance.peers.validated`), so
SGLang's kernels see only valid input and the verdict shows what they compute; the batch info
is validated by ``set_batch_info`` like every backend's.  The kernels take dense tensors only
(they assert ``is_contiguous()``): the domain says so, and the suite draws no strided,
transposed or pool-view argument for them.
"""

from __future__ import annotations

import torch

from conformance.peers import sglang, validated
from lora_ref import BaseLoRABackend, Capabilities, Domain, LoRABatchInfo
from lora_ref.runtime import use_interpreter_without_gpu

sglang.load("sgemm_lora_a")  # fail at import, with the pip extra named, when SGLang is missing

_INTERPRET = use_interpreter_without_gpu()
# SGLang's kernels do not work around the Triton interpreter's wrong bf16 dot (it multiplies raw
# bit patterns; README, "The Triton backend"):
# bfloat16 is declared on a GPU only.
_DTYPES = (
    frozenset({torch.float16, torch.float32})
    if _INTERPRET
    else frozenset({torch.float16, torch.bfloat16, torch.float32})
)


# sgemm_lora_a/b, qkv_lora_b, gate_up_lora_b and the chunked SGMV kernels of 0.5.23 assert
# x.is_contiguous() and weights.is_contiguous(), and sgemm_lora_b asserts x.shape[-1] == R
_DOMAIN = Domain(dense_only=True, wide_expand_input=False)
# compiled Triton flushes subnormals to zero, the interpreter keeps them (the evidence:
# benchmarks/results/2026-12-07-h100-peers/README.md)
_SUBNORMALS = "preserve" if _INTERPRET else "flush"


class _SGLangBackend(BaseLoRABackend):
    kernels_cls: type = sglang.SGLangTritonKernels

    def __init__(self, name: str | None = None, batch_info: LoRABatchInfo | None = None) -> None:
        self._kernels = None
        super().__init__(name, batch_info)

    @property
    def version(self) -> str:
        return sglang.version()

    def set_batch_info(self, batch_info: LoRABatchInfo) -> None:
        super().set_batch_info(batch_info)
        self._kernels = self.kernels_cls(batch_info)

    @validated
    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return self._kernels.shrink(x, weights, stack_num)

    @validated
    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return self._kernels.expand(x, weights, base_output)

    @validated
    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        return self._kernels.qkv(
            x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output
        )

    @validated
    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        return self._kernels.gate_up(x, gate_up_lora_a, gate_up_lora_b, base_output)


class SGLangTritonBackend(_SGLangBackend):
    """SGLang's ``triton`` LoRA backend kernels: one segment per request."""

    name = "sglang-triton"
    kernels_cls = sglang.SGLangTritonKernels
    capabilities = Capabilities(
        dtypes=_DTYPES,
        devices=frozenset({"cpu"}) if _INTERPRET else frozenset({"cuda"}),
        permutation=True,
        cuda_graph=not _INTERPRET,
        float32_matmul="tf32",
        subnormals=_SUBNORMALS,
        domain=_DOMAIN,
    )


class SGLangCsgmvBackend(_SGLangBackend):
    """SGLang's chunked-SGMV (``csgmv``) kernels: rows sorted by adapter, cut into chunks.

    The sorted layout is built on the host in ``set_batch_info``, as SGLang's
    ``prepare_lora_batch`` does, so this adapter does not support in-place graph refills.  It
    runs on CUDA only: SGLang's csgmv config loader needs a GPU device name.
    """

    name = "sglang-csgmv"
    kernels_cls = sglang.SGLangCsgmvKernels
    capabilities = Capabilities(
        dtypes=_DTYPES,
        devices=frozenset({"cuda"}),
        permutation=True,
        cuda_graph=False,
        float32_matmul="tf32",
        subnormals=_SUBNORMALS,
        domain=_DOMAIN,
    )
