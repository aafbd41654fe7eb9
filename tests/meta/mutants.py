"""A zoo of deliberately broken backends: the reference with exactly one real-world bug each.

The conformance suite must catch every one (``test_mutants.py``).  Each docstring names the bug
and, where there is one, the engine that shipped it.
"""

from __future__ import annotations

import torch

from lora_ref import ReferenceLoRABackend
from lora_ref.validation import check_fused


class SingleAdapterForAll(ReferenceLoRABackend):
    """The first segment's adapter (weights and scaling) used for every segment (SGLang #28091)."""

    def _segments(self):
        segs = super()._segments()
        if not segs:
            return segs
        _, w, r, s = segs[0]
        return [(rows, w, r, s) for rows, _, _, _ in segs]


class QkvEqualSlices(ReferenceLoRABackend):
    """qkv slices placed at ``j*N/3``, ignoring ``output_offset`` (wrong with GQA; SGLang #3413)."""

    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        info, summary = self._batch()
        (T, _, _, _), N = check_fused(
            summary, info.device, x, qkv_lora_a, qkv_lora_b, base_output, 3, ("a", "b")
        )
        third = N // 3
        return self._fused(x, qkv_lora_a, qkv_lora_b, base_output, T, N, [0, third, 2 * third, N])


class NoOutputTailMask(ReferenceLoRABackend):
    """Expand tiles of 16 columns with no mask on the tail: the overhang lands in the next row."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        T, N = out.shape
        spill = -N % 16
        if spill and T > 1:
            out[1:, :spill] += 1.0
        return out


class ScalingTwice(ReferenceLoRABackend):
    """Scaling applied twice."""

    def _segments(self):
        return [(rows, w, r, s * s) for rows, w, r, s in super()._segments()]


class ScalingIgnored(ReferenceLoRABackend):
    """Scaling not applied at all."""

    def _segments(self):
        return [(rows, w, r, 1.0) for rows, w, r, _ in super()._segments()]


class RankZeroReadsPoolRank(ReferenceLoRABackend):
    """A rank-0 slot treated as rank ``R``: "no adapter" rows take garbage (SGLang #5928 family)."""

    def _segments(self):
        info, _ = self._batch()
        R = max(int(info.lora_ranks.max()), 1)
        return [(rows, w, r if r > 0 else R, s) for rows, w, r, s in super()._segments()]


class NoLoraPicksLastSlot(ReferenceLoRABackend):
    """ "No adapter" rows use the last slot's adapter (vLLM's torch reference, index -1)."""

    def _segments(self):
        info, _ = self._batch()
        ranks = info.lora_ranks.tolist()
        scal = info.scalings.tolist()
        last = len(ranks) - 1
        return [
            (rows, last, ranks[last], scal[last]) if r == 0 else (rows, w, r, s)
            for rows, w, r, s in super()._segments()
        ]


class SegmentEndOffByOne(ReferenceLoRABackend):
    """Each segment's last row is skipped (end computed as ``indptr[i+1] - 1``)."""

    def _segments(self):
        return [(rows[:-1], w, r, s) for rows, w, r, s in super()._segments() if len(rows) > 1]


class GateUpHalvesSwapped(ReferenceLoRABackend):
    """gate_up: the gate half uses the up slice of ``A`` and the other way round."""

    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        swapped = gate_up_lora_a.clone()
        for w, r in enumerate(self._batch()[0].lora_ranks.tolist()):
            swapped[w, :r] = gate_up_lora_a[w, r : 2 * r]
            swapped[w, r : 2 * r] = gate_up_lora_a[w, :r]
        return super().run_gate_up_lora(x, swapped, gate_up_lora_b, base_output)


class SlicesPackedAtPoolRank(ReferenceLoRABackend):
    """Stacked shrink slices read at ``j*R`` instead of ``j*r``."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return super().run_lora_a_sgemm(
            x, _repack_at_pool_rank(self, weights, stack_num), stack_num
        )

    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        a = _repack_at_pool_rank(self, qkv_lora_a, 3)
        return super().run_qkv_lora(x, a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output)


def _repack_at_pool_rank(backend, weights, c):
    """What a kernel sees reading slice ``j`` at rows ``j*R``: rows ``j*r..`` replaced by them."""
    R = weights.shape[1] // c
    out = weights.clone()
    for w, r in enumerate(backend._batch()[0].lora_ranks.tolist()):
        for j in range(c):
            out[w, j * r : (j + 1) * r] = weights[w, j * R : j * R + r]
    return out


class PermutationIgnored(ReferenceLoRABackend):
    """``permutation`` ignored: logical rows used as physical rows."""

    def _segments(self):
        info, _ = self._batch()
        indptr = info.seg_indptr.tolist()
        starts = [i for i in range(len(indptr) - 1) if indptr[i + 1] > indptr[i]]
        return [
            (torch.arange(indptr[i], indptr[i + 1], device=info.device), w, r, s)
            for (_, w, r, s), i in zip(super()._segments(), starts, strict=False)
        ]


class ExpandReadsGarbageColumns(ReferenceLoRABackend):
    """Expand masks by the pool rank ``R`` instead of ``r``: garbage columns reach the result."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        R = weights.shape[2]
        for rows, w, r, s in self._segments():
            if 0 < r < R:
                extra = x[rows, r:R].double() @ weights[w, :, r:R].double().T
                out[rows] = (out[rows].double() + s * extra).to(out.dtype)
        return out


class NonDeterministicSum(ReferenceLoRABackend):
    """Split-K partials summed in a random order: results differ in the last bit (vLLM #50059)."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        if out.numel() and torch.rand(()) < 0.5:
            flat = out.view(-1)
            i = int(torch.randint(flat.numel(), ()))
            flat[i] = torch.nextafter(
                flat[i : i + 1], torch.full_like(flat[i : i + 1], float("inf"))
            )[0]
        return out


class NaNTailTile(ReferenceLoRABackend):
    """A tile size that leaves NaN in the last partial column tile (vLLM #48590)."""

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        out = super()._fused(x, lora_a, lora_b, base_output, T, N, offsets)
        tail = N % 32
        if tail and N > 32:
            out[:, N - tail :] = float("nan")
        return out


class WritesIntoInput(ReferenceLoRABackend):
    """Scales ``x`` in place as a side effect."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        x.mul_(0.5)
        return out


class BaseIgnored(ReferenceLoRABackend):
    """``base_output`` ignored: the LoRA term alone is returned."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return super().run_lora_b_sgemm(x, weights, None)

    def run_qkv_lora(
        self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, base_output=None
    ):
        return super().run_qkv_lora(x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim, None)

    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        return super().run_gate_up_lora(x, gate_up_lora_a, gate_up_lora_b, None)


class AdapterAfterEmptySegment(ReferenceLoRABackend):
    """After an empty segment, the next segment takes the empty one's adapter."""

    def _segments(self):
        info, _ = self._batch()
        lens = info.seg_lens.tolist()
        slots = info.weight_indices.tolist()
        ranks = info.lora_ranks.tolist()
        scal = info.scalings.tolist()
        segs = super()._segments()
        nonempty = [i for i, n in enumerate(lens) if n > 0]
        out = []
        for (rows, w, r, s), i in zip(segs, nonempty, strict=False):
            if i > 0 and lens[i - 1] == 0:
                w = slots[i - 1]
                r, s = ranks[w], scal[w]
            out.append((rows, w, r, s))
        return out


class WritesPastBaseOutput(ReferenceLoRABackend):
    """In-place update that also writes the element just past ``base_output``."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        if base_output is not None:
            base_output.copy_(out)
            past = torch.as_strided(
                base_output, (1,), (1,), base_output.storage_offset() + base_output.numel()
            )
            past.fill_(0)
            return base_output
        return out


class ZeroesBaseBeforeChecking(ReferenceLoRABackend):
    """Clears ``base_output`` before validating its arguments, then raises on bad input."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        if base_output is not None:
            base_output.zero_()
        return super().run_lora_b_sgemm(x, weights, base_output)


class NoValidation(ReferenceLoRABackend):
    """Trusts the batch: no validation, so a bad slot index crashes with an IndexError."""

    def set_batch_info(self, batch_info):
        from lora_ref.batch_info import BatchSummary

        self.batch_info = batch_info
        self._summary = BatchSummary(
            num_tokens=int(batch_info.seg_indptr[-1]),
            num_slots=batch_info.lora_ranks.numel(),
            max_weight_index=0,
            max_rank=0,
            num_segments=batch_info.seg_lens.numel(),
        )


MUTANTS: list[type[ReferenceLoRABackend]] = [
    SingleAdapterForAll,
    QkvEqualSlices,
    NoOutputTailMask,
    ScalingTwice,
    ScalingIgnored,
    RankZeroReadsPoolRank,
    NoLoraPicksLastSlot,
    SegmentEndOffByOne,
    GateUpHalvesSwapped,
    SlicesPackedAtPoolRank,
    PermutationIgnored,
    ExpandReadsGarbageColumns,
    NonDeterministicSum,
    NaNTailTile,
    WritesIntoInput,
    BaseIgnored,
    AdapterAfterEmptySegment,
    WritesPastBaseOutput,
    ZeroesBaseBeforeChecking,
    NoValidation,
]
