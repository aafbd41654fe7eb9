"""Shrink: ``out[t, :c*r] = x[t] @ A[w, :c*r, :]^T`` for every row ``t`` with adapter ``w``.

Tensors (``p`` is a position in the batch's logical row order):
    x          (T, K)          input rows, any strides
    w          (L, c*R, K)     shrink weights; slot ``w`` uses rows ``[0, c*r)``, then garbage
    out        (T, c*R)        output (or an fp32 ``(S, T, c*R)`` workspace when K is split S ways)
    pos_slot   int32 (P,)      adapter slot of position ``p`` (-1: padding), see ``layout.py``
    pos_row    int32 (P,)      physical row of position ``p``
    lora_ranks int32 (L,)      rank of each slot

Every rank read from device memory is clamped to ``[0, R]`` (``common.clamp_rank``), and the
positions come from ``layout.py``, which bounds slots and rows: no metadata can make this kernel
read or write outside its tensors.

Weight tiles come through pointer loads, or (``ShrinkConfig.tma``, where the device and the
weights' layout allow it: ``weight_descriptor``) through a TMA tensor descriptor over ``w``: the
copy engine fetches each ``(BLOCK_N, BLOCK_K)`` tile and zero-fills what lies past ``c*R`` or
``K``, and the threads spend no instructions on addresses (benchmarks/results/2026-11-29-h200-tma/).
A descriptor tile also holds an adapter's rows
past its ``c*r``: they only reach output columns past ``c*r``, which are never stored.

Grid: (position tiles x column tiles, K splits).  A program owns ``BLOCK_M`` positions,
``BLOCK_N`` output columns and one K split, and makes one K sweep per distinct adapter among its
positions, that adapter's rows masked in.  The grouped layout makes that one adapter per tile
when the tile is no taller than its group alignment (``ONE_ADAPTER``), and the loop then ends
after one pass, with fewer registers live (as in the expand).  Pointer loads never read beyond
an adapter's ``c*r`` rows of ``A``, and no column past them is stored, so garbage cannot reach a
result.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lora_ref.runtime import interpreting
from lora_triton.config import ShrinkConfig, dependent_launch, hopper_or_later
from lora_triton.kernels.common import (
    await_previous_kernel,
    clamp_rank,
    tile_positions,
    to_dtype,
    to_f32,
)
from lora_triton.kernels.layout import RowLayout

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # a Triton without host-side tensor descriptors: pointer loads only
    TensorDescriptor = None

_NO_SLOT = 2**30


@triton.jit(do_not_specialize=["P", "STACK"])
def _shrink_kernel(
    # pointers
    x_ptr,
    w_ptr,
    w_desc,
    out_ptr,
    pos_slot_ptr,
    pos_row_ptr,
    ranks_ptr,
    # sizes
    P,
    K,
    STACK,
    R_POOL,
    K_PER_SPLIT,
    N_TILES,
    # strides
    stride_xm,
    stride_xk,
    stride_wl,
    stride_wn,
    stride_wk,
    stride_os,
    stride_om,
    stride_on,
    # meta-parameters
    CAST_F32: tl.constexpr,
    ROUND_BY_BITS: tl.constexpr,
    EVEN_K: tl.constexpr,
    W_TMA: tl.constexpr,
    NO_SLOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ONE_ADAPTER: tl.constexpr,
    PDL: tl.constexpr,
):
    await_previous_kernel(PDL)
    pid = tl.program_id(0)
    pid_m = pid // N_TILES
    pid_n = pid % N_TILES
    pid_k = tl.program_id(1)
    slots, ranks, rows64 = tile_positions(
        pos_slot_ptr, pos_row_ptr, ranks_ptr, pid_m, P, R_POOL, BLOCK_M
    )
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_lo = pid_k * K_PER_SPLIT

    # positions whose adapter has a column in this tile, one K sweep per distinct adapter
    active = STACK * ranks > pid_n * BLOCK_N
    remaining = tl.where(active, slots, NO_SLOT)
    slot = tl.min(remaining, axis=0)
    while slot < NO_SLOT:
        sel = remaining == slot
        n_mask = offs_n < STACK * clamp_rank(tl.load(ranks_ptr + slot), R_POOL)
        # int64: slot * stride_wl passes 2**31 on large pools
        w_base = w_ptr + slot.to(tl.int64) * stride_wl
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_PER_SPLIT, BLOCK_K):
            offs_k = k_lo + k0 + tl.arange(0, BLOCK_K)
            x_ptrs = x_ptr + rows64[:, None] * stride_xm + offs_k[None, :] * stride_xk
            w_ptrs = w_base + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk
            if EVEN_K:
                # no K mask: loads stay 16 bytes wide
                xt = tl.load(x_ptrs, mask=sel[:, None], other=0.0)
            else:
                xt = tl.load(x_ptrs, mask=sel[:, None] & (offs_k < K)[None, :], other=0.0)
            if W_TMA:
                # zero past c*R and K; rows past this adapter's c*r only reach unstored columns
                wt = w_desc.load([slot, pid_n * BLOCK_N, k_lo + k0])
                wt = wt.reshape(BLOCK_N, BLOCK_K).T
            elif EVEN_K:
                wt = tl.load(w_ptrs, mask=n_mask[None, :], other=0.0)
            else:
                wt = tl.load(w_ptrs, mask=n_mask[None, :] & (offs_k < K)[:, None], other=0.0)
            if CAST_F32:
                # the interpreter's bf16 dot is wrong; on a GPU this branch is compiled out
                xt = to_f32(xt, True)
                wt = to_f32(wt, True)
            acc = tl.dot(xt, wt, acc)
        tl.store(
            out_ptr + pid_k * stride_os + rows64[:, None] * stride_om + offs_n[None, :] * stride_on,
            to_dtype(acc, out_ptr.dtype.element_ty, ROUND_BY_BITS),
            mask=sel[:, None] & n_mask[None, :],
        )
        if ONE_ADAPTER:
            slot = NO_SLOT  # the tile holds one adapter group (layout.py), as in the expand
        else:
            remaining = tl.where(sel, NO_SLOT, remaining)
            slot = tl.min(remaining, axis=0)


def weight_descriptor(weights: torch.Tensor, config: ShrinkConfig) -> object | None:
    """A TMA descriptor over ``weights (L, c*R, K)`` with ``(1, block_n, block_k)`` tiles, or
    None where pointer loads must do: a Triton without host descriptors, a GPU older than
    Hopper (TMA came with sm_90), or weights whose last stride is not 1 or whose base or other
    strides are not multiples of 16 bytes (what the hardware requires)."""
    if TensorDescriptor is None:
        return None
    if not interpreting() and not hopper_or_later(weights.device):
        return None
    size = weights.element_size()
    if weights.stride(2) != 1 or weights.data_ptr() % 16:
        return None
    if any(s * size % 16 for s in weights.stride()[:2]):
        return None
    return TensorDescriptor.from_tensor(weights, [1, config.block_n, config.block_k])


@triton.jit(do_not_specialize=["NUMEL"])
def _split_k_sum_kernel(
    ws_ptr,
    out_ptr,
    NUMEL,
    SPLIT_K: tl.constexpr,
    ROUND_BY_BITS: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    # a fixed-order sum over the K splits: deterministic, unlike atomics
    await_previous_kernel(PDL)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(ws_ptr + s * NUMEL + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, to_dtype(acc, out_ptr.dtype.element_ty, ROUND_BY_BITS), mask=mask)


def shrink(
    x: torch.Tensor,
    weights: torch.Tensor,
    *,
    stack_num: int,
    layout: RowLayout,
    lora_ranks: torch.Tensor,
    config: ShrinkConfig,
) -> torch.Tensor:
    """Launch the shrink.  Shapes as in the module docstring; arguments already validated.

    Returns a new ``(T, c*R)`` tensor in ``x.dtype``.
    """
    T, K = x.shape
    cR = weights.shape[1]
    out = torch.empty(T, cR, dtype=x.dtype, device=x.device)
    if T == 0 or cR == 0:
        return out
    if K == 0:
        return out.zero_()  # an empty sum
    split = config.split_k
    k_per_split = triton.cdiv(triton.cdiv(K, split), config.block_k) * config.block_k
    split = triton.cdiv(K, k_per_split)
    even_k = K % k_per_split == 0
    target = out if split == 1 else torch.empty(split, T, cR, dtype=torch.float32, device=x.device)
    stride_os = 0 if split == 1 else target.stride(0)
    n_tiles = triton.cdiv(cR, config.block_n)
    P = layout.pos_slot.numel()
    grid = (triton.cdiv(P, config.block_m) * n_tiles, split)
    w_desc = weight_descriptor(weights, config) if config.tma else None
    pdl = dependent_launch(x.device, "shrink")
    round_by_bits = interpreting() and x.dtype == torch.bfloat16  # layout.to_dtype
    _shrink_kernel[grid](
        x,
        weights,
        w_desc,
        target,
        layout.pos_slot,
        layout.pos_row,
        lora_ranks,
        P,
        K,
        stack_num,
        cR // stack_num,
        k_per_split,
        n_tiles,
        x.stride(0),
        x.stride(1),
        weights.stride(0),
        weights.stride(1),
        weights.stride(2),
        stride_os,
        target.stride(-2),
        target.stride(-1),
        CAST_F32=interpreting() and x.dtype == torch.bfloat16,
        ROUND_BY_BITS=round_by_bits and split == 1,
        EVEN_K=even_k,
        W_TMA=w_desc is not None,
        NO_SLOT=_NO_SLOT,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        ONE_ADAPTER=layout.one_adapter(config.block_m),
        PDL=pdl,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        launch_pdl=pdl > 0,
    )
    if split > 1:
        block = 1024
        sum_pdl = dependent_launch(x.device, "sum")
        _split_k_sum_kernel[(triton.cdiv(out.numel(), block),)](
            target, out, out.numel(), SPLIT_K=split, ROUND_BY_BITS=round_by_bits, BLOCK=block,
            PDL=sum_pdl,
            launch_pdl=sum_pdl > 0,
        )  # fmt: skip
    return out
