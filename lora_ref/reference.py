"""The ground truth: the contract's four operations (docs/contract.md) as float64 loops.

Readability beats speed here; this file *is* the spec in code.  Every operation validates all of
its inputs first, computes in float64 on the inputs' device with no intermediate rounding, and
returns a new tensor in the input dtype (``base_output`` is read, never written).  Inside
``with backend.exact():`` it returns the float64 result itself (the conformance oracle's view).

Letters: ``T`` tokens, ``K`` input dim, ``L`` slots, ``R`` pool rank, ``r`` one adapter's rank,
``c`` stack count, ``N`` output dim.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch

from lora_ref.backend import BaseLoRABackend, Capabilities
from lora_ref.token_map import NO_LORA, TokenMapBatchInfo
from lora_ref.validation import (
    FLOAT_DTYPES,
    GateUpB,
    QkvB,
    check_embedding,
    check_expand,
    check_fused,
    check_qkv,
    check_shrink,
    stack_gate_up_b,
)


class ReferenceLoRABackend(BaseLoRABackend):
    """Naive float64 PyTorch loops; defines what every other backend must compute."""

    name = "reference"
    capabilities = Capabilities(
        dtypes=frozenset(FLOAT_DTYPES),
        permutation=True,
        split_layouts=True,
        cuda_graph=False,
        float32_matmul="ieee",
        token_map=True,
        n_slices=True,
        embedding=True,
    )

    _exact = False

    @contextlib.contextmanager
    def exact(self) -> Iterator[None]:
        """Within this block the operations return their float64 result, unrounded."""
        self._exact = True
        try:
            yield
        finally:
            self._exact = False

    def _finish(
        self, out: torch.Tensor, dtype: torch.dtype, base_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The float64 result rounded to ``dtype``, with rows of rank 0 copied from
        ``base_output`` bit for bit (through float64 a signalling NaN would come back quiet)."""
        if self._exact:
            return out
        out = out.to(dtype)
        if base_output is not None and out.numel():
            for rows, _, r, _ in self._segments():
                if r == 0:
                    out[rows] = base_output[rows]
        return out

    @property
    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("lora-conformance")
        except PackageNotFoundError:
            return "source tree"

    def _segments(self) -> list[tuple[torch.Tensor, int, int, float]]:
        """For each non-empty segment: physical rows, slot ``w``, rank ``r`` and scaling ``s``.
        A token map's rows are grouped by slot; its -1 rows form one group of rank 0."""
        info, _ = self._batch()
        if isinstance(info, TokenMapBatchInfo):
            return self._token_groups(info)
        indptr = info.seg_indptr.tolist()
        slots = info.weight_indices.tolist()
        ranks = info.lora_ranks.tolist()
        scalings = info.scalings.tolist()
        rows = torch.arange(indptr[-1], device=info.device)
        if info.permutation is not None:
            rows = info.permutation.long()
        segments = []
        for i, w in enumerate(slots):
            start, end = indptr[i], indptr[i + 1]
            if end > start:
                segments.append((rows[start:end], w, ranks[w], scalings[w]))
        return segments

    @staticmethod
    def _token_groups(info: TokenMapBatchInfo) -> list[tuple[torch.Tensor, int, int, float]]:
        slots = info.token_slots.long()
        ranks = info.lora_ranks.tolist()
        scalings = info.scalings.tolist()
        groups = []
        for w in sorted(set(slots.tolist())):
            rows = torch.nonzero(slots == w).flatten()
            if w == NO_LORA:
                groups.append((rows, w, 0, 0.0))
            else:
                groups.append((rows, w, ranks[w], scalings[w]))
        return groups

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, stack_num: int = 1
    ) -> torch.Tensor:
        info, summary = self._batch()
        T, _, R, c = check_shrink(summary, info.device, x, weights, stack_num)
        out = torch.zeros(T, c * R, dtype=torch.float64, device=x.device)
        if out.numel() == 0:  # no columns: no index tensor of T rows to build
            return out if self._exact else out.to(x.dtype)
        for rows, w, r, _ in self._segments():
            if r == 0:
                continue  # no columns of this row are specified
            a = weights[w, : c * r, :].double()  # (c*r, K): all c slices, packed at rank r
            out[rows, : c * r] = x[rows].double() @ a.T
        return self._finish(out, x.dtype)

    def run_lora_b_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, base_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        info, summary = self._batch()
        T, _, N = check_expand(summary, info.device, x, weights, base_output)
        out = self._base(base_output, T, N, x)
        for rows, w, r, s in self._segments() if out.numel() else ():
            if r == 0:
                continue  # no adapter: the row stays base[t], bit for bit
            b = weights[w, :, :r].double()  # (N, r)
            out[rows] += s * (x[rows, :r].double() @ b.T)
        return self._finish(out, x.dtype, base_output)

    def run_lora_a_embedding(
        self,
        input_ids: torch.Tensor,
        weights: torch.Tensor,
        vocab_size: int,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The gather, row by row; the columns past a row's rank (and rank-0 rows) are 0."""
        info, summary = self._batch()
        T, R, V, _ = check_embedding(
            summary, info.device, input_ids, weights, vocab_size, extra_embeddings
        )
        out = torch.zeros(T, R, dtype=weights.dtype, device=weights.device)
        for rows, w, r, _ in self._segments() if out.numel() else ():
            if r == 0:
                continue
            ids = input_ids[rows].long()
            base = ids < V
            out[rows[base], :r] = weights[w, :r, ids[base]].T
            if extra_embeddings is not None:
                out[rows[~base], :r] = extra_embeddings[w, ids[~base] - V, :r]
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
        checked = check_qkv(summary, info.device, x, qkv_lora_a, qkv_lora_b, output_offset,
                            max_qkv_out_dim, base_output, n_slices)  # fmt: skip
        T, N = checked.dims.T, checked.N
        return self._fused(x, qkv_lora_a, checked.lora_b, base_output, T, N, checked.offsets)

    def run_gate_up_lora(
        self,
        x: torch.Tensor,
        gate_up_lora_a: torch.Tensor,
        gate_up_lora_b: GateUpB,
        base_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lora_b = stack_gate_up_b(gate_up_lora_b)
        operands = {"gate_up_lora_b": gate_up_lora_b}
        info, summary = self._batch()
        names = ("gate_up_lora_a", "gate_up_lora_b")
        (T, _, _, _), N = check_fused(summary, info.device, x, gate_up_lora_a, lora_b,
                                      base_output, 2, names, operands, halves=True)  # fmt: skip
        half = N // 2
        return self._fused(x, gate_up_lora_a, lora_b, base_output, T, N, [0, half, N])

    def _fused(
        self,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        base_output: torch.Tensor | None,
        T: int,
        N: int,
        offsets: list[int],
    ) -> torch.Tensor:
        """Output slice ``j`` (columns ``[offsets[j], offsets[j+1])``) uses shrink slice ``j``."""
        out = self._base(base_output, T, N, x)
        for rows, w, r, s in self._segments() if out.numel() else ():
            if r == 0:
                continue
            xs = x[rows].double()
            for j, (lo, hi) in enumerate(itertools.pairwise(offsets)):
                a = lora_a[w, j * r : (j + 1) * r, :].double()  # (r, K)
                b = lora_b[w, lo:hi, :r].double()  # (hi - lo, r)
                out[rows, lo:hi] += s * ((xs @ a.T) @ b.T)
        return self._finish(out, x.dtype, base_output)

    @staticmethod
    def _base(base_output: torch.Tensor | None, T: int, N: int, x: torch.Tensor) -> torch.Tensor:
        if base_output is None:
            return torch.zeros(T, N, dtype=torch.float64, device=x.device)
        return base_output.double()  # a copy: the reference never writes its inputs
