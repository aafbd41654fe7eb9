"""``TritonLoRABackend``: the contract's four operations as Triton kernels (the fast path).

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``c`` stack count,
``N`` output dim.

The ``run_*`` methods do no host-to-device copy and size every grid from host shapes only
(``T``, ``N``, ``R``, buffer lengths), never from ``bs`` or ``max_len``: a CUDA graph captured
on one batch is right for any batch refilled into the same buffers.  The adapter-grouped row
layout (``kernels/layout.py``) is built on the device at each call in graph mode, once per
``set_batch_info`` otherwise.

Host syncs: ``set_batch_info`` validates the batch on the host.  ``run_qkv_lora`` reads the four
``output_offset`` values on every eager call to validate them (a 16-byte copy); while a CUDA
graph is being captured it cannot, and the kernel clamps the device values instead.

Bad metadata inside a CUDA graph (buffers written without ``refill_batch_info``'s host checks):
the kernels clamp, they never read or write outside their tensors.  Segments whose slot lies
outside ``[0, L)`` and rows whose permutation entry lies outside ``[0, T)`` are skipped,
``seg_indptr`` is clamped to ``[0, T]``, ranks to ``[0, R]`` and qkv offsets to ``[0, N]``.
The rows concerned get unspecified (but finite-memory) results; nothing else changes.
"""

from __future__ import annotations

import dataclasses

import torch
import triton

from lora_ref.backend import BaseLoRABackend, Capabilities
from lora_ref.batch_info import LoRABatchInfo
from lora_ref.errors import fail
from lora_ref.runtime import capturing, interpreting, use_interpreter_without_gpu
from lora_ref.token_map import Batch, TokenMapBatchInfo
from lora_ref.validation import (
    FLOAT_DTYPES,
    GateUpB,
    QkvB,
    ShrinkDims,
    check_embedding,
    check_expand,
    check_fused,
    check_qkv,
    check_shrink,
)
from lora_triton.config import (
    expand_config,
    invariant_expand_config,
    invariant_row_align,
    invariant_shrink_config,
    row_align,
    shrink_config,
)
from lora_triton.kernels.expand import ExpandPlan, column_align, expand
from lora_triton.kernels.layout import RowLayout, group_rows, group_tokens
from lora_triton.kernels.shrink import shrink

use_interpreter_without_gpu()


