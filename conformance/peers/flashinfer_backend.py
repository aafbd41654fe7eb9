"""FlashInfer's segment GEMM (``flashinfer.SegmentGEMMWrapper``) as a backend of this contract.

Registered as ``flashinfer`` (entry point, extra ``[flashinfer]``).  Importing this module imports
FlashInfer; without it the import fails with :class:`PeerNotInstalledError`, which names the extra.

FlashInfer multiplies each segment of rows by one matrix of a weight pool,
``y[seg] = x[seg] @ W[weight_indices[seg]]^T``, with ``W`` stored ``(L, d_out, d_in)``.  It knows
no rank, no scaling and no row permutation.  SGLang's former FlashInfer LoRA backend added those
around the kernel, and this adapter does the same:

* rows are gathered into segment order when ``permutation`` is set, and scattered back;
* the pool's garbage (``A`` rows ``>= c*r``, ``B`` columns ``>= r``) is zeroed in a prepared copy
  of the weights (kept while the weights are unchanged, as a server converts an adapter once), and
  each expand input's columns ``>= r`` too: ``0 * NaN`` is NaN, so one side is not enough;
* a fused slice's input is cut out of the shrink result at the row's own rank (slices are packed
  at ``r``), and the shrink result is in the input dtype, as the contract's fused paths round it;
* the expand's product is scaled per row in float32 and added to ``base_output`` only on rows
  whose slot has a rank, so rank-0 rows stay ``base`` bit for bit;
* ``d_in`` and ``d_out`` are padded with zeros to multiples of 8: the SM90 CUTLASS kernel loads
  16-byte rows (``benchmarks/probes/flashinfer_probe.py`` shows what it does with other sizes).

FlashInfer writes its product in the input dtype, so the expand's product is rounded once before
it is scaled and added.  float32 is not offered: FlashInfer instantiates float16 and bfloat16 only.
The layout is prepared on the host in ``set_batch_info``, so in-place graph refills are not
supported.
"""

from __future__ import annotations

import itertools

import torch

from conformance.peers import PeerBackend, PeerNotInstalledError, validated
from lora_ref import Capabilities, LoRABatchInfo

try:
    from flashinfer import SegmentGEMMWrapper
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise PeerNotInstalledError(
        f"FlashInfer is not importable ({exc}); install it with "
        "`pip install 'lora-conformance[flashinfer]'`"
    ) from exc

ALIGN = 8  # elements per 16-byte row of float16/bfloat16
WORKSPACE_BYTES = 128 * 1024 * 1024  # FlashInfer's recommended float workspace
_workspaces: dict[torch.device, torch.Tensor] = {}


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _padded(t: torch.Tensor, cols: int) -> torch.Tensor:
    """``t (T, k)`` as a contiguous ``(T, cols)`` with zero columns past ``k``."""
    if t.shape[1] == cols:
        return t.contiguous()
    out = t.new_zeros(t.shape[0], cols)
    out[:, : t.shape[1]] = t
    return out


