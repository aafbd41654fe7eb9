"""Sweep the Triton backend's launch configurations on the cases that miss their targets, timed
like ``lora-conformance bench`` (CUDA-graph replays, rotated inputs), every candidate in the same
run.  Each candidate's output is compared with the shipped rule's before it is timed.

Each sweep of :data:`SWEEPS` asks one question about a launch rule: its candidates (``None``:
the shipped rule, timed beside them), and the cases that decide it.  The answers are in the
results folder each comment names.

Usage (on the device): python3 benchmarks/config_sweep.py OUT_DIR [SWEEP ...]
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch

from conformance.bench.grid import HETERO
from conformance.bench.providers import get_provider
from conformance.bench.runner import Row, machine_info, markdown, write_json
from conformance.bench.timing import rotation_count, time_calls
from conformance.bench.workloads import Workload, make_inputs
from lora_triton import backend, config
from lora_triton.config import ExpandConfig as E
from lora_triton.config import ShrinkConfig as S
from lora_triton.kernels import expand as expand_kernel
from lora_triton.kernels import shrink as shrink_kernel

M = "llama3-8b"
# expand tile shapes: a row tile no taller than the layout's group alignment holds one adapter,
# so the kernels end their adapter loop after one pass (fewer registers); taller tiles come with
# that alignment: (config, align).  Results: benchmarks/results/2026-11-29-h200-speed/
PREFILL_EXPAND = [
    None,
    E(64, 64, 4, 3, 8, rank_buckets=1),
    E(64, 64, 4, 2, 8),
    E(64, 64, 4, 4, 8),
    E(64, 64, 8, 3, 8),
    E(64, 128, 4, 3, 4),
    (E(128, 64, 8, 3, 8), 128),
    (E(128, 64, 8, 2, 8), 128),
    (E(128, 128, 8, 2, 4), 128),
    (E(128, 64, 4, 3, 8), 128),
]
DECODE_EXPAND = [
    None,
    E(16, 64, 4, 3, 8),
    E(16, 64, 4, 4, 8),
    E(16, 128, 4, 3, 4),
    E(16, 128, 4, 3, 8),
]
# shrink K split in prefill: taller or wider tiles (fewer rereads of x and of the weights) that
# still leave programs for every SM.  Results: benchmarks/results/2026-11-29-h200-split/
PREFILL_SHRINK = [
    None,
    S(64, 64, 128, 1, 4, 3),
    S(16, 64, 128, 1, 4, 4),
    S(32, 64, 128, 2, 4, 4),
    S(64, 64, 128, 2, 4, 3),
    S(64, 64, 64, 2, 4, 4),
    S(64, 128, 64, 2, 4, 4),
    (S(128, 64, 64, 2, 4, 4), 128),
    (S(128, 64, 64, 4, 4, 4), 128),
    (S(128, 128, 64, 2, 8, 4), 128),
    (S(128, 128, 64, 4, 8, 4), 128),
]


def _bn(w: Workload) -> int:
    """The shipped rule's column tile for this workload's ``c*R`` (64 at most)."""
    return config.shrink_column_tile(w.dims["c"] * w.pool_rank)


def _old_rule(w: Workload) -> S:
    """The prefill rule the shipped one replaced: 32-row tiles below ``c*R = 64``, K never
    split."""
    return S(64 if w.dims["c"] * w.pool_rank >= 64 else 32, _bn(w), 128, 1, 4, 4)


# the shrink's prefill rule against the one it replaced and its neighbours, on the first grid's
# prefill shrinks, the float16 ones and those of rank 128 (a callable candidate is given the
# workload).  Results: benchmarks/results/2026-11-29-h200-split/
RULE_SHRINK = [
    None,
    _old_rule,
    lambda w: S(64, _bn(w), 128, 2, 4, 4),
    lambda w: S(64, _bn(w), 64, 2, 4, 4),
    lambda w: (S(128, _bn(w), 64, 4, 4, 4), 128),
    S(64, 128, 64, 1, 4, 4),
    S(64, 128, 128, 1, 4, 3),
    S(64, 64, 64, 1, 4, 4),
    lambda w: S(64, _bn(w), 128, 2, 4, 3),
]


def _shipped(w: Workload) -> S:
    """The shipped shrink rule's configuration for this workload."""
    d, ranks = w.dims, w.used_ranks()
    return config.shrink_config(
        w.T, d["K"], d["c"] * w.pool_rank, w.dtype, torch.device("cuda"), len(ranks),
        full_rank=min(ranks) == w.pool_rank,
    )  # fmt: skip


