"""Adapter-grouped row layout: each adapter's rows side by side, each group on a tile boundary.

The shrink and expand kernels walk *positions*, not rows.  Position ``p`` holds the adapter slot
and the physical row it computes; padding positions hold slot -1 and do nothing.  Slots come in
ascending order and, within a slot, rows keep their logical order.  Every group starts on a
multiple of ``align`` (the row tile of the launches, ``config.row_align``), so a row tile holds
one adapter and streams that adapter's weights once, however the batch interleaves adapters
(decode batches and the decode tail of mixed batches do).  A tile taller than ``align`` stays
correct: the kernels loop over the adapters of a tile.

Metadata (int32, on the device):
    seg_indptr      (S+1,)  segment starts; S is the buffer length (``bs`` or the graph capacity)
    weight_indices  (S,)    slot of each segment
    permutation     (T,)    physical row of each logical row (absent: the identity)
    pos_slot        (P,)    output: slot at each position, -1 for padding
    pos_row         (P,)    output: physical row at each position (read only where slot >= 0)

``P = T + (align - 1) * min(S, L)`` comes from host shapes alone, so a CUDA graph captured on
one batch stays right after the metadata is refilled in place.  One program per segment finds
its rows' destination from the whole metadata (``O(S * L)`` work each, no atomics) and writes
them; ``pos_slot`` is cleared to -1 first.  The result is deterministic.

Bounds (the metadata is read from device memory and trusted for nothing): ``seg_indptr``
entries are clamped to ``[0, T]`` and a segment's length to ``>= 0``; a segment whose slot lies
outside ``[0, L)`` is skipped; a permutation entry outside ``[0, T)`` drops its row; positions
past ``P`` are dropped.  So every ``pos_slot`` is -1 or a slot in ``[0, L)`` and every
``pos_row`` read is in ``[0, T)``, whatever the buffers hold.  Metadata that validated
(``LoRABatchInfo.validate``) is never clamped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lora_triton.config import dependent_launch, layout_config
from lora_triton.kernels.common import await_previous_kernel


@triton.jit
def _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, T, L, BLOCK_S: tl.constexpr):
    """Segments ``j0 .. j0+BLOCK_S``: index, slot (-1 when past ``S`` or outside ``[0, L)``) and
    clamped length (0 for those), int64: sums of hostile lengths (each up to ``T``, ``S`` of
    them) pass 2**31, and a wrapped destination would be negative."""
    j = j0 + tl.arange(0, BLOCK_S)
    jm = j < S
    lo = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr + j, mask=jm, other=0), 0), T)
    hi = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr + j + 1, mask=jm, other=0), 0), T)
    wj = tl.load(weight_indices_ptr + j, mask=jm, other=-1)
    ok = jm & (wj >= 0) & (wj < L)
    return j, tl.where(ok, wj, -1), tl.where(ok, tl.maximum(hi - lo, 0), 0).to(tl.int64)


@triton.jit
def _padded_rows_below(
    seg_indptr_ptr,
    weight_indices_ptr,
    S,
    T,
    L,
    v_end,
    ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """Sum over slots ``v < v_end`` of their row count rounded up to ``ALIGN``."""
    total = tl.sum(tl.zeros((BLOCK_L,), tl.int64), axis=0)
    for v0 in range(0, v_end, BLOCK_L):
        v = v0 + tl.arange(0, BLOCK_L)
        count = tl.zeros((BLOCK_L,), tl.int64)
        for j0 in range(0, S, BLOCK_S):
            _, wj, lj = _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, T, L, BLOCK_S)
            count += tl.sum(tl.where(wj[None, :] == v[:, None], lj[None, :], 0), axis=1)
        padded = (count + ALIGN - 1) // ALIGN * ALIGN
        total += tl.sum(tl.where(v < v_end, padded, 0), axis=0)
    return total


@triton.jit
def _layout_kernel(
    # pointers
    seg_indptr_ptr,
    weight_indices_ptr,
    perm_ptr,
    pos_slot_ptr,
    pos_row_ptr,
    # sizes
    S,
    T,
    L,
    P,
    # meta-parameters
    HAS_PERM: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    await_previous_kernel(PDL)
    s = tl.program_id(0)
    start = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr + s), 0), T)
    end = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr + s + 1), 0), T)
    w = tl.load(weight_indices_ptr + s)
    n = tl.where((w >= 0) & (w < L), tl.maximum(end - start, 0), 0)
    if n > 0:
        # rows of slot w in the segments before this one
        before = tl.sum(tl.zeros((BLOCK_S,), tl.int64), axis=0)
        for j0 in range(0, S, BLOCK_S):
            j, wj, lj = _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, T, L, BLOCK_S)
            before += tl.sum(tl.where((wj == w) & (j < s), lj, 0), axis=0)
        base = _padded_rows_below(
            seg_indptr_ptr, weight_indices_ptr, S, T, L, w, ALIGN, BLOCK_S, BLOCK_L
        )
        dest = base + before
        for m0 in range(0, n, BLOCK):
            i = m0 + tl.arange(0, BLOCK)
            im = (i < n) & (dest + i < P)
            if HAS_PERM:
                row = tl.load(perm_ptr + start + i, mask=im, other=0)
                im = im & (row >= 0) & (row < T)
            else:
                row = start + i
            tl.store(pos_slot_ptr + dest + i, tl.zeros((BLOCK,), tl.int32) + w, mask=im)
            tl.store(pos_row_ptr + dest + i, row, mask=im)


def num_positions(num_tokens: int, num_segments: int, num_slots: int, align: int) -> int:
    """``P``: positions that any batch of these buffer shapes can need."""
    return num_tokens + (align - 1) * min(num_segments, num_slots)


@dataclass(frozen=True)
class RowLayout:
    """The adapter-grouped positions of one batch (``group_rows``): int32 ``pos_slot (P,)`` and
    ``pos_row (P,)``, shared by the shrink and expand of one call.  ``align``: the position
    multiple every adapter group starts on, so a row tile of at most ``align`` positions
    holds one adapter."""

    pos_slot: torch.Tensor
    pos_row: torch.Tensor
    align: int

    def one_adapter(self, block_m: int) -> bool:
        """Row tiles of ``block_m`` positions (a power of two) hold at most one adapter."""
        return block_m <= self.align


def group_rows(
    seg_indptr: torch.Tensor,
    weight_indices: torch.Tensor,
    permutation: torch.Tensor | None,
    num_tokens: int,
    num_slots: int,
    align: int,
) -> RowLayout:
    """Return the batch's ``RowLayout``: int32 ``pos_slot (P,)`` and ``pos_row (P,)`` (see the
    module docstring), and ``align``.

    ``align``: a power of two, the position multiple every adapter group starts on.
    """
    S = weight_indices.numel()
    P = num_positions(num_tokens, S, num_slots, align)
    device = seg_indptr.device
    pdl = dependent_launch(device, "layout")
    pos_slot = torch.full((P,), -1, dtype=torch.int32, device=device)
    pos_row = torch.empty(P, dtype=torch.int32, device=device)
    if S == 0 or P == 0:
        return RowLayout(pos_slot, pos_row, align)
    blocks = layout_config(S, num_slots, num_tokens)
    _layout_kernel[(S,)](
        seg_indptr,
        weight_indices,
        permutation if permutation is not None else seg_indptr,
        pos_slot,
        pos_row,
        S,
        num_tokens,
        num_slots,
        P,
        HAS_PERM=permutation is not None,
        ALIGN=align,
        BLOCK_S=blocks.block_s,
        BLOCK_L=blocks.block_l,
        BLOCK=blocks.block,
        PDL=pdl,
        launch_pdl=pdl > 0,
    )
    return RowLayout(pos_slot, pos_row, align)


def group_tokens(token_slots: torch.Tensor, num_slots: int, align: int) -> RowLayout:
    """The ``RowLayout`` of a token map (``lora_ref.token_map``): int32 ``token_slots (T,)``,
    each row's slot or -1 (no LoRA: the row gets no position, so the kernels leave it as it
    is, base or zeros).

    A counting sort in torch operations of fixed shapes (a stable sort by slot, per-slot counts
    by ``scatter_add``, starts by ``cumsum``): no host sync, so it can be captured in a CUDA
    graph, and deterministic.  ``P = num_positions(T, T, L, align)``.  Entries outside
    ``[0, L)`` drop their row, like a segment whose slot lies outside it.
    """
    T = token_slots.numel()
    P = num_positions(T, T, num_slots, align)
    device = token_slots.device
    pos_slot = torch.full((P + 1,), -1, dtype=torch.int32, device=device)
    pos_row = torch.zeros(P + 1, dtype=torch.int32, device=device)
    if T == 0 or num_slots == 0:
        return RowLayout(pos_slot[:P], pos_row[:P], align)
    slots = token_slots.long()
    key = torch.where((slots >= 0) & (slots < num_slots), slots, num_slots)  # L: dropped
    order = torch.sort(key, stable=True).indices
    sorted_key = key[order]
    counts = torch.zeros(num_slots + 1, dtype=torch.int64, device=device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    first = torch.cumsum(counts, 0) - counts  # where each slot's rows start in sorted order
    padded = (counts + align - 1) // align * align
    starts = torch.cumsum(padded, 0) - padded  # where each slot's group starts in positions
    dest = starts[sorted_key] + torch.arange(T, device=device) - first[sorted_key]
    dest = torch.where(sorted_key < num_slots, dest, P)  # dropped rows to the spare position
    pos_slot.scatter_(0, dest, torch.where(sorted_key < num_slots, sorted_key, -1).int())
    pos_row.scatter_(0, dest, order.int())
    pos_slot[P] = -1
    return RowLayout(pos_slot[:P], pos_row[:P], align)