class FlashInferBackend(PeerBackend):
    """FlashInfer's segment GEMM, one call per shrink and one per expand slice."""

    name = "flashinfer"
    distribution = "flashinfer-python"
    capabilities = Capabilities(
        dtypes=frozenset({torch.float16, torch.bfloat16}),
        devices=frozenset({"cuda"}),
        permutation=True,
        split_layouts=True,
        cuda_graph=False,
        # its kernels flush subnormals: bf16 shrink and expand on subnormal data gave 0 and
        # other values where subnormals are right, and did so alone in a fresh process
        # (benchmarks/results/2026-12-07-h100-csgmv-examined/)
        subnormals="flush",
    )

    def set_batch_info(self, batch_info: LoRABatchInfo) -> None:
        super().set_batch_info(batch_info)
        info, summary = self._batch()
        device = info.device
        slot = self._logical_row_slots()
        self._bs = int(info.weight_indices.shape[0])
        self._indptr = info.seg_indptr.to(device, torch.int64)
        self._slots = info.weight_indices.to(device, torch.int64)
        self._row_rank = info.lora_ranks.long()[slot]
        self._row_scale = info.scalings.float()[slot]
        self._perm = info.permutation.long() if info.permutation is not None else None
        self._lora_rows = (self._row_rank > 0).nonzero().flatten()  # logical rows with a LoRA
        # fast paths (no gather, no scatter) for the common batch: one rank, every row a LoRA
        T = summary.num_tokens
        same = T > 0 and bool((self._row_rank == self._row_rank[0]).all())
        self._uniform_rank = int(self._row_rank[0]) if same else None
        self._every_row = self._perm is None and self._lora_rows.numel() == T
        if device not in _workspaces:
            _workspaces[device] = torch.empty(WORKSPACE_BYTES, dtype=torch.int8, device=device)
        self._gemm = SegmentGEMMWrapper(_workspaces[device])

    # -- layouts -------------------------------------------------------------------------------

    def _segment_mm(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``x (T, d_in)`` in segment order times ``W (L, d_out, d_in)`` -> ``(T, d_out)``."""
        return self._gemm.run(
            x, W, self._bs, True, seg_indptr=self._indptr, weight_indices=self._slots
        )

    def _in_segment_order(self, x: torch.Tensor) -> torch.Tensor:
        """Physical rows of ``x`` gathered into segment order."""
        return x[self._perm] if self._perm is not None else x

    def _prepared_a(self, A: torch.Tensor, c: int) -> torch.Tensor:
        """``(L, c*R, K)`` -> aligned ``(L, c*R, K)`` with rows ``>= c*r`` zeroed."""

        def build() -> torch.Tensor:
            L, rows, K = A.shape
            out = A.new_zeros(L, _aligned(rows), _aligned(K))
            for w, r in enumerate(self._ranks[:L]):
                out[w, : c * r, :K] = A[w, : c * r]
            return out

        return self._weights.get(A, ("A", c), build)

    def _prepared_b(self, source: torch.Tensor, key: tuple, B: torch.Tensor) -> torch.Tensor:
        """A slice ``B (L, n, R)`` of ``source`` -> aligned, with columns ``>= r`` zeroed.

        ``key`` names the slice (its index and output columns), so the slices of one stacked
        weight are kept side by side."""

        def build() -> torch.Tensor:
            L, n, R = B.shape
            out = B.new_zeros(L, _aligned(n), _aligned(R))
            for w, r in enumerate(self._ranks[:L]):
                out[w, :n, :r] = B[w, :, :r]
            return out

        return self._weights.get(source, ("B", *key), build)

    def _slice_input(self, h: torch.Tensor, j: int, cols: int) -> torch.Tensor:
        """Slice ``j`` of each logical row of ``h``: columns ``[j*r, (j+1)*r)`` of the row's own
        rank ``r``, as a ``(T, cols)`` expand input that is zero past ``r``."""
        if self._uniform_rank == cols:  # every row's slice is a plain column block
            return h[:, j * cols : (j + 1) * cols].contiguous()
        k = torch.arange(cols, device=h.device)
        rank = self._row_rank[:, None]
        index = (j * rank + k).clamp(max=h.shape[1] - 1)
        return torch.where(k < rank, h.gather(1, index), 0)

    def _add(self, out: torch.Tensor, y: torch.Tensor, lo: int, hi: int) -> None:
        """``out[rows, lo:hi] += s * y[rows]`` in float32 on the rows that have a LoRA."""
        if self._every_row:  # one fused pass, computed in float32 (PyTorch's op math)
            out[:, lo:hi].addcmul_(y[:, : hi - lo], self._row_scale[:, None])
            return
        rows = self._lora_rows
        if rows.numel() == 0:
            return
        phys = self._perm[rows] if self._perm is not None else rows
        term = y[rows, : hi - lo].float() * self._row_scale[rows, None]
        out[phys, lo:hi] = (out[phys, lo:hi].float() + term).to(out.dtype)

    def _expand_slices(
        self,
        h: torch.Tensor,
        parts: list[tuple[torch.Tensor, torch.Tensor]],
        bounds: list[int],
        base: torch.Tensor | None,
    ) -> torch.Tensor:
        """Add each slice's ``s * h_j @ B_j^T`` into ``base`` (zeros when None).

        ``parts`` holds, per slice, the weight argument it came from and the ``(L, n_j, R)``
        slice itself; ``h`` is ``(T, *)`` in segment order."""
        out = base if base is not None else h.new_zeros(h.shape[0], bounds[-1])
        if h.shape[0] == 0:
            return out
        for j, (source, B) in enumerate(parts):
            Bp = self._prepared_b(source, (j, bounds[j], bounds[j + 1]), B)
            y = self._segment_mm(self._slice_input(h, j, Bp.shape[2]), Bp)
            self._add(out, y, bounds[j], bounds[j + 1])
        return out

    def _shrink(self, x: torch.Tensor, A: torch.Tensor, c: int) -> torch.Tensor:
        """The shrink in segment order: ``(T, aligned c*R)`` in ``x.dtype``."""
        Ap = self._prepared_a(A, c)
        if x.shape[0] == 0:
            return x.new_zeros(0, Ap.shape[1])
        return self._segment_mm(_padded(self._in_segment_order(x), Ap.shape[2]), Ap)

    # -- the contract --------------------------------------------------------------------------

    @validated
    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        h = self._shrink(x, weights, stack_num)[:, : weights.shape[1]]
        if self._perm is None:
            return h
        out = torch.empty_like(h)
        out[self._perm] = h
        return out

    @validated
    def run_lora_b_sgemm(self, x, weights, base_output=None):
        h = self._in_segment_order(x)
        parts = [(weights, weights)]
        return self._expand_slices(h, parts, [0, weights.shape[1]], base_output)

    @validated
    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        bounds = self._weights.get(output_offset, "offsets", output_offset.tolist)  # no sync
        if isinstance(qkv_lora_b, tuple):
            q_b, kv_b = qkv_lora_b
            parts = [(q_b, q_b[0]), (kv_b, kv_b[0]), (kv_b, kv_b[1])]
        else:
            parts = [(qkv_lora_b, qkv_lora_b[:, lo:hi]) for lo, hi in itertools.pairwise(bounds)]
        return self._expand_slices(self._shrink(x, qkv_lora_a, 3), parts, bounds, base_output)

    @validated
    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        if isinstance(gate_up_lora_b, tuple):
            gate, up = gate_up_lora_b
            parts = [(gate, gate), (up, up)]
        else:
            n = gate_up_lora_b.shape[1] // 2
            halves = (gate_up_lora_b[:, :n], gate_up_lora_b[:, n:])
            parts = [(gate_up_lora_b, half) for half in halves]
        n = parts[0][1].shape[1]
        bounds = [0, n, 2 * n]
        return self._expand_slices(self._shrink(x, gate_up_lora_a, 2), parts, bounds, base_output)
