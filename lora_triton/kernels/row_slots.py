"""Map every logical row to its adapter slot.

Metadata tensors (all int32, on the device):
    seg_indptr      (S+1,)  segment starts; S is the buffer length (``bs`` or the graph capacity)
    weight_indices  (S,)    slot of each segment
    row_slot        (T,)    output: slot of each logical row

The grid has one program per segment buffer entry and each program loops over its own rows with
bounds read on the device, so a CUDA graph captured on one batch stays right after the batch
info is refilled with more, fewer or longer segments.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _row_slot_kernel(seg_indptr_ptr, weight_indices_ptr, row_slot_ptr, BLOCK: tl.constexpr):
    seg = tl.program_id(0)
    start = tl.load(seg_indptr_ptr + seg)
    end = tl.load(seg_indptr_ptr + seg + 1)
    slot = tl.load(weight_indices_ptr + seg)
    for m0 in range(start, end, BLOCK):
        offs = m0 + tl.arange(0, BLOCK)
        tl.store(row_slot_ptr + offs, tl.zeros((BLOCK,), tl.int32) + slot, mask=offs < end)


def row_slots(
    seg_indptr: torch.Tensor, weight_indices: torch.Tensor, num_tokens: int
) -> torch.Tensor:
    """Return int32 ``(T,)``: the adapter slot of each logical row."""
    out = torch.empty(num_tokens, dtype=torch.int32, device=seg_indptr.device)
    num_segments = weight_indices.numel()
    if num_tokens and num_segments:
        _row_slot_kernel[(num_segments,)](seg_indptr, weight_indices, out, BLOCK=64)
    return out
