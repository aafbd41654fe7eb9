"""Launch configurations: fixed heuristics of the problem shape, never run-time autotuning.

Autotuning benchmarks inside the first call, which breaks CUDA-graph capture and fails on
GPU-less hosts, so configurations are picked by rule.  Under the Triton interpreter the rule is
a small one of its own ("pinned"): 16-row tiles for small batches, so CPU runs cover multi-tile
and split-K paths, and larger tiles for large shapes, since the interpreter's cost grows with
the number of programs and loop trips.  ``LORA_TRITON_PIN=1`` selects the pinned rule on a GPU
too.  Benchmarks sweep configurations with :func:`override`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import triton

from lora_ref.errors import fail
from lora_ref.runtime import interpreting


@dataclass(frozen=True)
class ShrinkConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    tma: bool = False  # weight tiles through a TMA descriptor where possible (kernels/shrink.py)


@dataclass(frozen=True)
class ExpandConfig:
    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    n_per_prog: int = 1  # column tiles one program sweeps (the input tile loaded once)
    rank_buckets: int = 3  # rank tiles tried per adapter: BLOCK_R, BLOCK_R/2, BLOCK_R/4
    prefetch: int = 1  # base tiles loaded ahead of the one in use (0 to 2), when n_per_prog > 1


@dataclass(frozen=True)
class _Overrides:
    shrink: ShrinkConfig | None = None
    expand: ExpandConfig | None = None
    align: int | None = None


_override = _Overrides()


@contextlib.contextmanager
def override(
    shrink: ShrinkConfig | None = None,
    expand: ExpandConfig | None = None,
    align: int | None = None,
) -> Iterator[None]:
    """Within this block, every launch uses the given configurations and every batch layout
    the given group alignment (benchmark sweeps)."""
    global _override
    saved = _override
    _override = _Overrides(shrink, expand, align)
    try:
        yield
    finally:
        _override = saved


def pinned() -> bool:
    """The interpreter's small launch rule is in force (interpreter, or ``LORA_TRITON_PIN=1``)."""
    return interpreting() or os.environ.get("LORA_TRITON_PIN", "0") == "1"


@functools.cache
def _properties(device_index: int):
    return torch.cuda.get_device_properties(device_index)


