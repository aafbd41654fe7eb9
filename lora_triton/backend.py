"""``TritonLoRABackend``: SPEC.md's four operations as Triton kernels (the fast path).

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``c`` stack count,
``N`` output dim.

The ``run_*`` methods do no host sync and no host-to-device copy, and size every grid from
host shapes only (``T``, ``N``, ``R``, buffer lengths), never from ``bs`` or ``max_len``: a CUDA
graph captured on one batch is right for any batch refilled into the same buffers.  The
adapter-grouped row layout (``kernels/layout.py``) is built on the device at each call in graph
mode, once per ``set_batch_info`` otherwise.
"""

from __future__ import annotations

import torch
import triton

from lora_ref.backend import BaseLoRABackend, Capabilities
from lora_ref.batch_info import LoRABatchInfo
from lora_ref.errors import fail
from lora_ref.validation import (
    FLOAT_DTYPES,
    GateUpB,
    QkvB,
    ShrinkDims,
    check_expand,
    check_fused,
    check_output_offset,
    check_output_offset_values,
    check_shrink,
)
from lora_triton.config import INTERPRET, expand_config, row_align, shrink_config
from lora_triton.kernels.expand import expand
from lora_triton.kernels.layout import group_rows
from lora_triton.kernels.shrink import shrink


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class TritonLoRABackend(BaseLoRABackend):
    """Triton kernels for shrink, expand, fused qkv and fused gate_up."""

    name = "triton"
    capabilities = Capabilities(
        dtypes=frozenset(FLOAT_DTYPES),
        devices=frozenset({"cpu"}) if INTERPRET else frozenset({"cuda"}),
        permutation=True,
        split_layouts=False,
        cuda_graph=not INTERPRET,
        float32_matmul="tf32",
    )

    def __init__(self, name: str | None = None, batch_info: LoRABatchInfo | None = None) -> None:
        self._layout: tuple[torch.Tensor, torch.Tensor] | None = None
        self._checked_offsets: dict[tuple[int, int, int, int], list[int]] = {}
        super().__init__(name, batch_info)

    @property
    def version(self) -> str:
        mode = "interpreter" if INTERPRET else "compiled"
        return f"triton {triton.__version__} ({mode})"

    def set_batch_info(self, batch_info: LoRABatchInfo) -> None:
        super().set_batch_info(batch_info)
        self._layout = None

    def _positions(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter slot ``(P,)`` and physical row ``(P,)`` of each position (``layout.py``).

        Built at each call in graph mode (the batch may have been refilled), so a fused op
        builds it once and hands it to both of its stages."""
        info, _ = self._batch()
        if info.use_cuda_graph or self._layout is None:
            layout = group_rows(
                info.seg_indptr,
                info.weight_indices,
                info.permutation,
                T,
                info.lora_ranks.numel(),
                row_align(T),
            )
            if info.use_cuda_graph:
                return layout
            self._layout = layout
        return self._layout

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, stack_num: int = 1
    ) -> torch.Tensor:
        info, summary = self._batch()
        _, K, R, c = check_shrink(summary, info.device, x, weights, stack_num)
        return self._shrink_for(x, weights, c, R, K)

    def run_lora_b_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, base_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        info, summary = self._batch()
        T, R, N = check_expand(summary, info.device, x, weights, base_output)
        return self._expand(x, weights, base_output, T, N, R, 1, N, None, N % 16 == 0)

    def run_qkv_lora(
        self,
        x: torch.Tensor,
        qkv_lora_a: torch.Tensor,
        qkv_lora_b: QkvB,
        output_offset: torch.Tensor,
        max_qkv_out_dim: int,
        base_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        info, summary = self._batch()
        lora_b = self._stacked("qkv_lora_b", qkv_lora_b)
        check_output_offset(output_offset, max_qkv_out_dim, info.device)
        names = ("qkv_lora_a", "qkv_lora_b")
        dims, N = check_fused(summary, info.device, x, qkv_lora_a, lora_b, base_output, 3, names)
        offsets = self._check_offset_values(output_offset, max_qkv_out_dim, N)
        aligned = offsets is not None and all(o % 16 == 0 for o in offsets)
        return self._fused(
            x, qkv_lora_a, lora_b, base_output, dims, N, max_qkv_out_dim, output_offset, aligned
        )

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
            summary, info.device, x, gate_up_lora_a, lora_b, base_output, 2, names
        )
        half = N // 2
        return self._fused(
            x, gate_up_lora_a, lora_b, base_output, dims, N, half, None, half % 16 == 0
        )

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
        aligned: bool,
    ) -> torch.Tensor:
        """Shrink then expand ``dims.c`` slices, on one row layout shared by both stages."""
        positions = self._positions(dims.T)
        inter = self._shrink_for(x, lora_a, dims.c, dims.R, dims.K, positions)
        return self._expand(
            inter, lora_b, base_output, dims.T, N, dims.R, dims.c, slice_width, offsets, aligned,
            positions,
        )  # fmt: skip

    def _shrink_for(
        self,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        c: int,
        R: int,
        K: int,
        positions: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        info, summary = self._batch()
        slots, rows = positions or self._positions(x.shape[0])
        config = shrink_config(x.shape[0], K, c * R, x.dtype, x.device, summary.num_adapters)
        return shrink(x, lora_a, c, slots, rows, info.lora_ranks, config)

    def _expand(
        self,
        x: torch.Tensor,
        weights: torch.Tensor,
        base_output: torch.Tensor | None,
        T: int,
        N: int,
        R: int,
        num_slices: int,
        slice_width: int,
        offsets: torch.Tensor | None,
        aligned: bool,
        positions: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        info, _ = self._batch()
        slots, rows = positions or self._positions(T)
        out = (
            base_output
            if base_output is not None
            else torch.zeros(T, N, dtype=x.dtype, device=x.device)
        )
        config = expand_config(T, R)
        return expand(
            x,
            weights,
            out,
            base_output is not None,
            slots,
            rows,
            info.lora_ranks,
            info.scalings,
            num_slices,
            slice_width,
            offsets,
            config,
            aligned,
        )

    @staticmethod
    def _stacked(arg: str, lora_b: object) -> torch.Tensor:
        if isinstance(lora_b, tuple):
            fail(
                arg,
                "the stacked (L, N, R) tensor (the triton backend takes no split layout)",
                "a tuple",
            )
        return lora_b  # type: ignore[return-value]

    def _check_offset_values(
        self, output_offset: torch.Tensor, max_dim: int, N: int
    ) -> list[int] | None:
        """Read ``output_offset`` once per tensor version (a sync), never while graph-capturing.

        Returns the values when known on the host (None while capturing an unseen tensor).
        """
        key = (output_offset.data_ptr(), output_offset._version, max_dim, N)
        if key not in self._checked_offsets and not _capturing():
            self._checked_offsets[key] = check_output_offset_values(output_offset, max_dim, N)
        return self._checked_offsets.get(key)
