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
# which wait but let the next kernel launch only as they end.  H200, 2026-11-30
# (results/2026-11-30-h200-pdl/), against no PDL on the same GPU: decode 4.1% faster over 43
# cases (geometric mean; qkv decode128x64 r=16 22.3 -> 20.3 us, gate_up decode64 r=16 14.1 ->
# 13.0 us), prefill and mixed 1.4% over 18.  Every kernel in mode 1 lost up to 12 us where a
# shrink or an expand let its dependents in early (gate_up decode128x64 r=8 44.9 -> 57.7 us,
# shrink_qkv mixed r=128 37.0 -> 42.5 us)
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
        # prefill and mixed batches: 64-row tiles (2026-11-28 and 2026-11-29 H200 sweeps,
        # benchmarks/results/); K steps of 128, 64 in fp32 (shared memory)
        deep_k = 64 if dtype == torch.float32 else 128
        if cR >= 384 and full_rank:
            # 128-wide column tiles read x 3 times instead of 6 (shrink_qkv r=128 prefill
            # 52 -> 42 us, mixed 65 -> 43 us).  Slower where Nsight Compute or the bench timed
            # them: c*R = 256 (gate_up r=128 45 -> 54 us) and ranks 8..128 in one batch
            # (shrink_qkv prefill 22 -> 40 us), so those keep 64.  Weight tiles through TMA:
            # shrink_qkv r=128 prefill 42.1 -> 37.7 us, mixed 42.0 -> 37.4 us.  The other rules
            # gained nothing from it, and lost up to 0.9 us at c*R <= 64 and 4 us on float16
            # with K = 4000 (results/2026-11-29-h200-tma/), so K off a multiple of 64 keeps
            # pointer loads
            tma = K % 64 == 0
            return ShrinkConfig(64, 128, 64, split_k=1, num_warps=4, num_stages=4, tma=tma)
        if cR <= block_n:
            # one column tile: 64-row tiles read the weights half as often as 32-row ones, and
            # K split in two keeps two programs per row tile.  shrink_qkv r=16: prefill
            # 17.0 -> 16.1 us, mixed 26.1 -> 17.4 us (results/2026-11-29-h200-split/)
            return ShrinkConfig(64, block_n, deep_k, split_k=2, num_warps=4, num_stages=3)
        if full_rank and _tiles(T, 64) * _tiles(cR, block_n) > sm_count(device):
            # more programs than SMs: 64-deep K steps (64 KB of shared memory, three programs
            # per SM instead of one).  float16 K=4000 r=96: shrink_qkv prefill 50.2 -> 40.4 us.
            # Not with mixed ranks, whose programs mostly end at once
            return ShrinkConfig(64, block_n, 64, split_k=1, num_warps=4, num_stages=4)
        return ShrinkConfig(64, block_n, deep_k, split_k=1, num_warps=4, num_stages=4)
    # decode: 16-row tiles, K split until the grid (busy tiles x splits) fills the chip; busy
    # row tiles: at least one per adapter, at least T / 16
    tiles = max(_tiles(T, 16), min(num_adapters, T)) * _tiles(cR, block_n)
    split_k = 1
    # the 2026-11-28 sweep: split up to one wave of programs, at most 8 ways
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
    at rank 256 a 256-wide float32 tile needs 272 KiB (H100, 2026-12-06: ``OutOfResources``).
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
    # from the 2026-11-28 H200 sweeps: 16-row tiles for decode, wider for larger ranks
    if T <= DECODE_ROWS:
        tiles = triton.cdiv(positions or T, 16)
        if tiles >= DECODE_MANY_TILES and R <= 16:
            # many narrow adapters: 128-wide column tiles, 4 per program.  64 adapters,
            # 2026-11-29 (results/2026-11-29-h200-decode/): r=16 qkv 23.4 -> 22.3 us, gate_up
            # 38.7 -> 37.5 us; r=8 qkv 23.5 -> 22.4 us, gate_up 46.1 -> 45.3 us.  It lost at
            # r=32 (qkv 30.9 -> 31.8 us, gate_up 54.8 -> 56.6 us) and at pool rank 128 (gate_up
            # ranks 8..128 94.9 -> 105.0 us in the round 9 sweep)
            return ExpandConfig(16, 128, num_warps=4, num_stages=3, n_per_prog=4)
        if tiles >= DECODE_MANY_TILES:
            # weight-read bound (many adapters, or wide ones): 8 column tiles per program with
            # pipelined weight loads.  2026-11-29 bench: 64-adapter gate_up decode r=128
            # 301 -> 170 us, r=16 49 -> 41 us
            return ExpandConfig(16, 64, num_warps=4, num_stages=3, n_per_prog=8)
        if tiles >= DECODE_SWEEP_TILES and R >= 64:
            # 20..63 row tiles at rank >= 64: 4 column tiles per program, twice the programs
            # of 8.  Same run: 32 adapters at r=64, qkv 33.0 -> 30.8 us, gate_up 60.2 -> 56.5
            # us, expand 9.9 -> 8.8 us; rank-0-heavy qkv r=128 24.0 -> 23.2 us, ranks 8..128
            # 22.6 -> 20.9 us; rank-0-heavy gate_up ranks 8..128 lost 28.0 -> 29.0 us.  Before,
            # r=128 swept 8 (8 adapters at r=128 56 -> 36 us against one tile per program) and
            # r=64 took one 256-wide tile
            return ExpandConfig(16, 64, num_warps=4, num_stages=3, n_per_prog=4)
        # few row tiles: one column tile per program keeps the grid full.  One rank bucket:
        # at 8 adapters and r=64 the extra buckets cost (gate_up decode64 26 -> 34 us)
        if R > 32:
            return ExpandConfig(16, 256, num_warps=8, rank_buckets=1)
        return ExpandConfig(16, 128, rank_buckets=1)
    block_m = 32 if R <= 32 else 64
    block_n = 128 if R <= 64 else 64
    # benchmarks/results/2026-11-28-h200-trust/sweep.md: a program sweeping 8 column tiles
    # (input tile loaded once, base and weight loads pipelined) took gate_up prefill r=128 from
    # 586 to 300 us and r=16 from 170 to 158 us
    return ExpandConfig(block_m, block_n, num_warps=4, num_stages=3, n_per_prog=8)


def rank_block(R: int) -> int:
    """The padded rank tile: a power of two >= 16 (``tl.dot`` needs 16)."""
    return max(16, triton.next_power_of_2(R))