# shrink weight tiles through a TMA descriptor (the shipped rule) against the same rule with
# pointer loads, and wider tiles with TMA.  Results: benchmarks/results/2026-11-29-h200-tma/
TMA_SHRINK = [
    None,
    lambda w: replace(_shipped(w), tma=False),
    S(64, 128, 64, 1, 4, 4, tma=True),
    (S(128, 128, 64, 1, 8, 4, tma=True), 128),
]
_TMA_CASES = [
    (m, op, lay, r)
    for m, rs in ((M, (16, 64, 128, HETERO)), ("odd-fp16", (96,)))
    for op in ("shrink_qkv", "qkv", "gate_up")
    for lay in ("prefill", "mixed")
    for r in rs
] + [(M, op, "prefill", r) for op in ("shrink", "shrink_down") for r in (16, 64)]


# decode with many adapters: a split rule that gives one wave of programs at 8 and 32 adapters
# leaves one program per SM at 64.  Candidates: more K splits (more weight bytes in flight), TMA
# weight tiles, deeper pipelines; for the expand, 128-wide column tiles swept 4 at a time.
# Results: benchmarks/results/2026-11-29-h200-decode/
def _split(w: Workload, times: int, block_k: int = 128, **kw) -> S:
    shipped = _shipped(w)
    return replace(shipped, split_k=min(16, shipped.split_k * times), block_k=block_k, **kw)


DECODE_SHRINK = [
    None,
    lambda w: _split(w, 2),
    lambda w: _split(w, 4),
    lambda w: _split(w, 4, block_k=64, num_stages=6),
    lambda w: replace(_shipped(w), tma=True),
    lambda w: _split(w, 2, tma=True),
    lambda w: _split(w, 4, tma=True),
    lambda w: _split(w, 2, num_warps=2),
]
DECODE_EXPAND_WIDE = [
    None,
    E(16, 128, 4, 3, 4),
    E(16, 128, 4, 3, 2),
    E(16, 128, 4, 4, 4),
    E(16, 64, 4, 3, 4),
    E(16, 256, 8, 3, 2),
]
_DECODE_CASES = (
    [(M, op, "decode128x64", r) for op in ("shrink_qkv", "qkv", "gate_up") for r in (16, HETERO)]
    + [(M, "shrink_qkv", "decode128x64", 128), (M, "gate_up", "decode128x64", 128)]
    + [(M, op, "decode256-rank0", r) for op in ("shrink_qkv", "qkv") for r in (16, 128, HETERO)]
    + [(M, op, lay, r) for op in ("qkv", "gate_up", "expand") for lay in ("decode64", "decode256")
       for r in (16, 64)]
)  # fmt: skip


# the expand's base tiles loaded two column tiles ahead instead of one (ExpandConfig.prefetch),
# on the shipped rule and with 8 warps, and none ahead.  A dict candidate: these fields replaced
# in whatever the shipped expand rule picks.  Not yet run on a GPU
PREFETCH_EXPAND = [
    None,
    {"prefetch": 0},
    {"prefetch": 2},
    {"prefetch": 2, "num_warps": 8},
    {"prefetch": 2, "num_stages": 2},
]
_PREFETCH_PREFILL = [
    (M, op, lay, r)
    for op in ("qkv", "gate_up")
    for lay in ("prefill", "mixed")
    for r in (16, 64, 128, HETERO)
] + [("odd-fp16", op, lay, 96) for op in ("qkv", "gate_up") for lay in ("prefill", "mixed")]
_PREFETCH_DECODE = [
    (M, op, lay, r)
    for op in ("qkv", "gate_up")
    for lay, rs in (("decode128x64", (8, 16, 32, 128, HETERO)), ("decode256-rank0", (16, 128)),
                    ("decode256", (64,)))
    for r in rs
]  # fmt: skip
# the prefill shrink's pipeline depth: the batch-invariant mode's rule (three stages) took 27.7
# against 35.9 us on mixed-rank shrink_qkv (H100, 2026-12-07, benchmarks/results/
# 2026-12-07-h100-invariance/): 64x128 tiles of x and of the weights are 32 KB a stage, so three
# stages let two programs share an SM where four do not.  Candidates: the shipped rule with 3 and
# 2 stages, and the invariant rule.  Not yet run on a GPU
STAGES_SHRINK = [
    None,
    {"num_stages": 3},
    {"num_stages": 2},
    lambda w: config.invariant_shrink_config(w.dims["K"], w.dims["c"] * w.pool_rank, w.dtype),
]
_STAGES_CASES = [
    (M, op, lay, r)
    for op in ("shrink_qkv", "qkv", "gate_up")
    for lay in ("prefill", "mixed")
    for r in (16, 64, 128, HETERO)
] + [("odd-fp16", op, lay, 96) for op in ("shrink_qkv", "qkv", "gate_up")
     for lay in ("prefill", "mixed")]  # fmt: skip
