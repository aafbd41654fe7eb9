"""vLLM's Triton LoRA ops (``vllm.lora.ops.triton_ops``) as a backend of this project's contract.

Registered as ``vllm`` (entry point).  Importing this module imports vLLM's LoRA ops; without
them the import fails with :class:`PeerNotInstalledError`, which names the pip extra.

vLLM's data model differs from SGLang's, and the adapter maps ours onto it the way vLLM's own
``PunicaWrapperGPU`` does:

* a *token-to-adapter mapping* (one slot per physical row, -1 for no LoRA; rank-0 slots map to
  -1), turned into ``LoRAKernelMeta`` (rows sorted by adapter, counts and starts) on the host in
  ``set_batch_info``;
* weights per slice, padded with zeros to the pool rank: ``A_j (L, R, K)`` and ``B_j (L, n_j, R)``;
  our packed-at-``r`` stacks are unpacked slice by slice;
* each adapter's scaling folded into its ``B`` weights in the weight dtype (vLLM merges
  ``alpha / r`` into ``lora_b`` when it loads an adapter), and the shrink kept in a float32 buffer
  ``(c, T, R)``, which the expand reads directly in the fused ops.
* the per-slice weights are built once per weight tensor and batch, and kept while the weights
  are unchanged (:class:`~conformance.peers.PreparedWeights`), as vLLM converts an adapter when
  it loads it: a benchmark times vLLM's kernels, not the conversion.

Arguments reach vLLM's ops unvalidated, so the suite sees what vLLM itself does with bad input.
The metadata is prepared on the host per batch (vLLM does so before each graph replay), so an
in-place refill of a captured graph is not supported: the adapter declares no CUDA graphs.
"""

from __future__ import annotations

import itertools

import torch

from conformance.peers import PeerBackend, PeerNotInstalledError, peer_attribute, validated
from lora_ref import Capabilities, LoRABatchInfo, TokenMapBatchInfo
from lora_ref.token_map import Batch

try:
    from vllm.lora.ops.triton_ops import LoRAKernelMeta, lora_expand, lora_shrink
    from vllm.lora.ops.triton_ops import utils as _vllm_lora_utils
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise PeerNotInstalledError(
        f"vLLM's LoRA ops are not importable ({exc}); install them with "
        "`pip install 'lora-conformance[vllm]'`"
    ) from exc

# the per-weight pointer tables _forget_weight_tables clears (vLLM 0.33 and 0.34), looked up
# now, so that a rename fails at import, and again at each clear
_WEIGHT_TABLES = ("_LORA_A_PTR_DICT", "_LORA_B_PTR_DICT")
for _name in _WEIGHT_TABLES:
    peer_attribute(_vllm_lora_utils, _name, dict, "vllm")


def _forget_weight_tables() -> None:
    """Drop vLLM's per-weight pointer tables (``_LORA_A_PTR_DICT``, ``_LORA_B_PTR_DICT``).

    vLLM keys them by the weights' ``data_ptr()`` alone and keeps each entry's strides, slice
    offsets and sizes for good: it allocates its weight buffers once.  New weights at a reused
    address would inherit another shape's entry (``benchmarks/repros/vllm_lut_repro.py``), so the
    adapter forgets the tables whenever it lays out new weights, as a fresh vLLM process would.
    """
    for name in _WEIGHT_TABLES:
        peer_attribute(_vllm_lora_utils, name, dict, "vllm").clear()


