"""The Triton backend under the interpreter, against the oracle, on hand-picked edges.

Each case names the edge it exists for.  Every case also runs the per-call checks of the
conformance suite: poisoned garbage regions (NaN or huge), guard bands, untouched inputs,
bit-exact rank-0 rows and determinism.
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.case import Case
from conformance.checks.diff import check_diff
from conformance.names import stack_count
from lora_ref import get_backend_from_name, make_batch_info
from lora_ref.runtime import interpreting

TRITON = get_backend_from_name("triton")
# these cases run CPU tensors through Triton's interpreter; on a CUDA machine Triton compiles
# instead (tests/gpu covers that side)
pytestmark = pytest.mark.skipif(
    not interpreting(), reason="CUDA is present, so Triton runs compiled, not interpreted"
)
CPU = torch.device("cpu")
DTYPES = ["float16", "bfloat16", "float32"]


def case(op, **kw):
    defaults = dict(
        seg_lens=(3, 0, 5, 1),
        weight_indices=(1, 0, 1, 2),
        lora_ranks=(0, 4, 7),
        scalings=(1.0, 0.5, -2.0),
        R=8,
        K=37,
        N=19,
        n_kv=0,
        stack=stack_count(op),
        has_base=True,
    )
    defaults.update(kw)
    return Case(op=op, dtype="float16", **defaults)


EDGES = {
    # tails: K and N not multiples of any block, R not a power of two
    "odd_tails": dict(K=37, N=19, R=7, lora_ranks=(0, 4, 7)),
    # rank 1 and rank R in one batch, plus a rank-0 slot
    "rank_1_and_R": dict(R=5, lora_ranks=(1, 5, 0), weight_indices=(0, 1, 2, 1)),
    # empty segments first, middle and last
    "empty_segments": dict(seg_lens=(0, 4, 0, 3, 0), weight_indices=(2, 1, 0, 2, 1)),
    # one slot repeated in every segment, two slots unused
    "repeated_adapter": dict(
        seg_lens=(2, 2, 2),
        weight_indices=(1, 1, 1),
        lora_ranks=(3, 4, 2, 5),
        scalings=(1.0, 2.0, 3.0, 4.0),
    ),
    # slots out of order
    "slots_out_of_order": dict(
        seg_lens=(2, 3, 1, 2),
        weight_indices=(3, 0, 2, 1),
        lora_ranks=(2, 4, 6, 8),
        scalings=(1.0, -1.0, 0.25, 3.0),
    ),
    # a sorted-by-adapter layout: logical rows through a permutation
    "permutation": dict(permute=True),
    # garbage beyond each rank is huge and finite, not NaN
    "huge_garbage": dict(poison="huge"),
    # no base_output: the result starts from zeros
    "base_none": dict(has_base=False),
    # one long segment crossing several row tiles
    "one_long_segment": dict(seg_lens=(40,), weight_indices=(1,)),
    # decode: many length-1 segments, each tile holding several adapters
    "decode": dict(seg_lens=(1,) * 12, weight_indices=(2, 1, 1, 0, 2, 2, 1, 0, 1, 2, 1, 1)),
    # few rows and a long K: the split-K path with its deterministic sum
    "split_k": dict(seg_lens=(2, 3), weight_indices=(1, 2), K=150),
    # scaling zero, negative and large
    "scalings": dict(scalings=(0.0, -25.0, 40.0)),
    # every row has rank 0: nothing to add
    "all_rank_zero": dict(lora_ranks=(0, 0, 0)),
    # the batch holds no rows at all
    "no_rows": dict(seg_lens=(0, 0), weight_indices=(0, 1)),
    # K a multiple of the K block and slice bounds multiples of 16: the unmasked, wide-access paths
    "aligned": dict(K=64, N=32, n_kv=16),
    # slice bounds multiples of 8, not 16 (qkv 24/32/40): the kernel may round them to 8 only
    "aligned8": dict(K=64, N=40, n_kv=8),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("edge", list(EDGES))
@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
def test_triton_edge(op, edge, dtype):
    extra = dict(n_kv=6, N=20) if op == "qkv" and not edge.startswith("aligned") else {}
    if op == "shrink":
        extra["stack"] = 3 if edge in ("odd_tails", "rank_1_and_R") else 2
    c = case(op, **{**extra, **EDGES[edge]}).replace(
        dtype=dtype, seed=zlib.crc32(f"{op}-{edge}".encode()) % 1000
    )
    result = check_diff(TRITON, c, CPU)
    assert result.ok, "\n".join([*result.failures, c.describe()])


@pytest.mark.parametrize(
    ("N", "max_dim", "want"),
    [(6144, 4096, 16), (6000, 4000, 8), (40, 24, 8), (20, 8, 2), (1536, 1024, 16), (7, 3, 1)],
)
def test_qkv_column_align_divides_every_reading(N, max_dim, want):
    """The hint is the largest power of two (<= 16) dividing the slice bounds of both readings
    of ``(N, max_dim)``: a larger one would let the kernel round a valid bound away."""
    from lora_triton.backend import _qkv_column_align
    from lora_triton.kernels.expand import column_align

    assert _qkv_column_align(N, max_dim) == want
    assert column_align(4000) == 16 and column_align(10000, 20) == 4 and column_align(9) == 1


@pytest.mark.parametrize("op", ["qkv", "gate_up", "expand"])
def test_triton_strided_inputs_and_output(op):
    """Kernels use strides: a column slice of x and a row-strided base_output."""
    backend = TRITON(batch_info=make_batch_info([3, 2], [1, 0], [2, 3], [1.5, -0.5]))
    ref = get_backend_from_name("reference")(batch_info=backend.batch_info)
    g = torch.Generator().manual_seed(3)
    wide = torch.randn(5, 40, generator=g).half()
    x = wide[:, 3:36] if op != "expand" else wide[:, 3:6]
    A = torch.randn(2, {"qkv": 9, "gate_up": 6, "expand": 3}[op], 33, generator=g).half()
    N = 12
    B = torch.randn(2, N, 3, generator=g).half()
    store = torch.randn(5, 2 * N, generator=g).half()
    base = store[:, :N]
    want = {
        "qkv": lambda b, o: b.run_qkv_lora(
            x, A, B, torch.tensor([0, 6, 9, 12], dtype=torch.int32), 6, o
        ),
        "gate_up": lambda b, o: b.run_gate_up_lora(x, A[:, :6], B, o),
        "expand": lambda b, o: b.run_lora_b_sgemm(x, B, o),
    }[op]
    expected = want(ref, base.clone())
    got = want(backend, base)
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)
    assert torch.equal(store[:, N:], store[:, N:].clone()), "columns beside the view untouched"


def test_triton_rejects_split_layout_clearly():
    backend = TRITON(batch_info=make_batch_info([1], [0], [1], [1.0]))
    x = torch.randn(1, 4).half()
    with pytest.raises(ValueError, match="qkv_lora_b: expected the stacked"):
        backend.run_qkv_lora(
            x,
            torch.randn(1, 3, 4).half(),
            (torch.randn(1, 1, 2, 1).half(),) * 2,
            torch.tensor([0, 2, 3, 4], dtype=torch.int32),
            2,
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_shrink_rules_fit_shared_memory(dtype, monkeypatch):
    """Every shrink launch the GPU rule picks (prefill, decode, one or many column tiles, full
    or mixed ranks) stages at most 227 KB of tiles, an H100/H200's shared memory per block, and
    splits K into pieces no shorter than one K step."""
    from lora_triton import config

    monkeypatch.setattr(config, "pinned", lambda: False)
    monkeypatch.setattr(config, "sm_count", lambda device: 132)
    size = torch.tensor([], dtype=dtype).element_size()
    for T, K, cR, full in itertools.product(
        (1, 64, 256, 4096, 4160), (4000, 4096, 14336), (16, 48, 64, 192, 256, 288, 384), (1, 0)
    ):
        cfg = config.shrink_config(T, K, cR, dtype, CPU, num_adapters=8, full_rank=bool(full))
        staged = cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * size
        assert staged <= 227 * 1024, (T, K, cR, full, cfg)
        assert K // cfg.split_k >= cfg.block_k, (T, K, cR, full, cfg)


def test_interpreter_config_is_pinned():
    """Small batches get 16-row tiles (multi-tile and split-K paths on small shapes); large
    shapes get large tiles, so the interpreter runs the corner cases in seconds."""
    from lora_triton.config import expand_config, pinned, shrink_config

    assert pinned()
    small = shrink_config(12, 96, 16, torch.bfloat16, CPU)
    assert (small.block_m, small.block_n, small.block_k, small.split_k) == (16, 16, 128, 2)
    assert shrink_config(1024, 4096, 384, torch.bfloat16, CPU).block_m == 64
    assert shrink_config(4096, 4096, 384, torch.bfloat16, CPU).block_m == 256
    assert expand_config(12, 8, 20).block_m == 16 and expand_config(12, 8, 20).block_n == 32
    assert expand_config(4096, 64, 4096).block_n == 128


def test_dependent_launch_modes(monkeypatch):
    """Programmatic dependent launch: never under the interpreter or off CUDA (whatever
    ``LORA_TRITON_PDL`` says); on a device that has it, the default rule, off, or a sweep's
    list of kernels with their modes."""
    from lora_triton.config import PDL_MODES, dependent_launch, pdl_mode

    monkeypatch.setenv("LORA_TRITON_PDL", "layout,shrink")
    assert dependent_launch(CPU, "layout") == 0
    assert [pdl_mode(k, "1") for k in PDL_MODES] == [PDL_MODES[k] for k in PDL_MODES]
    assert {pdl_mode(k, "1") for k in PDL_MODES} == {1, 2}
    assert {pdl_mode(k, "0") for k in PDL_MODES} == {0}
    setting = "layout, shrink:wait,sum"
    assert [pdl_mode(k, setting) for k in ("layout", "shrink", "sum", "expand")] == [1, 2, 1, 0]
    for bad in ("2", "yes", "layout,shrnk", "expand:early"):
        with pytest.raises(ValueError, match=f"LORA_TRITON_PDL: expected 0, 1 or .*got '{bad}'"):
            pdl_mode("layout", bad)


# a decode batch whose 14 rows interleave 5 adapters (one of rank 0)
INTERLEAVED_DECODE = dict(
    seg_lens=(1,) * 14,
    weight_indices=(4, 1, 1, 0, 2, 3, 1, 0, 4, 2, 1, 3, 0, 4),
    lora_ranks=(3, 0, 5, 2, 6),
    scalings=(1.0, 2.0, -0.5, 3.0, 0.25),
)


@pytest.mark.parametrize(
    ("block_m", "align", "seed"), [(16, None, 16), (64, None, 64), (64, 64, 7)]
)
@pytest.mark.parametrize("op", ["shrink", "qkv"])
def test_triton_tiles_holding_several_adapters(op, block_m, align, seed):
    """At the interpreter's alignment (16), a 16-row tile holds one adapter group and a 64-row
    tile holds several and loops over them.  With groups aligned to 64 positions, 64-row tiles
    hold one adapter each and the kernels end their adapter loop after one pass
    (``ONE_ADAPTER``)."""
    from lora_triton import config
    from lora_triton.kernels.layout import RowLayout

    extra = dict(n_kv=6, N=20) if op == "qkv" else dict(stack=2)
    c = case(op, **{**extra, **INTERLEAVED_DECODE}).replace(seed=seed)
    if align:
        assert RowLayout(torch.empty(0), torch.empty(0), align).one_adapter(block_m)
    with config.override(
        config.ShrinkConfig(block_m, 16, 32, num_stages=1),
        config.ExpandConfig(block_m, 32, num_stages=1),
        align=align,
    ):
        if align:
            assert config.row_align(14) == align
        result = check_diff(TRITON, c, CPU)
    assert result.ok, "\n".join([*result.failures, c.describe()])


@pytest.mark.parametrize(("n_per_prog", "prefetch"), [(1, 1), (3, 1), (3, 2), (4, 0)])
@pytest.mark.parametrize("has_base", [True, False])
@pytest.mark.parametrize("op", ["expand", "gate_up", "qkv"])
def test_triton_rank_buckets_and_column_sweeps(op, has_base, n_per_prog, prefetch):
    """Pool rank 64, rank tiles 64, 32 and 16: ranks 64, 32 and 16 fill theirs; 40, 24 and 8
    are multiples of 8 that take the 16-byte masked path (rows past the rank never loaded);
    20 and 5 take the general masked path (garbage loaded, then zeroed); rank 0 is skipped.
    A program sweeps 1, 3 or 4 column tiles (the last group partly past the slice), with base
    tiles loaded 0, 1 or 2 tiles ahead.  Garbage is NaN."""
    from lora_triton import config

    ranks = (64, 40, 32, 24, 20, 16, 8, 5, 0)
    c = case(
        op,
        seg_lens=(3, 2, 4, 1, 1, 2, 2, 3, 2),
        weight_indices=tuple(range(9)),
        lora_ranks=ranks,
        scalings=(0.5, -1.0, 2.0, 0.75, 0.25, 1.5, -2.0, -3.0, 1.0),
        R=64,
        K=24,
        N=100 if op != "qkv" else 90,
        n_kv=30 if op == "qkv" else 0,
        has_base=has_base,
    ).replace(poison="nan")
    cfg = config.ExpandConfig(16, 16, num_stages=1, n_per_prog=n_per_prog, prefetch=prefetch)
    with config.override(expand=cfg):
        result = check_diff(TRITON, c, CPU)
    assert result.ok, "\n".join([*result.failures, c.describe()])


def _layout_model(indptr, weight_indices, perm, T, num_slots, align=16):
    """The grouped layout in plain Python, as ``layout.py`` states it: slots ascending, rows in
    logical order, each group padded to ``align`` positions with slot -1.  For metadata written
    behind validation's back: segment bounds clamped to ``[0, T]`` and lengths to ``>= 0``,
    segments of slots outside ``[0, L)`` skipped, a row whose permutation entry lies outside
    ``[0, T)`` left as padding.  Returns ``(slots, rows)`` before the cut at ``P``."""
    slots, rows = [], []
    for v in range(num_slots):
        group = []
        for j, w in enumerate(weight_indices):
            lo, hi = (min(max(b, 0), T) for b in (indptr[j], indptr[j + 1]))
            if w == v:
                group += [perm[q] if perm else q for q in range(lo, max(hi, lo))]
        pad = -len(group) % align
        slots += [v if 0 <= q < T else -1 for q in group] + [-1] * pad
        rows += group + [0] * pad
    return slots, rows


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    segs=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1, max_size=90),
    permute=st.booleans(),
    align=st.sampled_from([16, 64]),
)
def test_grouped_layout_matches_its_model(segs, permute, align):
    """Every segment buffer shape (more segments than a block, slots past a block, empty and
    long segments) gives the layout of the model, padding past the last group included."""
    from lora_triton.kernels.layout import group_rows, num_positions

    seg_lens = [n for n, _ in segs]
    weights = [w for _, w in segs]
    num_slots = 6 if len(segs) % 2 else 40  # past BLOCK_L=32 slots sometimes
    T = sum(seg_lens)
    perm = list(reversed(range(T))) if permute else None
    indptr = [0, *itertools.accumulate(seg_lens)]
    layout = group_rows(
        torch.tensor(indptr, dtype=torch.int32),
        torch.tensor(weights, dtype=torch.int32),
        torch.tensor(perm, dtype=torch.int32) if perm else None,
        T,
        num_slots,
        align,
    )
    pos_slot, pos_row = layout.pos_slot, layout.pos_row
    assert layout.align == align
    P = num_positions(T, len(segs), num_slots, align)
    slots, rows = _layout_model(indptr, weights, perm, T, num_slots, align)
    assert len(slots) <= P
    tail = P - len(slots)
    assert pos_slot.tolist() == slots + [-1] * tail
    # rows are read only where the slot is not -1
    got_rows = [r for r, s in zip(pos_row.tolist(), pos_slot.tolist(), strict=True) if s >= 0]
    assert got_rows == [r for r, s in zip(rows, slots, strict=True) if s >= 0]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    data=st.data(),
    num_segments=st.integers(1, 70),
    T=st.integers(0, 60),
    align=st.sampled_from([16, 64, 128]),
)
def test_grouped_layout_of_hostile_metadata(data, num_segments, T, align):
    """Metadata written behind validation's back (CUDA-graph buffers): segment bounds out of
    order or out of range, slots out of range, permutation entries out of range.  The layout is
    the clamping model's: every position holds -1 or a slot in ``[0, L)``, every row read is in
    ``[0, T)``."""
    from lora_triton.kernels.layout import group_rows, num_positions

    num_slots = data.draw(st.sampled_from([3, 40]))
    bound = st.integers(-5, T + 5)
    indptr = data.draw(st.lists(bound, min_size=num_segments + 1, max_size=num_segments + 1))
    weights = data.draw(
        st.lists(st.integers(-2, num_slots + 1), min_size=num_segments, max_size=num_segments)
    )
    perm = data.draw(st.none() | st.lists(st.integers(-3, T + 3), min_size=T, max_size=T))
    layout = group_rows(
        torch.tensor(indptr, dtype=torch.int32),
        torch.tensor(weights, dtype=torch.int32),
        torch.tensor(perm, dtype=torch.int32) if perm is not None else None,
        T,
        num_slots,
        align,
    )
    P = num_positions(T, num_segments, num_slots, align)
    slots, rows = _layout_model(indptr, weights, perm, T, num_slots, align)
    got = layout.pos_slot.tolist()
    assert got == (slots + [-1] * P)[:P]  # positions past P are dropped
    got_rows = [r for r, s in zip(layout.pos_row.tolist(), got, strict=True) if s >= 0]
    assert got_rows == [r for r, s in zip(rows[:P], slots[:P], strict=True) if s >= 0]
    assert all(0 <= r < T for r in got_rows)


def test_h200_regression_case_replays_right_in_the_interpreter():
    """The case an H200 campaign caught (a row left unwritten by a multi-program-per-tile
    expand launch, since removed) is computed right by the interpreter."""
    from conformance.checks import CHECKS, Example
    from conformance.failures import load_failure

    doc = load_failure(Path(__file__).parent / "data" / "h200_expand_fp16_unwritten_row.json")
    example = Example(doc["case"], doc["params"])
    result = CHECKS[doc["check"]].run(TRITON, example, CPU)
    assert result.ok, result.failures


@pytest.mark.parametrize("op", ["qkv", "gate_up"])
def test_graph_mode_fused_op_builds_one_layout_per_call(op, monkeypatch):
    """In graph mode the layout is rebuilt at each call; a fused op shares it between stages,
    and the result still matches the reference."""
    from lora_triton import backend as triton_backend

    calls = []
    real = triton_backend.group_rows
    monkeypatch.setattr(triton_backend, "group_rows", lambda *a: calls.append(1) or real(*a))
    info = make_batch_info([3, 2], [1, 0], [2, 3], [1.5, -0.5], capacity=4, use_cuda_graph=True)
    backend = TRITON(batch_info=info)
    ref = get_backend_from_name("reference")(batch_info=info)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 32, generator=g).half()
    c, N = (3, 24) if op == "qkv" else (2, 16)
    A = torch.randn(2, c * 3, 32, generator=g).half()
    B = torch.randn(2, N, 3, generator=g).half()
    if op == "qkv":
        offsets = torch.tensor([0, 8, 16, 24], dtype=torch.int32)
        run = lambda b: b.run_qkv_lora(x, A, B, offsets, 8, None)  # noqa: E731
    else:
        run = lambda b: b.run_gate_up_lora(x, A, B, None)  # noqa: E731
    got = run(backend)
    assert len(calls) == 1
    run(backend)
    assert len(calls) == 2
    torch.testing.assert_close(got, run(ref), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("block_m", [16, 32])
@pytest.mark.parametrize("K", [40, 37])
@pytest.mark.parametrize("op", ["shrink", "qkv", "gate_up"])
def test_triton_shrink_weight_paths(op, K, block_m):
    """Shrink weight tiles through a TMA descriptor and through pointer loads, with NaN in every
    adapter's rows past ``c*r`` (a descriptor tile loads them; they must reach no stored
    column).  float16 with K = 40 has 16-byte strides, so the descriptor is used; K = 37 does
    not, so the shrink falls back to pointer loads.  32-row tiles hold two adapters (the
    layout aligns groups on 16), so the per-adapter loop runs on both paths."""
    from lora_triton import config
    from lora_triton.kernels import shrink as shrink_kernel

    made = []
    real = shrink_kernel.weight_descriptor

    def spy(weights, cfg):
        made.append(real(weights, cfg))
        return made[-1]

    c = case(
        op,
        seg_lens=(7, 12, 0, 9, 5),
        weight_indices=(1, 2, 0, 1, 3),
        lora_ranks=(0, 8, 5, 3),
        scalings=(1.0, 0.5, -2.0, 1.5),
        R=8,
        K=K,
        N=24,
        n_kv=8 if op == "qkv" else 0,
    ).replace(poison="nan")
    cfg = config.ShrinkConfig(block_m, 16, 16, num_stages=1, tma=True)
    with config.override(shrink=cfg), pytest.MonkeyPatch.context() as mp:
        mp.setattr(shrink_kernel, "weight_descriptor", spy)
        result = check_diff(TRITON, c, CPU)
    assert result.ok, "\n".join([*result.failures, c.describe()])
    assert made, "the shrink never asked for a descriptor"
    assert all((d is not None) == (K == 40) for d in made), made


def test_weight_descriptor_needs_16_byte_strides():
    """Descriptors only over weights the hardware can address: last stride 1, other strides
    and the base multiples of 16 bytes."""
    from lora_triton.config import ShrinkConfig
    from lora_triton.kernels.shrink import weight_descriptor

    cfg = ShrinkConfig(16, 16, 16, tma=True)
    w = torch.zeros(3, 24, 64, dtype=torch.float16)
    assert weight_descriptor(w, cfg) is not None
    assert weight_descriptor(w[:, :, 1:57], cfg) is None  # base 2 bytes past alignment
    assert weight_descriptor(w[:, :, :60], cfg) is not None  # strides still 128 bytes
    assert weight_descriptor(torch.zeros(3, 24, 36, dtype=torch.float16), cfg) is None
    assert weight_descriptor(w.transpose(1, 2), cfg) is None  # K not contiguous
