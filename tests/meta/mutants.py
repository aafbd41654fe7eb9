"""A zoo of deliberately broken backends: the reference with exactly one real-world bug each.

The conformance suite must catch every one (``test_mutants.py``).  Each docstring names the bug
and, where there is one, the engine that shipped it.
"""

from __future__ import annotations

import itertools

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


# --- narrow mutants: each bug sits in one corner class of conformance.corners ---------------


def _segments_with_index(backend):
    """``(segment index, physical rows, slot, rank, scaling)`` of each non-empty segment."""
    info, _ = backend._batch()
    indptr = info.seg_indptr.tolist()
    slots = info.weight_indices.tolist()
    ranks = info.lora_ranks.tolist()
    scal = info.scalings.tolist()
    rows = torch.arange(indptr[-1], device=info.device)
    if info.permutation is not None:
        rows = info.permutation.long()
    return [
        (i, rows[indptr[i] : indptr[i + 1]], w, ranks[w], scal[w])
        for i, w in enumerate(slots)
        if indptr[i + 1] > indptr[i]
    ]


class RowsPast64OfSegmentSkipped(ReferenceLoRABackend):
    """Rows 64 and later of a segment get no adapter (a 64-row tile loop that stops after one
    tile).  Corner: seg_len=65."""

    def _segments(self):
        return [(rows[:64], w, r, s) for rows, w, r, s in super()._segments()]


class LastRowDroppedWhenTMultipleOf64(ReferenceLoRABackend):
    """When ``T`` is a multiple of 64 the batch's last logical row gets no adapter (an
    off-by-one in the row-tile count).  Corner: T=64, T=128."""

    def _segments(self):
        _info, summary = self._batch()
        T = summary.num_tokens
        segs = super()._segments()
        if T and T % 64 == 0 and segs:
            rows, w, r, s = segs[-1]
            segs[-1] = (rows[:-1], w, r, s)
        return segs


class SegmentsPast16Ignored(ReferenceLoRABackend):
    """Segments 16 and later get no adapter (a 16-entry segment table).  Corner: segments>16."""

    def _segments(self):
        return [(rows, w, r, s) for i, rows, w, r, s in _segments_with_index(self) if i < 16]


class SegmentsPast32Ignored(ReferenceLoRABackend):
    """Segments 32 and later get no adapter (a 32-entry segment table).  Corner: segments>32."""

    def _segments(self):
        return [(rows, w, r, s) for i, rows, w, r, s in _segments_with_index(self) if i < 32]


class _SlotMap(ReferenceLoRABackend):
    """A segment's slot goes through ``_map`` before its weights, rank and scaling are read."""

    def _map(self, w: int) -> int:
        raise NotImplementedError

    def _segments(self):
        info, _ = self._batch()
        ranks, scal = info.lora_ranks.tolist(), info.scalings.tolist()
        out = []
        for rows, w, _, _ in super()._segments():
            v = self._map(w)
            out.append((rows, v, ranks[v], scal[v]))
        return out


class SlotIndexMod8(_SlotMap):
    """Slot ``w`` read as ``w & 7`` (a 3-bit slot field).  Corner: slot>=8."""

    def _map(self, w):
        return w & 7


class SlotIndexMod16(_SlotMap):
    """Slot ``w`` read as ``w % 16`` (a 16-slot weight-pointer table).  Corner: slot>=16."""

    def _map(self, w):
        return w % 16


class _RankMap(ReferenceLoRABackend):
    """Each adapter's rank goes through ``_map`` (a rank tile too narrow)."""

    def _map(self, r: int) -> int:
        raise NotImplementedError

    def _segments(self):
        return [(rows, w, self._map(r), s) for rows, w, r, s in super()._segments()]


class RankCappedAt16(_RankMap):
    """Ranks above 16 computed as 16 (a fixed 16-wide rank tile).  Corner: rank=17."""

    def _map(self, r):
        return min(r, 16)


class RankCappedAt64(_RankMap):
    """Ranks above 64 computed as 64 (a fixed 64-wide rank tile).  Corner: rank=65."""

    def _map(self, r):
        return min(r, 64)


