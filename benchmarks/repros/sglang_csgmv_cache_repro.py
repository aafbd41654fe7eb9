"""Reproduce SGLang 0.5.23's csgmv shrink reusing a kernel compiled for other shapes (GPU only).

SGLang's ``cached_triton_kernel`` (on by default on CUDA) keys the compiled
``_chunked_lora_shrink_kernel`` by ``(K, NUM_SLICES, BLOCK_M)`` only, while the kernel also
specialises on ``N`` (its row strides), the dtype and its block sizes.  Two calls that agree on
the key but not on ``N`` run the first call's binary on the second call's tensors.

Usage (on the device, SGLang importable):  python benchmarks/repros/sglang_csgmv_cache_repro.py
Run it once as is and once with ``SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE=0`` (Triton's own cache).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_ref import get_backend_from_name, make_batch_info


def shrink_error(R: int, dtype: torch.dtype, K: int = 64) -> float:
    """Largest |csgmv - reference| of one shrink with pool rank ``R`` (``N = R``)."""
    cuda = torch.device("cuda")
    info = make_batch_info([3, 2], [0, 1], [R, R], [1.0, 1.0], device=cuda)
    csgmv = get_backend_from_name("sglang-csgmv")(batch_info=info)
    ref = get_backend_from_name("reference")(batch_info=info)
    g = torch.Generator(device=cuda).manual_seed(R)
    x = torch.randn(5, K, device=cuda, generator=g).to(dtype)
    A = torch.randn(2, R, K, device=cuda, generator=g).to(dtype)
    got = csgmv.run_lora_a_sgemm(x, A).double()
    want = ref.run_lora_a_sgemm(x, A).double()
    return float((got - want).abs().max())


def main() -> None:
    cache = os.environ.get("SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE", "(unset: on for CUDA)")
    print(f"SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE={cache}")
    # same K, slices and chunk size; N and then the dtype change
    for R, dtype in [(16, torch.float16), (4, torch.float16), (16, torch.float32)]:
        print(f"shrink K=64 N={R} {dtype}: max |error| = {shrink_error(R, dtype):.3g}")


if __name__ == "__main__":
    main()
