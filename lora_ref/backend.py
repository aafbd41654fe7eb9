"""The interface every multi-LoRA backend implements (docs/contract.md, section 3).

Letters: ``T`` tokens, ``K`` input dim, ``L`` adapter slots, ``R`` pool rank, ``r`` one
adapter's rank, ``c`` stack count (1 plain, 2 gate_up, 3 qkv), ``N`` output dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lora_ref.batch_info import BatchSummary, LoRABatchInfo
from lora_ref.errors import fail
from lora_ref.validation import FLOAT_DTYPES, GateUpB, QkvB


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports.  The conformance suite skips (never passes) what is not declared.

    Attributes:
        dtypes: input dtypes accepted.
        devices: device types accepted (``"cpu"``, ``"cuda"``).
        permutation: honours ``LoRABatchInfo.permutation``.
        split_layouts: accepts the split expand-weight tuples of the contract.
        cuda_graph: its ``run_*`` methods can be captured and replayed after an in-place refill.
        float32_matmul: ``"tf32"`` if float32 inputs may be multiplied at TF32 precision on a GPU,
            ``"ieee"`` if float32 products are exact.
        subnormals: ``"preserve"`` if results and intermediates keep subnormal values (IEEE
            gradual underflow), ``"flush"`` if any of them may be flushed to zero (the
            flush-to-zero modes of GPU arithmetic).
        max_rank: the largest pool rank ``R`` supported, or None for any.
    """

    dtypes: frozenset[torch.dtype] = field(default_factory=lambda: frozenset(FLOAT_DTYPES))
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    permutation: bool = True
    split_layouts: bool = False
    cuda_graph: bool = False
    float32_matmul: str = "tf32"
    subnormals: str = "preserve"
    max_rank: int | None = None

    def __post_init__(self) -> None:
        if self.float32_matmul not in ("tf32", "ieee"):
            fail("Capabilities.float32_matmul", "'tf32' or 'ieee'", repr(self.float32_matmul))
        if self.subnormals not in ("preserve", "flush"):
            fail("Capabilities.subnormals", "'preserve' or 'flush'", repr(self.subnormals))


class BaseLoRABackend:
    """Base class of multi-LoRA segmented-GEMM backends.

    Subclasses implement the four ``run_*`` operations.  ``set_batch_info`` validates the batch
    once (a host sync, outside any CUDA graph) and keeps a :class:`BatchSummary` so the
    operations can check their arguments against it without touching the device.
    """

    name: str = "base"
    capabilities: Capabilities = Capabilities()

    def __init__(self, name: str | None = None, batch_info: LoRABatchInfo | None = None) -> None:
        if name is not None:
            self.name = name
        self.batch_info: LoRABatchInfo | None = None
        self._summary: BatchSummary | None = None
        if batch_info is not None:
            self.set_batch_info(batch_info)

    @property
    def version(self) -> str:
        """The version string printed in conformance reports."""
        return "unknown"

    def set_batch_info(self, batch_info: LoRABatchInfo) -> None:
        """Use ``batch_info`` for every later call; validates it (ValueError, TypeError)."""
        if not isinstance(batch_info, LoRABatchInfo):
            fail("batch_info", "a LoRABatchInfo", type(batch_info).__name__, error=TypeError)
        summary = batch_info.validate()
        self.batch_info = batch_info
        self._summary = summary

    def _batch(self) -> tuple[LoRABatchInfo, BatchSummary]:
        if self.batch_info is None or self._summary is None:
            fail("batch_info", "set_batch_info() called before the first operation", "none set")
        return self.batch_info, self._summary

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, stack_num: int = 1
    ) -> torch.Tensor:
        """Shrink: ``out[t, :c*r] = x[t] @ weights[w, :c*r, :]^T``.

        Args:
            x: ``(T, K)``.
            weights: ``(L, c*R, K)``; slice ``j`` of adapter ``w`` in rows ``[j*r, (j+1)*r)``.
            stack_num: ``c``.

        Returns:
            ``(T, c*R)`` in ``x.dtype``; columns ``>= c*r`` of a row are unspecified.
        """
        raise NotImplementedError

    def run_lora_b_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, base_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Expand: ``out[t] = base[t] + s * x[t, :r] @ weights[w, :, :r]^T``.

        Args:
            x: ``(T, R')`` with ``R' >= r`` for every row's adapter.
            weights: ``(L, N, R)``.
            base_output: ``(T, N)`` or None (zeros); may be updated in place.

        Returns:
            ``(T, N)`` in ``x.dtype``; rows with ``r == 0`` equal ``base`` exactly.
        """
        raise NotImplementedError

    def run_qkv_lora(
        self,
        x: torch.Tensor,
        qkv_lora_a: torch.Tensor,
        qkv_lora_b: QkvB,
        output_offset: torch.Tensor,
        max_qkv_out_dim: int,
        base_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused qkv LoRA: for ``j`` in 0..2 and columns ``n`` in ``[o_j, o_{j+1})``,
        ``out[t, n] = base[t, n] + s * (x[t] @ A[w, j*r:(j+1)*r]^T) @ B[w, n, :r]^T``.

        Args:
            x: ``(T, K)``.
            qkv_lora_a: ``(L, 3R, K)``.
            qkv_lora_b: ``(L, N, R)`` with ``N = Nq + 2*Nkv``, or
                ``(q_b (1, L, Nq, R), kv_b (2, L, Nkv, R))``.
            output_offset: int32 ``(4,)`` ``[0, Nq, Nq+Nkv, Nq+2*Nkv]``.
            max_qkv_out_dim: ``max(Nq, Nkv)``.
            base_output: ``(T, N)`` or None.

        Returns:
            ``(T, N)`` in ``x.dtype``.
        """
        raise NotImplementedError

    def run_gate_up_lora(
        self,
        x: torch.Tensor,
        gate_up_lora_a: torch.Tensor,
        gate_up_lora_b: GateUpB,
        base_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused gate_up LoRA: the qkv formula with two equal halves ``[0, N)`` and ``[N, 2N)``.

        Args:
            x: ``(T, K)``.
            gate_up_lora_a: ``(L, 2R, K)``.
            gate_up_lora_b: ``(L, 2N, R)``, or a pair of ``(L, N, R)`` halves.
            base_output: ``(T, 2N)`` or None.

        Returns:
            ``(T, 2N)`` in ``x.dtype``.
        """
        raise NotImplementedError
