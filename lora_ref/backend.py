"""The interface every multi-LoRA backend implements (docs/contract.md, section 3).

Letters: ``T`` tokens, ``K`` input dim, ``L`` adapter slots, ``R`` pool rank, ``r`` one
adapter's rank, ``c`` stack count (1 plain, 2 gate_up, 3 qkv), ``N`` output dim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from lora_ref.batch_info import BatchSummary, LoRABatchInfo
from lora_ref.errors import fail
from lora_ref.token_map import Batch, TokenMapBatchInfo
from lora_ref.validation import FLOAT_DTYPES, GateUpB, QkvB


@dataclass(frozen=True)
class Domain:
    """The shapes a backend supports, as its author or its adapter states them.  The
    conformance suite draws only inside them, reports them with its verdict ("PASS within K >=
    16, rank % 8 == 0"), and counts nothing outside them as a pass.

    Attributes:
        K_min, K_multiple: the shrink's input width ``K`` (shrink, qkv, gate_up).
        N_min, N_multiple: the width of each output slice (expand ``N``, qkv ``Nq`` and
            ``Nkv``, gate_up's half).
        rank_multiple: every non-zero slot rank and the pool rank ``R``.
        rank_max: the largest pool rank ``R`` (None: any).
        slots_max: the most adapter slots ``L`` (None: any).
        segments_max: the most segments ``bs`` (None: any).
        dense_only: every tensor argument must be dense (``Tensor.is_contiguous()``): no
            column slices, row strides, transposes or views into a larger weight pool.
        wide_expand_input: the expand takes an ``x`` wider than ``R`` (the contract's
            default); False: exactly ``R`` columns.
    """

    K_min: int = 0
    K_multiple: int = 1
    N_min: int = 0
    N_multiple: int = 1
    rank_multiple: int = 1
    rank_max: int | None = None
    slots_max: int | None = None
    segments_max: int | None = None
    dense_only: bool = False
    wide_expand_input: bool = True

    def __post_init__(self) -> None:
        for name in ("K_multiple", "N_multiple", "rank_multiple"):
            if getattr(self, name) < 1:
                fail(f"Domain.{name}", ">= 1", str(getattr(self, name)))
        for name in ("K_min", "N_min"):
            if getattr(self, name) < 0:
                fail(f"Domain.{name}", ">= 0", str(getattr(self, name)))
        for name in ("rank_max", "slots_max", "segments_max"):
            value = getattr(self, name)
            if value is not None and value < 1:
                fail(f"Domain.{name}", "None or >= 1", str(value))

    @property
    def restricted(self) -> bool:
        """Whether the domain is smaller than the contract's whole space."""
        return self != Domain()

    def describe(self) -> str:
        """The restrictions in words (``K >= 16, rank % 8 == 0``); "" for the whole space."""
        parts = []
        for dim, lo, step in (("K", self.K_min, self.K_multiple), ("N", self.N_min,
                                                                   self.N_multiple)):  # fmt: skip
            if lo:
                parts.append(f"{dim} >= {lo}")
            if step > 1:
                parts.append(f"{dim} % {step} == 0")
        if self.rank_multiple > 1:
            parts.append(f"rank % {self.rank_multiple} == 0")
        for what, value in (("R", self.rank_max), ("slots", self.slots_max),
                            ("segments", self.segments_max)):  # fmt: skip
            if value is not None:
                parts.append(f"{what} <= {value}")
        if self.dense_only:
            parts.append("dense tensors only")
        if not self.wide_expand_input:
            parts.append("expand x exactly R wide")
        return ", ".join(parts)


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
        token_map: ``set_batch_info`` takes a :class:`~lora_ref.token_map.TokenMapBatchInfo`
            (a slot per token, -1 for no LoRA) as well as a segment batch.
        batch_invariant: a row's result has the same bits whatever else is in the batch (its
            position, the batch size, the other rows' adapters).
        n_slices: ``run_qkv_lora`` takes ``n_slices``: any number of uneven slices, some of
            them empty (qkv is the case ``n = 3``).
        embedding: implements ``run_lora_a_embedding`` (embedding LoRA: a gather of ``A``
            columns by token id, with an extra-vocabulary table).
        max_rank: the largest pool rank ``R`` supported, or None for any (the same as
            ``domain.rank_max``; the smaller of the two holds).
        domain: the shapes supported (:class:`Domain`; default: the contract's whole space).
    """

    dtypes: frozenset[torch.dtype] = field(default_factory=lambda: frozenset(FLOAT_DTYPES))
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    permutation: bool = True
    split_layouts: bool = False
    cuda_graph: bool = False
    float32_matmul: str = "tf32"
    subnormals: str = "preserve"
    token_map: bool = False
    batch_invariant: bool = False
    n_slices: bool = False
    embedding: bool = False
    max_rank: int | None = None
    domain: Domain = field(default_factory=Domain)

    def __post_init__(self) -> None:
        if self.float32_matmul not in ("tf32", "ieee"):
            fail("Capabilities.float32_matmul", "'tf32' or 'ieee'", repr(self.float32_matmul))
        if self.subnormals not in ("preserve", "flush"):
            fail("Capabilities.subnormals", "'preserve' or 'flush'", repr(self.subnormals))
        if not isinstance(self.domain, Domain):
            fail("Capabilities.domain", "a lora_ref.Domain", type(self.domain).__name__)

    @property
    def shapes(self) -> Domain:
        """The domain, with ``max_rank`` folded into ``rank_max``."""
        caps = [v for v in (self.max_rank, self.domain.rank_max) if v is not None]
        if not caps or min(caps) == self.domain.rank_max:
            return self.domain
        return dataclasses.replace(self.domain, rank_max=min(caps))


class BaseLoRABackend:
    """Base class of multi-LoRA segmented-GEMM backends.

    Subclasses implement the four ``run_*`` operations.  ``set_batch_info`` validates the batch
    once (a host sync, outside any CUDA graph) and keeps a :class:`BatchSummary` so the
    operations can check their arguments against it without touching the device.
    """

    name: str = "base"
    capabilities: Capabilities = Capabilities()

    def __init__(self, name: str | None = None, batch_info: Batch | None = None) -> None:
        if name is not None:
            self.name = name
        self.batch_info: Batch | None = None
        self._summary: BatchSummary | None = None
        if batch_info is not None:
            self.set_batch_info(batch_info)

    @property
    def version(self) -> str:
        """The version string printed in conformance reports."""
        return "unknown"

    def set_batch_info(self, batch_info: Batch) -> None:
        """Use ``batch_info`` for every later call; validates it (ValueError, TypeError).

        A :class:`TokenMapBatchInfo` is taken where ``capabilities.token_map`` is declared."""
        token_map = isinstance(batch_info, TokenMapBatchInfo)
        if not isinstance(batch_info, LoRABatchInfo) and not token_map:
            fail("batch_info", "a LoRABatchInfo or a TokenMapBatchInfo",
                 type(batch_info).__name__, error=TypeError)  # fmt: skip
        if token_map and not self.capabilities.token_map:
            fail("batch_info", f"a LoRABatchInfo (backend {self.name!r} does not declare "
                 "token_map)", "a TokenMapBatchInfo", error=TypeError)  # fmt: skip
        summary = batch_info.validate()
        self.batch_info = batch_info
        self._summary = summary

    def _batch(self) -> tuple[Batch, BatchSummary]:
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
        n_slices: int = 3,
    ) -> torch.Tensor:
        """Fused n-slice LoRA (qkv: ``n = 3``): for ``j`` in ``0..n-1`` and columns ``n'`` in
        ``[o_j, o_{j+1})``,
        ``out[t, n'] = base[t, n'] + s * (x[t] @ A[w, j*r:(j+1)*r]^T) @ B[w, n', :r]^T``.

        Args:
            x: ``(T, K)``.
            qkv_lora_a: ``(L, n*R, K)``.
            qkv_lora_b: ``(L, N, R)`` (for qkv ``N = Nq + 2*Nkv``), or, for ``n = 3``,
                ``(q_b (1, L, Nq, R), kv_b (2, L, Nkv, R))``.
            output_offset: int32 ``(n+1,)``: 0, the slice ends in order, ``N`` (qkv:
                ``[0, Nq, Nq+Nkv, Nq+2*Nkv]``); slices may be uneven and empty.
            max_qkv_out_dim: at least the widest slice (qkv: ``max(Nq, Nkv)``), at most ``N``.
            base_output: ``(T, N)`` or None.
            n_slices: ``n >= 1``; only a backend that declares ``n_slices`` is called with
                another value than 3.

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

    def run_lora_a_embedding(
        self,
        input_ids: torch.Tensor,
        weights: torch.Tensor,
        vocab_size: int,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedding LoRA's ``A`` side: a gather by token id.  For row ``t`` of slot ``w``,
        rank ``r`` and id ``v``: ``out[t, :r] = weights[w, :r, v]`` when ``v < vocab_size``,
        else ``extra_embeddings[w, v - vocab_size, :r]``; the row's other columns are not
        specified.  Only a backend that declares ``embedding`` is called.

        Args:
            input_ids: int32 or int64 ``(T,)``, each in ``[0, vocab_size + E)``.
            weights: ``(L, R, V)`` with ``V = vocab_size``.
            vocab_size: the base vocabulary ``V``.
            extra_embeddings: ``(L, E, R)`` (tokens the adapters add), or None (``E = 0``).

        Returns:
            ``(T, R)`` in ``weights.dtype``: the values themselves, bit for bit.
        """
        raise NotImplementedError