class VLLMBackend(PeerBackend):
    """vLLM's ``lora_shrink`` / ``lora_expand`` Triton ops, driven by a token-to-adapter map."""

    name = "vllm"
    distribution = "vllm"
    capabilities = Capabilities(
        # lora_shrink takes float16/bfloat16 only.  CUDA only: without an active GPU driver
        # vLLM swaps Triton for a stub, and its metadata uses pinned memory.
        dtypes=frozenset({torch.float16, torch.bfloat16}),
        devices=frozenset({"cuda"}),
        permutation=True,
        cuda_graph=False,
        token_map=True,  # vLLM's own form: its token_lora_mapping
        # compiled Triton flushes subnormal results and intermediates to zero (the evidence:
        # benchmarks/results/2026-12-07-h100-peers/README.md)
        subnormals="flush",
    )

    def __init__(self, name: str | None = None, batch_info: Batch | None = None) -> None:
        self._meta: LoRAKernelMeta | None = None
        super().__init__(name, batch_info)

    def set_batch_info(self, batch_info: Batch) -> None:
        super().set_batch_info(batch_info)
        info = batch_info
        T = self._batch()[1].num_tokens
        # the token-to-slot map by physical row, -1 where the slot has rank 0 (no LoRA), and
        # each physical row's rank (0 without a LoRA): it masks expand inputs and repacks
        # shrink outputs.  A token map is that map already (its -1 rows included).
        if isinstance(info, TokenMapBatchInfo):
            slot = info.token_slots.long()
            rank = torch.where(slot >= 0, info.lora_ranks.long()[slot.clamp(min=0)], 0)
        else:
            slot = self._logical_row_slots()
            rank = info.lora_ranks.long()[slot]
        mapping = torch.where(rank > 0, slot, -1).to(torch.int32)
        if isinstance(info, LoRABatchInfo) and info.permutation is not None:
            perm = info.permutation.long()  # logical row t is physical row perm[t]
            mapping[perm], rank[perm] = mapping.clone(), rank.clone()
        self._row_rank = rank
        self._meta = LoRAKernelMeta.make(len(self._ranks), max(T, 1), info.device)
        if T:
            self._meta.prepare_tensors(mapping)

    # -- weight and activation layouts ---------------------------------------------------------

    def _meta_args(self, T: int) -> tuple:
        assert self._meta is not None
        return self._meta.meta_args(T, False)

    def _a_slices(self, A: torch.Tensor, c: int) -> list[torch.Tensor]:
        """``(L, c*R, K)`` packed at each rank -> ``c`` zero-padded ``(L, R, K)``."""

        def build() -> list[torch.Tensor]:
            R = A.shape[1] // c
            out = [A.new_zeros(A.shape[0], R, A.shape[2]) for _ in range(c)]
            for w, r in enumerate(self._ranks[: A.shape[0]]):
                for j in range(c):
                    out[j][w, :r] = A[w, j * r : (j + 1) * r]
            _forget_weight_tables()
            return out

        return self._weights.get(A, ("A", c), build)

    def _b_slices(self, B: torch.Tensor, bounds: list[int]) -> list[torch.Tensor]:
        """``(L, N, R)`` -> one ``(L, n_j, R)`` per slice, columns ``>= r`` zeroed, scaled."""

        def build() -> list[torch.Tensor]:
            scalings = self.batch_info.scalings.tolist()
            out = []
            for lo, hi in itertools.pairwise(bounds):
                part = B.new_zeros(B.shape[0], hi - lo, B.shape[2])
                for w, r in enumerate(self._ranks[: B.shape[0]]):
                    part[w, :, :r] = B[w, lo:hi, :r] * scalings[w]
                out.append(part)
            _forget_weight_tables()
            return out

        return self._weights.get(B, ("B", tuple(bounds)), build)

    def _packing(self, width: int, c: int) -> tuple[torch.Tensor, ...]:
        """Where column ``k`` of a row's packed shrink output lives in vLLM's ``(c, T, R)`` buffer:
        slice ``k // r``, column ``k % r`` of the row's own rank ``r``; valid for ``k < c*r``.
        One gather then repacks every row (kept per batch, like the prepared weights)."""

        def build() -> tuple[torch.Tensor, ...]:
            k = torch.arange(width, device=self._row_rank.device)
            r = self._row_rank[:, None].clamp(min=1)
            t = torch.arange(self._row_rank.shape[0], device=k.device)[:, None]
            return (k // r).clamp(max=c - 1), t, k % r, k < c * self._row_rank[:, None]

        return self._weights.get(self._row_rank, ("packing", width, c), build)

    def _shrink(self, x: torch.Tensor, A: torch.Tensor, c: int) -> torch.Tensor:
        """vLLM's float32 shrink buffer ``(c, T, R)``."""
        T = x.shape[0]
        buffer = torch.zeros(c, T, A.shape[1] // c, dtype=torch.float32, device=x.device)
        if T:
            lora_shrink(x, self._a_slices(A, c), buffer, *self._meta_args(T), 1.0)
        return buffer

    def _expand(
        self, buffer: torch.Tensor, B: torch.Tensor, bounds: list[int], base: torch.Tensor | None
    ) -> torch.Tensor:
        T = buffer.shape[1]
        out = base if base is not None else B.new_zeros(T, bounds[-1])
        if T == 0:
            return out
        target = out if out.is_contiguous() else out.contiguous()
        lora_expand(buffer, self._b_slices(B, bounds), target, *self._meta_args(T), 0, True)
        if target is not out:
            out.copy_(target)
        return out

    # -- the contract --------------------------------------------------------------------------

    @validated
    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        buffer = self._shrink(x, weights, stack_num)
        j, t, i, valid = self._packing(weights.shape[1], stack_num)
        return torch.where(valid, buffer[j, t, i].to(x.dtype), 0)

    @validated
    def run_lora_b_sgemm(self, x, weights, base_output=None):
        T, R = x.shape[0], weights.shape[2]
        cols = min(R, x.shape[1])
        keep = torch.arange(cols, device=x.device) < self._row_rank[:, None]
        buffer = torch.zeros(1, T, R, dtype=torch.float32, device=x.device)
        # columns >= r of x are unspecified; a mask (not a per-rank loop) keeps this capturable
        buffer[0, :, :cols] = torch.where(keep, x[:, :cols].float(), 0.0)
        return self._expand(buffer, weights, [0, weights.shape[1]], base_output)

    @validated
    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        bounds = self._weights.get(output_offset, "offsets", output_offset.tolist)  # no sync
        return self._expand(self._shrink(x, qkv_lora_a, 3), qkv_lora_b, bounds, base_output)

    @validated
    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        n = gate_up_lora_b.shape[1] // 2
        buffer = self._shrink(x, gate_up_lora_a, 2)
        return self._expand(buffer, gate_up_lora_b, [0, n, 2 * n], base_output)
