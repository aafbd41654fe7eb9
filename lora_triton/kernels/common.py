"""The JIT helpers every kernel of the backend shares: the programmatic-dependent-launch wait,
the float32 <-> bfloat16 conversions the interpreter needs done by bits, and the bounded reads of
a row tile's positions and ranks (:mod:`lora_triton.kernels.layout` writes the positions)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def await_previous_kernel(PDL: tl.constexpr):
    """The first statement of every kernel here.  With programmatic dependent launch
    (``PDL`` > 0, ``config.dependent_launch``) a kernel may start while the previous kernel in
    the stream still runs: wait until it has finished and its writes are visible, then (``PDL``
    1) let the next kernel launch.  Nothing is read or written before the wait, and since every
    kernel waits before it ends, each wait also covers every earlier kernel."""
    if PDL > 0:
        tl.extra.cuda.gdc_wait()
    if PDL == 1:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def to_dtype(acc, dtype: tl.constexpr, ROUND_BY_BITS: tl.constexpr):
    """``acc`` (float32, any shape) converted to ``dtype``.  ``ROUND_BY_BITS`` (the interpreter
    and a bfloat16 ``dtype`` only) rounds to nearest even by integer arithmetic on the bits,
    NaNs kept quiet: the interpreter's own float32 -> bfloat16 conversion truncates, and turns
    float32 subnormals into unrelated values (-7e-45 came out as -2.9e-39)."""
    if ROUND_BY_BITS:
        bits = acc.to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        bits = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, bits | 0x00400000, rounded)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return acc.to(dtype)


@triton.jit
def to_f32(x, BY_BITS: tl.constexpr):
    """``x`` converted to float32; ``BY_BITS`` (the interpreter and bfloat16 ``x`` only) widens
    the bits by a shift: the interpreter's own conversion turns bfloat16 subnormals into zeros
    and unrelated values (2.5e-39 came out as 8.1e-39)."""
    if BY_BITS:
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
        return bits.to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)


@triton.jit
def tile_positions(pos_slot_ptr, pos_row_ptr, ranks_ptr, pid_m, P, MAX_RANK, BLOCK_M: tl.constexpr):
    """The ``BLOCK_M`` positions of row tile ``pid_m``: slot, rank and int64 physical row of
    each (padding positions get slot -1 and rank 0).  Ranks are read from device memory and
    clamped to ``[0, MAX_RANK]``, so no rank can widen an access past its tensor."""
    offs_p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    p_mask = offs_p < P
    slots = tl.load(pos_slot_ptr + offs_p, mask=p_mask, other=-1)
    valid = slots >= 0
    # inlined, not clamp_rank(): each nested jit call costs the interpreter a re-patch
    ranks = tl.minimum(tl.maximum(tl.load(ranks_ptr + slots, mask=valid, other=0), 0), MAX_RANK)
    rows = tl.load(pos_row_ptr + offs_p, mask=valid, other=0)
    # int64: rows * stride passes 2**31 when T*N does
    return slots, ranks, rows.to(tl.int64)


@triton.jit
def clamp_rank(r, MAX_RANK):
    """A rank read from device memory, bounded to ``[0, MAX_RANK]``."""
    return tl.minimum(tl.maximum(r, 0), MAX_RANK)
