"""A backend whose shrink breaks the CUDA context (a store far outside any allocation, a sticky
illegal address) and whose other operations are the reference's (test_broken_context.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from lora_ref import ReferenceLoRABackend


@triton.jit
def _stray_store(ptr):
    tl.store(ptr + (1 << 40), 1.0)


class ShrinkBreaksContext(ReferenceLoRABackend):
    """The reference, but for a shrink that stores 4 TiB past its output first."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        _stray_store[(1,)](out)
        return out