class RankTailPast64Dropped(_RankMap):
    """Ranks above 64 rounded down to a multiple of 8 (8-wide rank vectors, no tail).
    Corner: rank>64 not a multiple of 8."""

    def _map(self, r):
        return r - r % 8 if r > 64 else r


class _TruncatedK(ReferenceLoRABackend):
    """The K tail past the last full ``BLOCK`` is ignored when K > ``BLOCK``."""

    BLOCK = 128

    def _cut(self, x, *weights):
        K = x.shape[1]
        if K <= self.BLOCK or K % self.BLOCK == 0:
            return (x, *weights)
        keep = K - K % self.BLOCK
        x = x.clone()
        x[:, keep:] = 0
        return (x, *weights)

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return super().run_lora_a_sgemm(*self._cut(x, weights), stack_num)

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        return super().run_qkv_lora(*self._cut(x, a), b, offsets, max_dim, base_output)

    def run_gate_up_lora(self, x, a, b, base_output=None):
        return super().run_gate_up_lora(*self._cut(x, a), b, base_output)


class KTailPast128Dropped(_TruncatedK):
    """K past the last multiple of 128 ignored when K > 128.  Corner: K>128 ragged."""


class KTailPast256Dropped(_TruncatedK):
    """K past the last multiple of 256 ignored when K > 256.  Corner: K>256 ragged."""

    BLOCK = 256


class NTailPast128Unwritten(ReferenceLoRABackend):
    """In a slice wider than 128 columns, the columns past the last full 128 keep their base
    value (no LoRA term).  Corner: N>128 ragged."""

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        out = super()._fused(x, lora_a, lora_b, base_output, T, N, offsets)
        base = self._base(base_output, T, N, x).to(out.dtype)
        for lo, hi in itertools.pairwise(offsets):
            if hi - lo > 128 and (hi - lo) % 128:
                cut = lo + (hi - lo) // 128 * 128
                out[:, cut:hi] = base[:, cut:hi]
        return out

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        keep = base_output.clone() if base_output is not None else None
        out = super().run_lora_b_sgemm(x, weights, base_output)
        N = out.shape[1]
        if N > 128 and N % 128:
            cut = N // 128 * 128
            out[:, cut:] = keep[:, cut:] if keep is not None else 0
        return out


class NoSegmentsRaises(ReferenceLoRABackend):
    """A batch with no segments (``bs = 0``) raises: a launch grid sized from ``bs``.
    Corner: bs=0 (T=0)."""

    def _batch(self):
        info, summary = super()._batch()
        if info.seg_lens.numel() == 0:
            raise RuntimeError("grid dimension 0")
        return info, summary


class AllEmptySegmentsRaises(ReferenceLoRABackend):
    """A batch whose segments are all empty raises (``max_len = 0`` divides).  Corner: all
    segments empty."""

    def _batch(self):
        info, summary = super()._batch()
        if info.seg_lens.numel() and summary.num_tokens == 0:
            raise ZeroDivisionError("max_len is 0")
        return info, summary