SWEEPS = {
    "stages_a": ("shrink", STAGES_SHRINK, _STAGES_CASES[::2]),
    "stages_b": ("shrink", STAGES_SHRINK, _STAGES_CASES[1::2]),
    "prefetch_prefill": ("expand", PREFETCH_EXPAND, _PREFETCH_PREFILL),
    "prefetch_decode": ("expand", PREFETCH_EXPAND, _PREFETCH_DECODE),
    "decode_shrink": ("shrink", DECODE_SHRINK, [c for c in _DECODE_CASES if c[1] != "expand"]),
    "decode_expand": (
        "expand", DECODE_EXPAND_WIDE, [c for c in _DECODE_CASES if "shrink" not in c[1]]
    ),
    "tma_a": ("shrink", TMA_SHRINK, _TMA_CASES[::2]),
    "tma_b": ("shrink", TMA_SHRINK, _TMA_CASES[1::2]),
    "expand": (
        "expand",
        PREFILL_EXPAND,
        [(M, "gate_up", "prefill", 128), (M, "qkv", "prefill", 128),
         (M, "gate_up", "prefill", HETERO), (M, "qkv", "mixed", HETERO),
         (M, "gate_up", "mixed", 128), ("odd-fp16", "gate_up", "prefill", 96),
         (M, "gate_up", "prefill", 16), (M, "qkv", "prefill", 16)],
    ),
    "decode": (
        "expand",
        DECODE_EXPAND,
        [(M, "gate_up", "decode128x64", HETERO), (M, "qkv", "decode128x64", HETERO),
         (M, "gate_up", "decode128x64", 16), (M, "qkv", "decode128x64", 16),
         (M, "gate_up", "decode128x64", 128), (M, "qkv", "decode64", 16),
         (M, "gate_up", "decode256", 64)],
    ),
    "shrink": (
        "shrink",
        PREFILL_SHRINK,
        [(M, "shrink_qkv", "prefill", 16), (M, "shrink_qkv", "mixed", 16),
         (M, "shrink_qkv", "prefill", 128), (M, "shrink_qkv", "mixed", 128),
         (M, "qkv", "prefill", 128), (M, "shrink_qkv", "prefill", HETERO),
         (M, "gate_up", "prefill", 128)],
    ),
    "rules2": (
        "shrink",
        RULE_SHRINK,
        [(M, "qkv", "prefill", 64), (M, "qkv", "mixed", 64), (M, "shrink_qkv", "prefill", 64),
         (M, "shrink_qkv", "mixed", 64), (M, "gate_up", "prefill", 64),
         (M, "gate_up", "mixed", 64), (M, "shrink_down", "prefill", 64),
         (M, "shrink_down", "mixed", 16), (M, "gate_up", "prefill", 128),
         (M, "gate_up", "mixed", 128), (M, "shrink_qkv", "prefill", HETERO),
         (M, "shrink_qkv", "mixed", HETERO), ("odd-fp16", "shrink_qkv", "mixed", 96),
         ("odd-fp16", "qkv", "mixed", 96), ("odd-fp16", "gate_up", "mixed", 96)],
    ),
    "rules": (
        "shrink",
        RULE_SHRINK,
        [(M, "shrink_qkv", "prefill", 16), (M, "shrink_qkv", "mixed", 16),
         (M, "shrink", "prefill", 16), (M, "shrink", "mixed", 16),
         (M, "shrink", "prefill", 64), (M, "shrink", "mixed", 64),
         (M, "gate_up", "prefill", 16), (M, "gate_up", "mixed", 16), (M, "qkv", "prefill", 16),
         (M, "shrink_down", "prefill", 16), ("odd-fp16", "shrink_qkv", "prefill", 96),
         ("odd-fp16", "qkv", "prefill", 96), ("odd-fp16", "gate_up", "prefill", 96)],
    ),
}  # fmt: skip


