"""A multi-LoRA backend in plain PyTorch: the template for a backend of your own.

Letters: ``T`` tokens, ``K`` input dim, ``L`` adapter slots, ``R`` pool rank, ``r`` one
adapter's rank, ``c`` stack count (1, 2 gate_up, 3 qkv, ``n_slices`` in general), ``N``
output dim.

What makes it conform (docs/contract.md in lora-conformance):

* every operation validates its arguments with the shared ``check_*`` functions *before* it
  writes anything, so bad input is a clear ``ValueError``/``TypeError``;
* it reads only the first ``c*r`` rows of an adapter's shrink weights and the first ``r`` columns
  of its expand weights (the rest is garbage);
* rows of a rank-0 slot are ``base_output`` unchanged, bit for bit;
* it accumulates in float32 and, in the fused ops, rounds the shrink result to the input dtype
  before the expand, as serving engines do.

It reads the segment layout on the host (``.tolist()``), which costs a device sync per call and
rules out CUDA graphs: a real kernel would not, and would declare ``cuda_graph=True``.
"""

from __future__ import annotations

import itertools

import torch

from lora_ref import BaseLoRABackend, Capabilities, TokenMapBatchInfo
from lora_ref.validation import (
    FLOAT_DTYPES,
    check_embedding,
    check_expand,
    check_fused,
    check_qkv,
    check_shrink,
)


class TorchLoRABackend(BaseLoRABackend):
    """The four operations as a loop over segments, each a float32 matmul."""

    name = "template"
    capabilities = Capabilities(
        dtypes=frozenset(FLOAT_DTYPES),
        devices=frozenset({"cpu", "cuda"}),
        permutation=True,
        split_layouts=False,
        cuda_graph=False,
        float32_matmul="tf32",
        token_map=True,  # set_batch_info takes a slot per token too (-1: no LoRA)
        n_slices=True,  # run_qkv_lora takes any number of uneven slices
        embedding=True,  # run_lora_a_embedding: embedding LoRA's gather
    )

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return version("my-lora-backend")

    def _segments(self):
        """For each non-empty segment: its physical rows, and its adapter's rank and scaling.
        A token map's rows are grouped by slot; its -1 rows (no LoRA) count as rank 0."""
        info, _ = self._batch()
        if isinstance(info, TokenMapBatchInfo):
            slots = info.token_slots.long()
            ranks, scalings = info.lora_ranks.tolist(), info.scalings.tolist()
            for w in sorted(set(slots.tolist())):
                rows = torch.nonzero(slots == w).flatten()
                yield (rows, w, 0, 0.0) if w < 0 else (rows, w, ranks[w], scalings[w])
            return
        indptr = info.seg_indptr.tolist()
        ranks, scalings = info.lora_ranks.tolist(), info.scalings.tolist()
        rows = torch.arange(indptr[-1], device=info.device)
        if info.permutation is not None:
            rows = info.permutation.long()
        for i, w in enumerate(info.weight_indices.tolist()):
            if indptr[i + 1] > indptr[i]:
                yield rows[indptr[i] : indptr[i + 1]], w, ranks[w], scalings[w]

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        """``x (T, K)``, ``weights (L, c*R, K)`` -> ``(T, c*R)``; columns ``>= c*r`` unused."""
        info, summary = self._batch()
        T, _, R, c = check_shrink(summary, info.device, x, weights, stack_num)
        out = torch.zeros(T, c * R, dtype=x.dtype, device=x.device)
        for rows, w, r, _ in self._segments():
            a = weights[w, : c * r].float()
            out[rows, : c * r] = (x[rows].float() @ a.T).to(x.dtype)
        return out

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        """``x (T, R')``, ``weights (L, N, R)``, ``base_output (T, N)`` -> ``(T, N)``."""
        info, summary = self._batch()
        T, _, N = check_expand(summary, info.device, x, weights, base_output)
        return self._expand(x, weights, base_output, T, [0, N], lambda j, r: slice(0, r))

    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None,
        n_slices=3,
    ):  # fmt: skip
        """``qkv_lora_a (L, n*R, K)``, ``qkv_lora_b (L, N, R)``, ``output_offset`` int32
        ``(n+1,)`` -> ``(T, N)``; qkv is ``n = 3``, ``N = Nq+2*Nkv``."""
        info, summary = self._batch()
        checked = check_qkv(summary, info.device, x, qkv_lora_a, qkv_lora_b, output_offset,
                            max_qkv_out_dim, base_output, n_slices)  # fmt: skip
        return self._fused(x, qkv_lora_a, qkv_lora_b, base_output, checked.dims.T, n_slices,
                           checked.offsets)  # fmt: skip

    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        """``gate_up_lora_a (L, 2R, K)``, ``gate_up_lora_b (L, 2N, R)`` -> ``(T, 2N)``."""
        info, summary = self._batch()
        names = ("gate_up_lora_a", "gate_up_lora_b")
        dims, N = check_fused(
            summary, info.device, x, gate_up_lora_a, gate_up_lora_b, base_output, 2, names,
            halves=True,
        )  # fmt: skip
        bounds = [0, N // 2, N]
        return self._fused(x, gate_up_lora_a, gate_up_lora_b, base_output, dims.T, 2, bounds)

    def run_lora_a_embedding(self, input_ids, weights, vocab_size, extra_embeddings=None):
        """``input_ids (T,)``, ``weights (L, R, V)``, ``extra_embeddings (L, E, R)`` ->
        ``(T, R)``: row ``t`` gets column ``input_ids[t]`` of its slot's table (the extra
        table's row ``id - V`` past the vocabulary), its first ``r`` values, bit for bit."""
        info, summary = self._batch()
        T, R, V, _ = check_embedding(
            summary, info.device, input_ids, weights, vocab_size, extra_embeddings
        )
        out = torch.zeros(T, R, dtype=weights.dtype, device=weights.device)
        for rows, w, r, _ in self._segments():
            for t in rows.tolist() if r else ():
                v = int(input_ids[t])
                out[t, :r] = weights[w, :r, v] if v < V else extra_embeddings[w, v - V, :r]
        return out

    def _fused(self, x, lora_a, lora_b, base_output, T, c, bounds):
        """Shrink every slice at once (rounded to the input dtype), then expand slice ``j``
        from its ``r`` columns ``[j*r, (j+1)*r)``."""
        inter = torch.zeros(T, lora_a.shape[1], dtype=x.dtype, device=x.device)
        for rows, w, r, _ in self._segments():
            inter[rows, : c * r] = (x[rows].float() @ lora_a[w, : c * r].float().T).to(x.dtype)
        return self._expand(
            inter, lora_b, base_output, T, bounds, lambda j, r: slice(j * r, (j + 1) * r)
        )

    def _expand(self, x, weights, base_output, T, bounds, columns):
        """``out[rows, lo:hi] = base + s * x[rows, columns(j, r)] @ B[w, lo:hi, :r]^T`` for each
        slice ``j`` = ``[lo, hi)``; rank-0 rows keep ``base`` bit for bit."""
        N = bounds[-1]
        if base_output is None:
            out = torch.zeros(T, N, dtype=torch.float32, device=x.device)
        else:
            out = base_output.float()  # a copy: the inputs are never written
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            for j, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                term = x[rows, columns(j, r)].float() @ weights[w, lo:hi, :r].float().T
                out[rows, lo:hi] += s * term
        return out.to(x.dtype)