def _cuda_properties(device: torch.device):
    """The (cached) properties of CUDA ``device``."""
    return _properties(device.index if device.index is not None else torch.cuda.current_device())


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a nominal 8 under the interpreter)."""
    if device.type != "cuda":
        return 8
    return _cuda_properties(device).multi_processor_count


def hopper_or_later(device: torch.device) -> bool:
    """``device`` is a CUDA GPU of compute capability 9 or later (TMA, dependent launch)."""
    return device.type == "cuda" and _cuda_properties(device).major >= 9


@functools.cache
def _has_grid_dependency_control() -> bool:
    from triton.language.extra import cuda as tl_cuda

    return hasattr(tl_cuda, "gdc_wait") and hasattr(tl_cuda, "gdc_launch_dependents")


# programmatic dependent launch, by kernel: 1 for the two small one-wave kernels (the row layout
# and the K-split sum) that let the next kernel launch at once; 2 for the shrink and the expand,
# which wait but let the next kernel launch only as they end: a dependent scheduled early beside
# a long shrink or expand competes with it for SMs and slowed both
# (benchmarks/results/2026-11-30-h200-pdl/)
PDL_MODES = {"layout": 1, "shrink": 2, "sum": 1, "expand": 2}


def dependent_launch(device: torch.device, kernel: str) -> int:
    """How ``kernel`` (a key of ``PDL_MODES``) uses programmatic dependent launch (PDL, sm_90
    and later): 0 not at all; 1 launched with it, waiting in its first statement
    (``kernels/layout.py``'s ``await_previous_kernel``), before any memory access, until the
    previous kernel in the stream has finished and its writes are visible, then letting the next
    kernel launch at once; 2 the same wait, the next kernel launching only as this one ends.
    What it saves is the gap between kernels, which decode batches pay three or four times per
    call.

    0 under the interpreter, off CUDA, on a GPU older than Hopper and with a Triton lacking the
    grid dependency instructions.  ``LORA_TRITON_PDL``: ``1`` (the default: ``PDL_MODES``),
    ``0`` (off), or a comma list of kernels, each with ``:wait`` for mode 2 (sweeps).
    """
    if interpreting() or not hopper_or_later(device) or not _has_grid_dependency_control():
        return 0
    return pdl_mode(kernel, os.environ.get("LORA_TRITON_PDL", "1"))


def pdl_mode(kernel: str, setting: str) -> int:
    """``kernel``'s PDL mode under the ``LORA_TRITON_PDL`` value ``setting``, on a device that
    has PDL (``dependent_launch``)."""
    if setting == "0":
        return 0
    if setting == "1":
        return PDL_MODES[kernel]
    modes = dict(item.strip().partition(":")[::2] for item in setting.split(","))
    if any(k not in PDL_MODES or mode not in ("", "wait") for k, mode in modes.items()):
        fail(
            "LORA_TRITON_PDL",
            f"0, 1 or a comma list of {', '.join(PDL_MODES)}, each optionally with ':wait'",
            repr(setting),
        )
    if kernel not in modes:
        return 0
    return 2 if modes[kernel] == "wait" else 1


def _tiles(n: int, block: int) -> int:
    return triton.cdiv(max(n, 1), block)


DECODE_ROWS = 256  # batches of at most this many rows get the decode launch rules
PINNED_SMALL = 16  # pinned rule: batches and widths up to this use 16-wide tiles
PINNED_TALL = 2048  # pinned rule: batches past this use 256-row tiles
PINNED_WIDE = 4096  # pinned rule: slices and K past this use tiles of 1/32 of them (at most 2048)


def _pinned_rows(T: int) -> int:
    """The pinned rule's row tile: 16 for small batches (multi-tile paths on small cases), 64,
    and 256 for tall ones (the interpreter's cost grows with the number of programs)."""
    return 16 if T <= PINNED_SMALL else (64 if T <= PINNED_TALL else 256)


def _pinned_wide(n: int, narrow: int) -> int:
    """The pinned rule's tile along a dimension of ``n``: ``narrow`` up to ``PINNED_WIDE``,
    then ``n / 32`` rounded to a power of two, at most 2048 (fewer loop trips and programs)."""
    return narrow if n <= PINNED_WIDE else min(2048, triton.next_power_of_2(n // 32))


@dataclass(frozen=True)
class LayoutConfig:
    block_s: int = 64  # segments read per step
    block_l: int = 32  # slots counted per step
    block: int = 64  # rows written per step


def layout_config(num_segments: int, num_slots: int, num_tokens: int) -> LayoutConfig:
    """The row-layout kernel's blocks.  Every program scans the whole metadata, so the
    interpreter (pinned rule) takes blocks as large as the batch past 128 segments, 64 slots
    or 1024 rows (one step instead of dozens); below that, and on a GPU, the small ones (the
    loops stay covered on CPU)."""
    if not pinned():
        return LayoutConfig()
    return LayoutConfig(
        64 if num_segments <= 128 else min(1024, triton.next_power_of_2(num_segments)),
        32 if num_slots <= 64 else min(256, triton.next_power_of_2(num_slots)),
        64 if num_tokens <= 1024 else 1024,
    )


def invariant_shrink_config(K: int, cR: int, dtype: torch.dtype) -> ShrinkConfig:
    """The batch-invariant mode's shrink launch (``TritonBatchInvariantBackend``): a function
    of ``K``, ``c*R`` and the dtype only, never of ``T`` or the batch's adapters, and no K
    split, so a row's reduction order (the K steps, one instruction shape for every tile) is
    the same in any batch."""
    if pinned():
        return ShrinkConfig(16, 16 if cR <= PINNED_SMALL else (64 if cR <= 128 else 128),
                            32 if K <= 64 else _pinned_wide(K, 128), num_stages=1)  # fmt: skip
    block_k = 64 if dtype == torch.float32 else 128
    return ShrinkConfig(64, shrink_column_tile(cR), block_k, split_k=1, num_stages=3)


def invariant_expand_config(R: int, slice_width: int) -> ExpandConfig:
    """The batch-invariant mode's expand launch: a function of ``R`` and the slice width only
    (the prefill rule's tiles; the rank tile of a row depends on its own adapter alone)."""
    if pinned():
        block_n = 32 if slice_width <= 32 else _pinned_wide(slice_width, 128)
        return ExpandConfig(16, block_n, num_stages=1,
                            n_per_prog=2 if slice_width > block_n else 1)  # fmt: skip
    config = ExpandConfig(64, 128 if R <= 64 else 64, num_warps=4, num_stages=3, n_per_prog=8)
    return _within_shared_memory(config, rank_block(R))


def invariant_row_align() -> int:
    """The batch-invariant mode's row alignment: its row tile, so a tile holds one adapter."""
    return 16 if pinned() else 64


def row_align(T: int) -> int:
    """Row tile that adapter groups start on (``kernels/layout.py``): the tallest ``block_m``
    the heuristics below pick for a batch of ``T`` rows, so no tile straddles two adapters
    (the pinned rule's taller tiles for large batches do straddle: that path stays covered).
    A power of two.  The kernels skip their loop over a tile's adapters when their tile is no
    taller than this."""
    if _override.align is not None:
        return _override.align
    return 16 if pinned() or T <= DECODE_ROWS else 64


def shrink_config(
    T: int,
    K: int,
    cR: int,
    dtype: torch.dtype,
    device: torch.device,
    num_adapters: int = 1,
    full_rank: bool = True,
) -> ShrinkConfig:
    """Shrink ``(T, K) x (c*R, K)^T``: one pass over ``x``; split K when rows are too few.

    ``num_adapters``: distinct adapters of the batch; each adds at most one partly filled tile.
    ``full_rank``: every adapter of the batch has the pool rank (a hint: speed only).
    """
    if _override.shrink is not None:
        return _override.shrink
    if pinned():
        small_t = T <= PINNED_SMALL
        return ShrinkConfig(
            _pinned_rows(T),
            16 if cR <= PINNED_SMALL else (64 if cR <= 128 else 128),
            32 if K <= 64 else _pinned_wide(K, 128),
            split_k=2 if T <= 16 and K >= 64 else 1,
            num_stages=1,
            tma=not small_t,  # CPU runs cover both weight paths
        )
    block_n = shrink_column_tile(cR)
    if T > DECODE_ROWS:
        # prefill and mixed batches: 64-row tiles; K steps of 128, 64 in fp32 (shared memory)
        deep_k = 64 if dtype == torch.float32 else 128
        if cR >= 384 and full_rank:
            # 128-wide column tiles read x 3 times instead of 6.  At c*R = 256 and with mixed
            # ranks they were slower, so those keep 64.  Weight tiles through TMA only here,
            # and only with K a multiple of 64: the other rules gained nothing from TMA and
            # lost with K off a multiple of 64 (benchmarks/results/2026-11-29-h200-tma/)
            tma = K % 64 == 0
            return ShrinkConfig(64, 128, 64, split_k=1, num_warps=4, num_stages=4, tma=tma)
        if cR <= block_n:
            # one column tile: 64-row tiles read the weights half as often as 32-row ones, and
            # K split in two keeps two programs per row tile
            # (benchmarks/results/2026-11-29-h200-split/)
            return ShrinkConfig(64, block_n, deep_k, split_k=2, num_warps=4, num_stages=3)
        if full_rank and _tiles(T, 64) * _tiles(cR, block_n) > sm_count(device):
            # more programs than SMs: 64-deep K steps (64 KB of shared memory, three programs
            # per SM instead of one).  Not with mixed ranks, whose programs mostly end at once
            return ShrinkConfig(64, block_n, 64, split_k=1, num_warps=4, num_stages=4)
        return ShrinkConfig(64, block_n, deep_k, split_k=1, num_warps=4, num_stages=4)
    # decode: 16-row tiles, K split until the grid (busy tiles x splits) fills the chip; busy
    # row tiles: at least one per adapter, at least T / 16
    tiles = max(_tiles(T, 16), min(num_adapters, T)) * _tiles(cR, block_n)
    split_k = 1
    # split up to one wave of programs, at most 8 ways, each split at least 512 deep
    while split_k < 8 and 2 * tiles * split_k <= sm_count(device) and K // split_k >= 512:
        split_k *= 2
    block_k = 64 if dtype == torch.float32 else (128 if split_k > 1 else 256)
    return ShrinkConfig(
        16,
        block_n,
        block_k,
        split_k=split_k,
        num_warps=4,
        num_stages=3 if block_k == 256 else 4,
    )


def shrink_column_tile(cR: int) -> int:
    """The GPU rule's shrink column tile below ``c*R = 384``: ``c*R`` rounded up to a power of
    two, within 16..64."""
    return max(16, min(64, triton.next_power_of_2(cR)))


DECODE_SWEEP_TILES = 20  # decode row tiles from which rank-128 programs sweep column tiles
DECODE_MANY_TILES = 64  # ... and from which every rank does


# shared memory a launch may stage (H100 and H200 allow 227 KiB per block; room left for the
# compiler's own): the expand's weight tiles, one per stage, and its input tile
SHARED_MEMORY_BUDGET = 200 * 1024


def expand_config(T: int, R: int, slice_width: int, positions: int | None = None) -> ExpandConfig:
    """Expand ``(T, r) x (N, r)^T`` per slice: wide column tiles over adapter-grouped rows.

    ``positions``: the length ``P`` of the batch's grouped layout (``T`` when not given); on
    decode batches it bounds the number of 16-row tiles, about one per adapter.  The rule's
    tiles are narrowed (then unstaged) until float32 tiles fit :data:`SHARED_MEMORY_BUDGET`:
    at rank 256 a 256-wide float32 tile needs 272 KiB, past what a block may stage.
    """
    if _override.expand is not None:
        return _override.expand
    config = _expand_rule(T, R, slice_width, positions)
    if pinned():
        return config
    return _within_shared_memory(config, rank_block(R))


def _within_shared_memory(config: ExpandConfig, block_r: int) -> ExpandConfig:
    """``config`` with ``block_n`` halved, then ``num_stages`` lowered, until its float32
    tiles fit the budget: one weight tile per stage when a program sweeps several column tiles
    (the loads are pipelined), else one, and the input tile (the measured need of the failing
    launch: 256 x 256 + 16 x 256 float32 = 272 KiB)."""

    def need(c: ExpandConfig) -> int:
        stages = max(c.num_stages, 1) if c.n_per_prog > 1 else 1
        return 4 * block_r * (stages * c.block_n + c.block_m)

    while need(config) > SHARED_MEMORY_BUDGET and config.block_n > 16:
        config = dataclasses.replace(config, block_n=config.block_n // 2)
    while need(config) > SHARED_MEMORY_BUDGET and config.num_stages > 1:
        config = dataclasses.replace(config, num_stages=config.num_stages - 1)
    return config


def _expand_rule(T: int, R: int, slice_width: int, positions: int | None) -> ExpandConfig:
    """The launch rule before the shared-memory bound (:func:`expand_config`)."""
    if pinned():
        block_n = 32 if slice_width <= 32 else _pinned_wide(slice_width, 128)
        return ExpandConfig(
            _pinned_rows(T),
            block_n,
            num_stages=1,
            # two column tiles per program when the slice has them: the prefetching sweep runs
            n_per_prog=2 if slice_width > block_n else 1,
        )
    # 16-row tiles for decode (about one per adapter), wider column tiles for larger ranks
    if T <= DECODE_ROWS:
        tiles = triton.cdiv(positions or T, 16)
        if tiles >= DECODE_MANY_TILES and R <= 16:
            # many narrow adapters: 128-wide column tiles, 4 per program.  Faster at r <= 16
            # only; it lost at r = 32 and at pool rank 128
            # (benchmarks/results/2026-11-29-h200-decode/)
            return ExpandConfig(16, 128, num_warps=4, num_stages=3, n_per_prog=4)
        if tiles >= DECODE_MANY_TILES:
            # weight-read bound (many adapters, or wide ones): 8 column tiles per program with
            # pipelined weight loads
            return ExpandConfig(16, 64, num_warps=4, num_stages=3, n_per_prog=8)
        if tiles >= DECODE_SWEEP_TILES and R >= 64:
            # 20..63 row tiles at rank >= 64: 4 column tiles per program, twice the programs
            # of 8 (the grid stays full while each program still pipelines its weight loads)
            return ExpandConfig(16, 64, num_warps=4, num_stages=3, n_per_prog=4)
        # few row tiles: one column tile per program keeps the grid full.  One rank bucket:
        # with few adapters the extra buckets cost more than the narrower tiles save
        if R > 32:
            return ExpandConfig(16, 256, num_warps=8, rank_buckets=1)
        return ExpandConfig(16, 128, rank_buckets=1)
    block_m = 32 if R <= 32 else 64
    block_n = 128 if R <= 64 else 64
    # a program sweeps 8 column tiles: its input tile is loaded once, and the base and weight
    # loads pipeline (benchmarks/results/2026-11-28-h200-trust/)
    return ExpandConfig(block_m, block_n, num_warps=4, num_stages=3, n_per_prog=8)


def rank_block(R: int) -> int:
    """The padded rank tile: a power of two >= 16 (``tl.dot`` needs 16)."""
    return max(16, triton.next_power_of_2(R))