def _qkv_column_align(N: int, max_dim: int) -> int:
    """The power of two (1 to 16) that every qkv slice bound is a multiple of, known from host
    ints alone (``column_align``).

    The contract fixes ``output_offset = [0, Nq, Nq+Nkv, N]`` with ``N = Nq + 2*Nkv`` and
    ``max_dim = max(Nq, Nkv)``: either ``Nq = max_dim`` or ``Nkv = max_dim``.  The result divides
    the bounds of both readings (no device read, no sync, no cache; the kernel rounds device
    offsets down to it, so even hostile ones stay aligned).
    """
    bounds = []
    if (N - max_dim) % 2 == 0 and 0 <= (N - max_dim) // 2 <= max_dim:
        bounds += [max_dim, max_dim + (N - max_dim) // 2]
    if 0 <= N - 2 * max_dim <= max_dim:
        bounds += [N - 2 * max_dim, N - max_dim]
    return column_align(N, *bounds) if bounds else 1


class TritonLoRABackend(BaseLoRABackend):
    """Triton kernels for shrink, expand, fused qkv and fused gate_up."""

    name = "triton"
    capabilities = Capabilities(
        dtypes=frozenset(FLOAT_DTYPES),
        devices=frozenset({"cpu"}) if interpreting() else frozenset({"cuda"}),
        permutation=True,
        split_layouts=False,
        cuda_graph=not interpreting(),
        float32_matmul="tf32",
        # on a GPU, float32 inputs go through TF32 tensor cores, which flush subnormal
        # operands (H100, 2026-12-06: ci on CUDA, float32 subnormal results came out as 0)
        subnormals="preserve" if interpreting() else "flush",
        token_map=True,
        n_slices=True,
        embedding=True,
    )

    def __init__(self, name: str | None = None, batch_info: Batch | None = None) -> None:
        self._layout: RowLayout | None = None
        super().__init__(name, batch_info)

    @property
    def version(self) -> str:
        from lora_ref.reference import ReferenceLoRABackend

        mode = "interpreter" if interpreting() else "compiled"
        harness = ReferenceLoRABackend().version
        return f"lora-conformance {harness} (Triton {triton.__version__}, {mode})"

    def set_batch_info(self, batch_info: Batch) -> None:
        super().set_batch_info(batch_info)
        self._layout = None

    def _positions(self, T: int) -> RowLayout:
        """The batch's adapter-grouped positions (``layout.py``).

        Built at each call in graph mode (the batch may have been refilled), so a fused op
        builds it once and hands it to both of its stages."""
        info, _ = self._batch()
        if info.use_cuda_graph or self._layout is None:
            if isinstance(info, TokenMapBatchInfo):
                layout = group_tokens(info.token_slots, info.lora_ranks.numel(), self._align(T))
            else:
                layout = self._segment_layout(info, T, self._align(T))
            if info.use_cuda_graph:
                return layout
            self._layout = layout
        return self._layout

    def _align(self, T: int) -> int:
        return invariant_row_align() if self.capabilities.batch_invariant else row_align(T)

    @staticmethod
    def _segment_layout(info: LoRABatchInfo, T: int, align: int) -> RowLayout:
        return group_rows(
            info.seg_indptr, info.weight_indices, info.permutation, T, info.lora_ranks.numel(),
            align,
        )  # fmt: skip

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, stack_num: int = 1
    ) -> torch.Tensor:
        info, summary = self._batch()
        T, K, R, c = check_shrink(summary, info.device, x, weights, stack_num)
        if T == 0 or R == 0:  # an output without elements: no launch sized by T or R
            return torch.zeros(T, c * R, dtype=x.dtype, device=x.device)
        return self._shrink(x, weights, c, R, K, self._positions(x.shape[0]))

    def run_lora_b_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, base_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        info, summary = self._batch()
        T, R, N = check_expand(summary, info.device, x, weights, base_output)
        out = self._output(base_output, T, N, x)
        if T == 0 or N == 0 or R == 0:  # nothing to add: no launch sized by T or N
            return out
        plan = self._plan(T, R, 1, N, None, base_output is not None, column_align(N))
        expand(x, weights, out, plan)
        return out

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
        info, summary = self._batch()
        lora_b = self._stacked("qkv_lora_b", qkv_lora_b)
        checked = check_qkv(summary, info.device, x, qkv_lora_a, lora_b, output_offset,
                            max_qkv_out_dim, base_output, n_slices,
                            read_offsets=not capturing())  # fmt: skip
        N = checked.N
        if checked.offsets is not None and n_slices != 3:
            col_align = column_align(N, *checked.offsets)
        elif n_slices == 3:
            col_align = _qkv_column_align(N, max_qkv_out_dim)
        else:  # uneven slices under capture: their bounds are unknown on the host
            col_align = 1
        return self._fused(
            x, qkv_lora_a, lora_b, base_output, checked.dims, N, max_qkv_out_dim, output_offset,
            col_align,
        )  # fmt: skip

    def run_gate_up_lora(
        self,
        x: torch.Tensor,
        gate_up_lora_a: torch.Tensor,
        gate_up_lora_b: GateUpB,
        base_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        info, summary = self._batch()
        lora_b = self._stacked("gate_up_lora_b", gate_up_lora_b)
        names = ("gate_up_lora_a", "gate_up_lora_b")
        dims, N = check_fused(
            summary, info.device, x, gate_up_lora_a, lora_b, base_output, 2, names, halves=True
        )
        half = N // 2
        return self._fused(
            x, gate_up_lora_a, lora_b, base_output, dims, N, half, None, column_align(half)
        )

    def run_lora_a_embedding(
        self,
        input_ids: torch.Tensor,
        weights: torch.Tensor,
        vocab_size: int,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The gather in fixed-shape torch ops (it moves ``T*R`` elements: no kernel of its
        own), from the row layout the other ops use: no host sync, CUDA-graph safe.  Ids and
        slots are clamped into their tables, so hostile ones read inside them."""
        info, summary = self._batch()
        T, R, V, E = check_embedding(summary, info.device, input_ids, weights, vocab_size,
                                     extra_embeddings, read_ids=not capturing())  # fmt: skip
        if T == 0 or R == 0:
            return torch.zeros(T, R, dtype=weights.dtype, device=weights.device)
        layout = self._positions(T)
        valid = layout.pos_slot >= 0
        row_slot = torch.full((T + 1,), -1, dtype=torch.int64, device=weights.device)
        where = torch.where(valid, layout.pos_row.long().clamp(0, T - 1), T)
        row_slot.scatter_(0, where, layout.pos_slot.long())
        row_slot = row_slot[:T]
        slot = row_slot.clamp(0, weights.shape[0] - 1)
        rank = torch.where(row_slot >= 0, info.lora_ranks.long()[slot], 0)
        ids = input_ids.long()
        out = weights[slot, :, ids.clamp(0, max(V - 1, 0))] if V else weights.new_zeros(T, R)
        if E:
            extra = extra_embeddings[slot, (ids - V).clamp(0, E - 1)]  # type: ignore[index]
            out = torch.where((ids >= V)[:, None], extra, out)
        cols = torch.arange(R, device=weights.device)
        return torch.where(cols[None, :] < rank[:, None], out, torch.zeros((), dtype=out.dtype,
                           device=out.device))  # fmt: skip

    def _fused(
        self,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        base_output: torch.Tensor | None,
        dims: ShrinkDims,
        N: int,
        slice_width: int,
        offsets: torch.Tensor | None,
        col_align: int,
    ) -> torch.Tensor:
        """Shrink then expand ``dims.c`` slices, on one row layout shared by both stages."""
        if dims.T == 0 or N == 0 or dims.R == 0:  # nothing to add: no launch sized by T or N
            return self._output(base_output, dims.T, N, x)
        layout = self._positions(dims.T)
        inter = self._shrink(x, lora_a, dims.c, dims.R, dims.K, layout)
        out = self._output(base_output, dims.T, N, x)
        plan = self._plan(
            dims.T, dims.R, dims.c, slice_width, offsets, base_output is not None, col_align, layout
        )
        expand(inter, lora_b, out, plan)
        return out

    def _shrink(
        self, x: torch.Tensor, lora_a: torch.Tensor, c: int, R: int, K: int, layout: RowLayout
    ) -> torch.Tensor:
        info, summary = self._batch()
        if self.capabilities.batch_invariant:
            config = invariant_shrink_config(K, c * R, x.dtype)
        else:
            config = shrink_config(
                x.shape[0], K, c * R, x.dtype, x.device, summary.num_adapters,
                full_rank=summary.min_adapter_rank == R,
            )  # fmt: skip
        return shrink(
            x, lora_a, stack_num=c, layout=layout, lora_ranks=info.lora_ranks, config=config
        )

    def _plan(
        self,
        T: int,
        R: int,
        num_slices: int,
        slice_width: int,
        offsets: torch.Tensor | None,
        has_base: bool,
        col_align: int,
        layout: RowLayout | None = None,
    ) -> ExpandPlan:
        info, _ = self._batch()
        layout = layout or self._positions(T)
        return ExpandPlan(
            layout=layout,
            lora_ranks=info.lora_ranks,
            scalings=info.scalings,
            num_slices=num_slices,
            slice_width=slice_width,
            offsets=offsets,
            has_base=has_base,
            col_align=col_align,
            config=invariant_expand_config(R, slice_width)
            if self.capabilities.batch_invariant
            else expand_config(T, R, slice_width, layout.pos_slot.numel()),
        )

    @staticmethod
    def _output(base_output: torch.Tensor | None, T: int, N: int, x: torch.Tensor) -> torch.Tensor:
        if base_output is not None:
            return base_output
        return torch.zeros(T, N, dtype=x.dtype, device=x.device)

    @staticmethod
    def _stacked(arg: str, lora_b: object) -> torch.Tensor:
        if isinstance(lora_b, tuple):
            fail(
                arg,
                "the stacked (L, N, R) tensor (the triton backend takes no split layout)",
                "a tuple",
            )
        return lora_b  # type: ignore[return-value]


class TritonBatchInvariantBackend(TritonLoRABackend):
    """The Triton backend in its batch-invariant mode: launch rules that depend on the
    problem's widths and ranks only, never on ``T`` or the batch's adapters, and no K split,
    so a row's result has the same bits whatever else is in the batch (the ``batch_invariance``
    check; what the mode costs is in BENCHMARKS.md).

    Compiled only: under the interpreter ``tl.dot`` is numpy's BLAS, whose result for a row
    depends on the row's place in the tile (OpenBLAS 0.3.31, 16-row float32 products: 1464 of
    3200 rows moved to row 0 of a tile of zeros changed bits), so there the mode is not
    declared and the check is skipped."""

    name = "triton-invariant"
    capabilities = dataclasses.replace(
        TritonLoRABackend.capabilities, batch_invariant=not interpreting()
    )
