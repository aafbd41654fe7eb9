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
    pos_row         (P,)    output: physical row at each position (0 for padding)

``P = T + (align - 1) * min(S, L)`` comes from host shapes alone, so a CUDA graph captured on
one batch stays right after the metadata is refilled in place.  One program per segment finds
its rows' destination from the whole metadata (``O(S * L)`` work each, no atomics), writes them,
and the last non-empty segment of each slot pads its group.  The result is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, BLOCK_S: tl.constexpr):
    """Segments ``j0 .. j0+BLOCK_S``: index, slot (-1 past ``S``) and length (0 past ``S``)."""
    j = j0 + tl.arange(0, BLOCK_S)
    jm = j < S
    wj = tl.load(weight_indices_ptr + j, mask=jm, other=-1)
    lj = tl.load(seg_indptr_ptr + j + 1, mask=jm, other=0) - tl.load(
        seg_indptr_ptr + j, mask=jm, other=0
    )
    return j, wj, lj


@triton.jit
def _padded_rows_below(
    seg_indptr_ptr,
    weight_indices_ptr,
    S,
    v_end,
    ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """Sum over slots ``v < v_end`` of their row count rounded up to ``ALIGN``."""
    total = tl.sum(tl.zeros((BLOCK_L,), tl.int32), axis=0)
    for v0 in range(0, v_end, BLOCK_L):
        v = v0 + tl.arange(0, BLOCK_L)
        count = tl.zeros((BLOCK_L,), tl.int32)
        for j0 in range(0, S, BLOCK_S):
            _, wj, lj = _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, BLOCK_S)
            count += tl.sum(tl.where(wj[None, :] == v[:, None], lj[None, :], 0), axis=1)
        padded = (count + ALIGN - 1) // ALIGN * ALIGN
        total += tl.sum(tl.where(v < v_end, padded, 0), axis=0)
    return total


@triton.jit
def _layout_kernel(
    seg_indptr_ptr,
    weight_indices_ptr,
    perm_ptr,
    pos_slot_ptr,
    pos_row_ptr,
    S,
    L,
    P,
    HAS_PERM: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK: tl.constexpr,
):
    s = tl.program_id(0)
    start = tl.load(seg_indptr_ptr + s)
    n = tl.load(seg_indptr_ptr + s + 1) - start
    w = tl.load(weight_indices_ptr + s)
    # rows of slot w in the segments before and after this one
    before = tl.sum(tl.zeros((BLOCK_S,), tl.int32), axis=0)
    after = before
    for j0 in range(0, S, BLOCK_S):
        j, wj, lj = _segment_block(seg_indptr_ptr, weight_indices_ptr, j0, S, BLOCK_S)
        before += tl.sum(tl.where((wj == w) & (j < s), lj, 0), axis=0)
        after += tl.sum(tl.where((wj == w) & (j > s), lj, 0), axis=0)
    base = _padded_rows_below(seg_indptr_ptr, weight_indices_ptr, S, w, ALIGN, BLOCK_S, BLOCK_L)
    dest = base + before
    for m0 in range(0, n, BLOCK):
        i = m0 + tl.arange(0, BLOCK)
        im = i < n
        row = tl.load(perm_ptr + start + i, mask=im, other=0) if HAS_PERM else start + i
        tl.store(pos_slot_ptr + dest + i, tl.zeros((BLOCK,), tl.int32) + w, mask=im)
        tl.store(pos_row_ptr + dest + i, row, mask=im)
    if (n > 0) & (after == 0):
        # the group's last rows: pad it up to the next multiple of ALIGN
        lo = dest + n
        hi = base + (before + n + ALIGN - 1) // ALIGN * ALIGN
        i = lo + tl.arange(0, ALIGN)
        tl.store(pos_slot_ptr + i, tl.full((ALIGN,), -1, tl.int32), mask=i < hi)
        tl.store(pos_row_ptr + i, tl.zeros((ALIGN,), tl.int32), mask=i < hi)
    if s == 0:
        # everything past the last group is padding
        end = _padded_rows_below(seg_indptr_ptr, weight_indices_ptr, S, L, ALIGN, BLOCK_S, BLOCK_L)
        for p0 in range(end, P, BLOCK):
            i = p0 + tl.arange(0, BLOCK)
            tl.store(pos_slot_ptr + i, tl.full((BLOCK,), -1, tl.int32), mask=i < P)
            tl.store(pos_row_ptr + i, tl.zeros((BLOCK,), tl.int32), mask=i < P)


def num_positions(num_tokens: int, num_segments: int, num_slots: int, align: int) -> int:
    """``P``: positions that any batch of these buffer shapes can need."""
    return num_tokens + (align - 1) * min(num_segments, num_slots)


def group_rows(
    seg_indptr: torch.Tensor,
    weight_indices: torch.Tensor,
    permutation: torch.Tensor | None,
    num_tokens: int,
    num_slots: int,
    align: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return int32 ``pos_slot (P,)`` and ``pos_row (P,)`` (see the module docstring).

    ``align``: a power of two, the position multiple every adapter group starts on.
    """
    S = weight_indices.numel()
    P = num_positions(num_tokens, S, num_slots, align)
    device = seg_indptr.device
    pos_slot = torch.empty(P, dtype=torch.int32, device=device)
    pos_row = torch.empty(P, dtype=torch.int32, device=device)
    if S == 0:
        pos_slot.fill_(-1)
        pos_row.zero_()
        return pos_slot, pos_row
    _layout_kernel[(S,)](
        seg_indptr,
        weight_indices,
        permutation if permutation is not None else seg_indptr,
        pos_slot,
        pos_row,
        S,
        num_slots,
        P,
        HAS_PERM=permutation is not None,
        ALIGN=align,
        BLOCK_S=64,
        BLOCK_L=32,
        BLOCK=64,
    )
    return pos_slot, pos_row


@triton.jit
def tile_positions(pos_slot_ptr, pos_row_ptr, ranks_ptr, pid_m, P, BLOCK_M: tl.constexpr):
    """The ``BLOCK_M`` positions of row tile ``pid_m``: slot, rank and int64 physical row of
    each (padding positions get slot -1 and rank 0)."""
    offs_p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    p_mask = offs_p < P
    slots = tl.load(pos_slot_ptr + offs_p, mask=p_mask, other=-1)
    valid = slots >= 0
    ranks = tl.load(ranks_ptr + slots, mask=valid, other=0)
    rows = tl.load(pos_row_ptr + offs_p, mask=valid, other=0)
    # int64: rows * stride passes 2**31 when T*N does
    return slots, ranks, rows.to(tl.int64)