def _compiled(kernels) -> dict[int, object]:
    """Every compiled kernel of these Triton functions, by identity (Triton's caches; empty if
    this Triton keeps them elsewhere)."""
    found: dict[int, object] = {}
    for fn in kernels:
        for entry in getattr(fn, "device_caches", {}).values():
            cache = entry[0] if isinstance(entry, tuple) else entry
            for k in getattr(cache, "values", lambda: [])():
                found[id(k)] = k
    return found


def _registers(new) -> str:
    """``regs/spills/shared KB`` of the kernels compiled for one candidate."""
    out = []
    for k in new:
        regs, spills = getattr(k, "n_regs", "?"), getattr(k, "n_spills", "?")
        shared = getattr(getattr(k, "metadata", None), "shared", 0) // 1024
        out.append(f"{regs}r/{spills}s/{shared}K")
    return " [" + " ".join(sorted(set(out))) + "]" if out else ""


def _registers_since(kernels, seen: dict[int, object]) -> str:
    """``_registers`` of the kernels compiled since ``seen = _compiled(kernels)``."""
    return _registers(k for i, k in _compiled(kernels).items() if i not in seen)


def _close(got: torch.Tensor, want: torch.Tensor, w: Workload) -> bool:
    if w.op.startswith("shrink"):
        # a shrink leaves columns past c*r of each row unspecified: compare the rest
        c = w.dims["c"]
        ranks = torch.tensor(w.row_ranks(), device=got.device)
        keep = torch.arange(got.shape[1], device=got.device)[None, :] < c * ranks[:, None]
        got, want = torch.where(keep, got, 0), torch.where(keep, want, 0)
    return bool(torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2))


@contextlib.contextmanager
def _patched_rule(stage: str, fields: object) -> Iterator[None]:
    """With ``fields`` a dict: the backend's ``stage`` rule, with those fields replaced."""
    if not isinstance(fields, dict):
        yield
        return
    name = f"{stage}_config"
    rule = getattr(config, name)
    with mock.patch.object(backend, name, lambda *a, **k: replace(rule(*a, **k), **fields)):
        yield


def sweep(name: str, out: Path, rows: list[Row], machine) -> None:
    stage, candidates, cases = SWEEPS[name]
    make = get_provider("triton")
    kernels = [expand_kernel._expand_kernel, shrink_kernel._shrink_kernel]
    bw = machine.copy_bw_gbs * 1e9
    for model, op, layout, rank in cases:
        w = Workload(model, op, layout, rank)
        first = make_inputs(w, torch.device("cuda"), seed=0)
        sets = [first] + [
            make_inputs(w, torch.device("cuda"), seed=s)
            for s in range(1, rotation_count(first.nbytes()))
        ]
        base = first.base.clone() if first.base is not None else None
        seen = _compiled(kernels)
        want = make(w, first)().clone()  # the shipped rule (fused ops write into base)
        shipped = _registers_since(kernels, seen)
        for candidate in candidates:
            if callable(candidate):
                candidate = candidate(w)
            cfg, align = candidate if isinstance(candidate, tuple) else (candidate, None)
            seen = _compiled(kernels)
            kw = {stage: cfg} if cfg is not None and not isinstance(cfg, dict) else {}
            with config.override(**kw, align=align), _patched_rule(stage, cfg):
                if base is not None:
                    first.base.copy_(base)
                ok = _close(make(w, first)(), want, w)
                us = time_calls([make(w, s) for s in sets]) * 1e6 if ok else None
            floor = w.bytes_moved() / bw * 1e6
            row = Row(w.label, model, op, layout, rank, "triton", us, floor,
                      100 * floor / us if us else None, w.flops() / us / 1e6 if us else None,
                      w.bytes_moved(), w.flops(),
                      f"{cfg or 'shipped rule'}{f' align={align}' if align else ''}"
                      f"{'' if ok else ' WRONG'}"
                      f"{_registers_since(kernels, seen)}"
                      f"{shipped if cfg is None else ''}")  # fmt: skip
            rows.append(row)
            print(f"{w.label:<40} {us or 0:8.1f} us {row.pct_of_copy_bw or 0:4.0f}% {row.note}",
                  flush=True)  # fmt: skip
        del sets, first
        torch.cuda.empty_cache()
        (out / "sweep.md").write_text(markdown(rows, machine))
        write_json(out / "sweep.json", rows, machine)


def main(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(torch.device("cuda"))
    rows: list[Row] = []
    for name in names or list(SWEEPS):
        sweep(name, out, rows, machine)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