class KZeroRaises(ReferenceLoRABackend):
    """K = 0 raises (a split-K size computed as ``K // split``).  Corner: K=0."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        if x.dim() == 2 and x.shape[1] == 0:
            raise ZeroDivisionError("integer division or modulo by zero")
        return super().run_lora_a_sgemm(x, weights, stack_num)

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        self.run_lora_a_sgemm(x, a, 3) if x.dim() == 2 and x.shape[1] == 0 else None
        return super().run_qkv_lora(x, a, b, offsets, max_dim, base_output)

    def run_gate_up_lora(self, x, a, b, base_output=None):
        self.run_lora_a_sgemm(x, a, 2) if x.dim() == 2 and x.shape[1] == 0 else None
        return super().run_gate_up_lora(x, a, b, base_output)


class StridesIgnored(ReferenceLoRABackend):
    """``x`` read as if contiguous (a kernel that assumes ``stride(0) == K``).  Corners: x:
    column slice, x: strided rows."""

    @staticmethod
    def _flat(x):
        if x.dim() != 2 or x.is_contiguous():
            return x
        return torch.as_strided(x, x.shape, (x.shape[1], 1), x.storage_offset())

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        return super().run_lora_a_sgemm(self._flat(x), weights, stack_num)

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return super().run_lora_b_sgemm(self._flat(x), weights, base_output)

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        return super().run_qkv_lora(self._flat(x), a, b, offsets, max_dim, base_output)

    def run_gate_up_lora(self, x, a, b, base_output=None):
        return super().run_gate_up_lora(self._flat(x), a, b, base_output)


class ExpandInputRowLengthR(ReferenceLoRABackend):
    """The expand input read as rows of the pool rank ``R`` (wrong when it is ``(T, R')`` with
    ``R' > R``).  Corner: expand input wider than R."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        R = weights.shape[2] if weights.dim() == 3 else 0
        if x.dim() == 2 and x.shape[1] > R > 0:
            x = torch.as_strided(x, (x.shape[0], R), (R, 1), x.storage_offset())
        return super().run_lora_b_sgemm(x, weights, base_output)


class BaseStridesIgnored(ReferenceLoRABackend):
    """Writes the result into ``base_output`` in place as if it were contiguous.  Corner:
    base_output: strided."""

    def _write(self, out, base_output):
        if base_output is None or base_output.is_contiguous():
            return out
        flat = torch.as_strided(
            base_output, base_output.shape, (base_output.shape[1], 1), base_output.storage_offset()
        )
        flat.copy_(out)
        return base_output

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        return self._write(super().run_lora_b_sgemm(x, weights, base_output), base_output)

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        out = super().run_qkv_lora(x, a, b, offsets, max_dim, base_output)
        return self._write(out, base_output)

    def run_gate_up_lora(self, x, a, b, base_output=None):
        return self._write(super().run_gate_up_lora(x, a, b, base_output), base_output)


class ShrinkPartialSumsInDtype(ReferenceLoRABackend):
    """The shrink keeps its partial sums in the input dtype: each 32-wide K chunk is summed in
    float32, rounded, and the chunks are added in the input dtype.  Corner: data: same-sign."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        dtype = x.dtype
        for rows, w, r, _ in self._segments():
            a = weights[w, : stack_num * r].float()
            xs = x[rows].float()
            acc = torch.zeros(len(rows), stack_num * r, dtype=dtype, device=x.device)
            for k0 in range(0, x.shape[1], 32):
                part = (xs[:, k0 : k0 + 32] @ a[:, k0 : k0 + 32].T).to(dtype)
                acc = (acc.float() + part.float()).to(dtype)
            out[rows, : stack_num * r] = acc
        return out


class ExpandRankSumInDtype(ReferenceLoRABackend):
    """The expand adds up its rank terms in the input dtype (one rounding per term).
    Corner: data: same-sign."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        dtype = x.dtype
        base = base_output.float() if base_output is not None else None
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            acc = torch.zeros(len(rows), out.shape[1], dtype=dtype, device=x.device)
            for k in range(r):
                term = x[rows, k].float()[:, None] * weights[w, :, k].float()[None, :]
                acc = (acc.float() + term).to(dtype)
            res = s * acc.float()
            if base is not None:
                res = res + base[rows]
            out[rows] = res.to(dtype)
        return out


class SmallScalingSkipped(ReferenceLoRABackend):
    """The expand skips adapters with ``|s| < 1e-3`` as negligible (the shrink, which has no
    scaling, is right).  Corner: |s|<2^-10."""

    _shrinking = False

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        self._shrinking = True
        try:
            return super().run_lora_a_sgemm(x, weights, stack_num)
        finally:
            self._shrinking = False

    def _segments(self):
        segs = super()._segments()
        if self._shrinking:
            return segs
        return [(rows, w, 0 if 0 < abs(s) < 1e-3 else r, s) for rows, w, r, s in segs]


class NegativeScalingAbs(ReferenceLoRABackend):
    """The scaling's sign is dropped.  Corner: s<0."""

    def _segments(self):
        return [(rows, w, r, abs(s)) for rows, w, r, s in super()._segments()]


class ZeroScalingAsOne(ReferenceLoRABackend):
    """A zero scaling read as "unset" and replaced by 1.  Corner: s=0 on an adapter."""

    def _segments(self):
        return [(rows, w, r, s or 1.0) for rows, w, r, s in super()._segments()]


class SaturatesOnOverflow(ReferenceLoRABackend):
    """Results past the dtype's range saturate at its largest finite value instead of rounding
    to infinity.  Corner: data: overflow."""

    def _finish(self, out, dtype, base_output=None):
        if self._exact or not dtype.is_floating_point:
            return super()._finish(out, dtype, base_output)
        top = torch.finfo(dtype).max
        return out.clamp(-top, top).to(dtype)


class UnusedSlotsRead(ReferenceLoRABackend):
    """Every slot's weights enter a dense masked sum (``0 * W`` for the slots a row does not use),
    so garbage in unused slots leaks in.  Corner: unused slots poisoned."""

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        if weights.dim() == 3 and weights.shape[0] and out.numel():
            leak = (weights.double() * 0).sum(dim=(0, 2))  # NaN where any slot holds NaN
            out = (out.double() + leak[None, :]).to(out.dtype)
        return out

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        if weights.dim() == 3 and weights.shape[0] and out.numel():
            leak = (weights.double() * 0).sum(dim=(0, 2))
            out = (out.double() + leak[None, :]).to(out.dtype)
        return out


class StaleSegmentsAcrossBatches(ReferenceLoRABackend):
    """The row-to-adapter layout is computed on the first call and kept for the instance's
    life, whatever batch comes next.  Corner: lifecycle (several batches on one instance)."""

    _cached = None

    def _segments(self):
        if self._cached is None:
            self._cached = super()._segments()
        _info, summary = self._batch()
        T = summary.num_tokens
        return [(rows[rows < T], w, r, s) for rows, w, r, s in self._cached]


class StaleOffsetsAcrossCalls(ReferenceLoRABackend):
    """qkv's host copy of ``output_offset`` is taken on the first qkv call and reused for every
    later one, whatever the shapes.  Corner: lifecycle (calls interleaved)."""

    _offsets = None

    def run_qkv_lora(self, x, a, b, offsets, max_dim, base_output=None):
        if self._offsets is None and isinstance(offsets, torch.Tensor) and offsets.numel() == 4:
            self._offsets = offsets.clone()
        if self._offsets is not None and isinstance(offsets, torch.Tensor):
            offsets = self._offsets.to(offsets.device)
        return super().run_qkv_lora(x, a, b, offsets, max_dim, base_output)


NARROW_MUTANTS: list[type[ReferenceLoRABackend]] = [
    RowsPast64OfSegmentSkipped,
    LastRowDroppedWhenTMultipleOf64,
    SegmentsPast16Ignored,
    SegmentsPast32Ignored,
    SlotIndexMod8,
    SlotIndexMod16,
    RankCappedAt16,
    RankCappedAt64,
    RankTailPast64Dropped,
    KTailPast128Dropped,
    KTailPast256Dropped,
    NTailPast128Unwritten,
    NoSegmentsRaises,
    AllEmptySegmentsRaises,
    KZeroRaises,
    StridesIgnored,
    ExpandInputRowLengthR,
    BaseStridesIgnored,
    ShrinkPartialSumsInDtype,
    ExpandRankSumInDtype,
    SmallScalingSkipped,
    NegativeScalingAbs,
    ZeroScalingAsOne,
    SaturatesOnOverflow,
    UnusedSlotsRead,
    StaleSegmentsAcrossBatches,
    StaleOffsetsAcrossCalls,
]


# the weights of the first shrink seen per K, for the whole process (not in MUTANTS: the test of
# fresh replays uses it, tests/test_cli.py)
_PROCESS_WEIGHTS: dict[int, torch.Tensor] = {}


class ProcessCacheKeyedOnK(ReferenceLoRABackend):
    """The shrink's weights cached for the whole process under ``K`` alone, so a later call
    with the same ``K`` computes with an earlier call's weights: every instance right on its
    first call (SGLang 0.5.23's csgmv kernel cache, keyed on ``(K, slices, chunk)``)."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        K = weights.shape[-1]
        kept = _PROCESS_WEIGHTS.setdefault(K, weights.clone())
        if kept.shape == weights.shape and kept.dtype == weights.dtype:
            weights = kept.to(weights.device)
        return super().run_lora_a_sgemm(x, weights, stack_num)
