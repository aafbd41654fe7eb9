"""Expand: ``out[t, n] = base[t, n] + s * x[t, j*r : j*r+r] @ B[w, n, :r]``, ``n`` in slice ``j``.

One kernel serves the plain expand (one slice), gate_up (two equal slices) and qkv (three
slices at ``output_offset``, GQA widths allowed).

Tensors (``p`` is a position in the batch's logical row order):
    x           (T, c*R')       shrink output; slice ``j`` of adapter ``w`` in columns
                                ``[j*r, (j+1)*r)``
    w           (L, N, R)       expand weights; columns >= r are garbage
    out         (T, N)          output, updated in place (it holds ``base`` when HAS_BASE)
    pos_slot    int32 (P,)      adapter slot of position ``p`` (-1: padding), see ``layout.py``
    pos_row     int32 (P,)      physical row of position ``p``
    lora_ranks  int32 (L,)      rank of each slot; rank-0 rows are never written
    scalings    fp32 (L,)       scaling of each slot, applied to the fp32 accumulator
    offsets     int32 (c+1,)    slice starts (qkv); absent: slices of ``SLICE_N`` columns

Bounds: ranks read from device memory are clamped to ``[0, min(R, c*R' // c)]`` (so neither the
weights nor the input are read past their columns), and qkv offsets to ``0 <= lo <= hi <= N``;
positions come from ``layout.py``, which bounds slots and rows.  Whatever the metadata holds,
no access leaves the tensors.

Grid: (position tiles x groups of ``N_PER_PROG`` column tiles of the widest slice, slices).
Groups past the end of a narrower slice exit at once.  A program loads each adapter's input
tile once and sweeps its column tiles, whose ``base`` and weight loads the compiler pipelines.
A program takes the distinct adapters among its positions one after the other; each output
element has exactly one writer, so no atomics are needed.  When the tile is no taller than the
layout's group alignment (``ONE_ADAPTER``, every launch rule but the interpreter's tall tiles)
the tile holds one adapter and the loop ends after it: a loop that carries the tile's positions
kept ~250 registers per thread live in the sm_90 build, ~160 without it.

An adapter's rank picks a rank tile: ``BLOCK_R``, ``/2`` or ``/4``, the narrowest that holds
it, when the rank is a multiple of 8; ``BLOCK_R`` otherwise.  A multiple of 8 loads 16-byte
vectors straight into shared memory, columns past the rank masked off, so the weights' garbage
columns are never read.  Other ranks load the pool's columns and replace the garbage with zeros
in registers (slower).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lora_ref.runtime import interpreting
from lora_triton.config import ExpandConfig, dependent_launch, rank_block
from lora_triton.kernels.common import (
    await_previous_kernel,
    clamp_rank,
    tile_positions,
    to_dtype,
    to_f32,
)
from lora_triton.kernels.layout import RowLayout

_NO_SLOT = 2**30


@triton.jit
def _sweep_columns(
    x_ptr,
    w_base,
    out_ptr,
    rows64,
    sel,
    j,
    r,
    scale,
    n_first,
    n_lo,
    n_hi,
    R_POOL,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    HAS_BASE: tl.constexpr,
    CAST_F32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WIDTH: tl.constexpr,
    VEC8: tl.constexpr,
    PREFETCH: tl.constexpr,
    N_PER_PROG: tl.constexpr,
):
    """One adapter's rows of this tile, over the program's column tiles, with a rank tile
    ``WIDTH >= r`` wide.  ``VEC8``: ``r`` is a multiple of 8, so the rank masks are constant over
    8 columns and the loads stay 16 bytes wide (the weights go straight to shared memory, rows
    past ``r`` zero-filled, never read).  ``PREFETCH`` (0, 1 or 2): base is loaded that many
    column tiles ahead (``VEC8`` tiles with base, several column tiles)."""
    offs_r = tl.arange(0, WIDTH)
    if VEC8:
        r = r // 8 * 8  # unchanged, written so that the compiler sees a multiple of 8
    r_mask = offs_r < r
    xt = tl.load(
        x_ptr + rows64[:, None] * stride_xm + (j * r + offs_r)[None, :] * stride_xk,
        mask=sel[:, None] & r_mask[None, :],
        other=0.0,
    )
    if CAST_F32:
        # the interpreter's bf16 dot is wrong; on a GPU this branch is compiled out
        xt = to_f32(xt, True)
    row_ptrs = out_ptr + rows64[:, None] * stride_om
    if PREFETCH > 0:
        # base tiles are prefetched PREFETCH column tiles ahead, by hand: the compiler
        # pipelines only the loads that feed the dot, and a base load waited on in place leaves
        # the kernel bound by DRAM latency (benchmarks/results/2026-11-29-h200-speed/).  VEC8
        # tiles only: the general path stages its weights through registers and got slower
        # with it.  Tiles past n_hi or past the program's last are masked off
        offs_n = n_first + tl.arange(0, BLOCK_N)
        base_next = tl.load(
            row_ptrs + offs_n[None, :] * stride_on,
            mask=sel[:, None] & ((offs_n >= n_lo) & (offs_n < n_hi))[None, :],
            other=0.0,
        )
        if PREFETCH > 1:
            offs_n += BLOCK_N
            base_next2 = tl.load(
                row_ptrs + offs_n[None, :] * stride_on,
                mask=sel[:, None] & (offs_n < n_hi)[None, :],
                other=0.0,
            )
    for t in tl.range(0, N_PER_PROG):
        offs_n = n_first + t * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = (offs_n >= n_lo) & (offs_n < n_hi)
        out_ptrs = row_ptrs + offs_n[None, :] * stride_on
        mask = sel[:, None] & n_mask[None, :]
        if PREFETCH > 0:
            base = base_next
            ahead = offs_n + PREFETCH * BLOCK_N  # >= n_lo
            next_tile = sel[:, None] & ((ahead < n_hi) & (t + PREFETCH < N_PER_PROG))[None, :]
            fetched = tl.load(row_ptrs + ahead[None, :] * stride_on, mask=next_tile, other=0.0)
            if PREFETCH > 1:
                base_next = base_next2
                base_next2 = fetched
            else:
                base_next = fetched
        elif HAS_BASE:
            base = tl.load(out_ptrs, mask=mask, other=0.0)
        w_ptrs = w_base + offs_n[None, :] * stride_wn + offs_r[:, None] * stride_wk
        if VEC8:
            # rows >= r are never read: the masked copy fills them with zeros
            bt = tl.load(w_ptrs, mask=r_mask[:, None] & n_mask[None, :], other=0.0)
        else:
            # masked by the pool rank only (wide accesses); columns >= r are garbage and are
            # replaced by zeros
            bt = tl.load(w_ptrs, mask=(offs_r[:, None] < R_POOL) & n_mask[None, :], other=0.0)
            bt = tl.where(r_mask[:, None], bt, tl.zeros_like(bt))
        if CAST_F32:
            bt = to_f32(bt, True)
        acc = tl.dot(xt, bt) * scale
        if HAS_BASE:
            acc += to_f32(base, CAST_F32)
        # CAST_F32: the interpreter with bfloat16, whose conversion layout.to_dtype replaces
        tl.store(out_ptrs, to_dtype(acc, out_ptr.dtype.element_ty, CAST_F32), mask=mask)


@triton.jit
def _sweep_width(
    x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi, R_POOL,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    HAS_BASE: tl.constexpr, CAST_F32: tl.constexpr, BLOCK_N: tl.constexpr,
    WIDTH: tl.constexpr, PREFETCH_BASE: tl.constexpr, N_PER_PROG: tl.constexpr,
):  # fmt: skip
    """``_sweep_columns`` with a rank tile ``WIDTH >= r`` wide: 16-byte loads (and the base
    prefetch, ``PREFETCH_BASE`` tiles ahead) when ``r`` is a multiple of 8, the general path
    otherwise."""
    if r % 8 == 0:
        _sweep_columns(
            x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi, R_POOL,
            stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on, HAS_BASE, CAST_F32,
            BLOCK_N, WIDTH, True, PREFETCH_BASE, N_PER_PROG,
        )  # fmt: skip
    else:
        _sweep_columns(
            x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi, R_POOL,
            stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on, HAS_BASE, CAST_F32,
            BLOCK_N, WIDTH, False, 0, N_PER_PROG,
        )  # fmt: skip


@triton.jit(do_not_specialize=["P", "N_GROUPS"])
def _expand_kernel(
    # pointers
    x_ptr,
    w_ptr,
    out_ptr,
    pos_slot_ptr,
    pos_row_ptr,
    ranks_ptr,
    scalings_ptr,
    offsets_ptr,
    # sizes
    P,
    N_TOTAL,
    R_POOL,
    MAX_RANK,
    SLICE_N,
    N_GROUPS,
    # strides
    stride_xm,
    stride_xk,
    stride_wl,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    # meta-parameters
    HAS_OFFSETS: tl.constexpr,
    COL_ALIGN: tl.constexpr,
    HAS_BASE: tl.constexpr,
    CAST_F32: tl.constexpr,
    NO_SLOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    HALF_R: tl.constexpr,
    QUARTER_R: tl.constexpr,
    PREFETCH_BASE: tl.constexpr,
    N_PER_PROG: tl.constexpr,
    ONE_ADAPTER: tl.constexpr,
    PDL: tl.constexpr,
):
    await_previous_kernel(PDL)
    pid = tl.program_id(0)
    pid_m = pid // N_GROUPS
    pid_g = pid % N_GROUPS
    j = tl.program_id(1)
    if HAS_OFFSETS:
        # device values: clamped to 0 <= n_lo <= n_hi <= N_TOTAL
        n_lo = tl.minimum(tl.maximum(tl.load(offsets_ptr + j), 0), N_TOTAL)
        n_hi = tl.minimum(tl.maximum(tl.load(offsets_ptr + j + 1), n_lo), N_TOTAL)
    else:
        n_lo = j * SLICE_N
        n_hi = n_lo + SLICE_N
    if COL_ALIGN > 1:
        # the host knows every valid slice bound is a multiple of COL_ALIGN: with 8 or more,
        # 2-byte accesses stay 16 bytes wide (else one element each).  Rounding is a no-op for
        # valid offsets and keeps hostile ones aligned, inside [0, N_TOTAL] and ordered
        n_lo = tl.multiple_of(n_lo // COL_ALIGN * COL_ALIGN, COL_ALIGN)
        n_hi = tl.multiple_of(n_hi // COL_ALIGN * COL_ALIGN, COL_ALIGN)
    # this program's N_PER_PROG column tiles, starting at n_first
    n_first = n_lo + pid_g * (N_PER_PROG * BLOCK_N)
    if n_first < n_hi:
        slots, ranks, rows64 = tile_positions(
            pos_slot_ptr, pos_row_ptr, ranks_ptr, pid_m, P, MAX_RANK, BLOCK_M
        )
        remaining = tl.where(ranks > 0, slots, NO_SLOT)
        slot = tl.min(remaining, axis=0)
        while slot < NO_SLOT:
            sel = remaining == slot
            r = clamp_rank(tl.load(ranks_ptr + slot), MAX_RANK)
            scale = tl.load(scalings_ptr + slot)
            # int64: slot * stride_wl passes 2**31 when L*N*R does
            w_base = w_ptr + slot.to(tl.int64) * stride_wl
            # rank buckets: the narrowest of BLOCK_R, HALF_R and QUARTER_R (0: no bucket) that
            # holds r (r >= 1 here).  A rank that is not a multiple of 8 takes the full tile:
            # in a narrower bucket the general path gave wrong sums on an H100 (Triton 3.6,
            # float16, weights with N contiguous), where the full tile's are right
            if r > HALF_R or r % 8 != 0:
                _sweep_width(
                    x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi, R_POOL,
                    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on, HAS_BASE,
                    CAST_F32, BLOCK_N, BLOCK_R, PREFETCH_BASE, N_PER_PROG,
                )  # fmt: skip
            elif HALF_R > 0:
                if r > QUARTER_R:
                    _sweep_width(
                        x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi,
                        R_POOL, stride_xm, stride_xk, stride_wn, stride_wk, stride_om,
                        stride_on, HAS_BASE, CAST_F32, BLOCK_N, HALF_R, PREFETCH_BASE,
                        N_PER_PROG,
                    )  # fmt: skip
                elif QUARTER_R > 0:
                    _sweep_width(
                        x_ptr, w_base, out_ptr, rows64, sel, j, r, scale, n_first, n_lo, n_hi,
                        R_POOL, stride_xm, stride_xk, stride_wn, stride_wk, stride_om,
                        stride_on, HAS_BASE, CAST_F32, BLOCK_N, QUARTER_R,
                        PREFETCH_BASE, N_PER_PROG,
                    )  # fmt: skip
            if ONE_ADAPTER:
                # the tile holds one adapter group (layout.py): nothing is left.  Ending here
                # keeps the loop from carrying the tile's positions, which costs registers
                # (benchmarks/results/2026-11-29-h200-regs/)
                slot = NO_SLOT
            else:
                remaining = tl.where(sel, NO_SLOT, remaining)
                slot = tl.min(remaining, axis=0)


@dataclass(frozen=True)
class ExpandPlan:
    """Everything one expand launch needs besides its tensors.

    Attributes:
        layout: the batch's adapter-grouped positions.
        lora_ranks: int32 ``(L,)``; scalings: fp32 ``(L,)``.
        num_slices: ``c`` (1 expand, 2 gate_up, 3 qkv).
        slice_width: the width of every slice, or the widest one when ``offsets`` is given.
        offsets: int32 ``(c+1,)`` slice bounds on the device (qkv), or None.
        has_base: ``out`` holds ``base_output`` (else zeros).
        col_align: a power of two (1 to 16) that every slice bound is known, on the host, to
            be a multiple of (``column_align``).
        config: tile sizes.
    """

    layout: RowLayout
    lora_ranks: torch.Tensor
    scalings: torch.Tensor
    num_slices: int
    slice_width: int
    offsets: torch.Tensor | None
    has_base: bool
    col_align: int
    config: ExpandConfig


def column_align(*bounds: int) -> int:
    """The largest power of two, at most 16, that divides every one of ``bounds``: what the
    kernel may assume of its column offsets (8 keeps 2-byte accesses 16 bytes wide)."""
    align = 16
    while align > 1 and any(b % align for b in bounds):
        align //= 2
    return align


def expand(x: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, plan: ExpandPlan) -> None:
    """Launch the expand into ``out`` (updated in place).  Arguments are already validated."""
    T = out.shape[0]
    if T == 0 or plan.slice_width == 0 or out.shape[1] == 0:
        return
    config = plan.config
    n_groups = triton.cdiv(triton.cdiv(plan.slice_width, config.block_n), config.n_per_prog)
    P = plan.layout.pos_slot.numel()
    grid = (triton.cdiv(P, config.block_m) * n_groups, plan.num_slices)
    R = weights.shape[2]
    block_r = rank_block(R)
    pdl = dependent_launch(out.device, "expand")
    _expand_kernel[grid](
        x,
        weights,
        out,
        plan.layout.pos_slot,
        plan.layout.pos_row,
        plan.lora_ranks,
        plan.scalings,
        plan.offsets if plan.offsets is not None else plan.layout.pos_slot,
        P,
        out.shape[1],
        R,
        min(R, x.shape[1] // plan.num_slices),
        plan.slice_width,
        n_groups,
        x.stride(0),
        x.stride(1),
        weights.stride(0),
        weights.stride(1),
        weights.stride(2),
        out.stride(0),
        out.stride(1),
        HAS_OFFSETS=plan.offsets is not None,
        COL_ALIGN=plan.col_align,
        HAS_BASE=plan.has_base,
        CAST_F32=interpreting() and x.dtype == torch.bfloat16,
        NO_SLOT=_NO_SLOT,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_R=block_r,
        HALF_R=block_r // 2 if config.rank_buckets >= 2 and block_r >= 32 else 0,
        QUARTER_R=block_r // 4 if config.rank_buckets >= 3 and block_r >= 64 else 0,
        PREFETCH_BASE=config.prefetch if plan.has_base and config.n_per_prog > 1 else 0,
        N_PER_PROG=config.n_per_prog,
        ONE_ADAPTER=plan.layout.one_adapter(config.block_m),
        PDL=pdl,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        launch_pdl=pdl > 0,
    )
