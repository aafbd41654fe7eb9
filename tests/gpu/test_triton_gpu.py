"""The Triton backend compiled on a GPU: a larger grid, CUDA-graph replay, no host sync,
and 64-bit addressing.  Skipped without CUDA; run on the device machine (see
benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.case import Case
from conformance.checks.cuda_graph import check_cuda_graph
from conformance.checks.diff import check_diff
from conformance.names import stack_count
from conformance.profiles import PROFILES
from conformance.strategies import cases
from lora_ref import get_backend_from_name, make_batch_info

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
OPS = ["shrink", "expand", "qkv", "gate_up"]
DTYPES = ["float16", "bfloat16", "float32"]


@pytest.fixture(scope="module")
def triton_backend():
    return get_backend_from_name("triton")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_gpu_grid(op, dtype, triton_backend):
    strategy = cases(op, dtype, PROFILES["dev"], permutation=True)

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def run(data):
        case = data.draw(strategy)
        result = check_diff(triton_backend, case, CUDA)
        assert result.ok, "\n".join([*result.failures, case.describe()])

    run()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_gpu_llama_shapes(op, dtype, triton_backend):
    """Real model sizes and the production configurations (prefill + decode rows in one batch)."""
    N, n_kv = (4096, 1024) if op == "qkv" else (14336 if op == "gate_up" else 4096, 0)
    case = Case(
        op=op,
        dtype=dtype,
        seg_lens=(300, 1, 1, 0, 129, 1),
        weight_indices=(0, 1, 2, 3, 1, 0),
        lora_ranks=(16, 64, 0, 8),
        scalings=(2.0, 0.5, 1.0, -1.0),
        R=64,
        K=4096,
        N=N,
        n_kv=n_kv,
        stack=stack_count(op),
        permute=True,
        has_base=True,
        seed=11,
    )
    result = check_diff(triton_backend, case, CUDA)
    assert result.ok, "\n".join(result.failures)


@pytest.mark.parametrize("op", OPS)
def test_gpu_cuda_graph_replay(op, triton_backend):
    strategy = cases(op, "bfloat16", PROFILES["dev"], permutation=False).filter(lambda c: c.T > 0)

    @settings(max_examples=15, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def run(data):
        result = check_cuda_graph(triton_backend, data.draw(strategy))
        assert result.ok, "\n".join(result.failures)

    run()


def test_gpu_run_methods_do_not_sync(triton_backend):
    """No host sync in shrink, expand and gate_up; qkv reads its four offsets on an eager call
    (to validate them) and not while a graph is captured (test_gpu_cuda_graph_replay)."""
    info = make_batch_info([5, 0, 9], [1, 0, 1], [0, 8], [1.0, 0.5], device=CUDA, capacity=6)
    b = triton_backend(batch_info=info)
    x = torch.randn(14, 256, device=CUDA, dtype=torch.bfloat16)
    A = torch.randn(2, 24, 256, device=CUDA, dtype=torch.bfloat16)
    B = torch.randn(2, 96, 8, device=CUDA, dtype=torch.bfloat16)
    offsets = torch.tensor([0, 64, 80, 96], dtype=torch.int32, device=CUDA)
    base = torch.randn(14, 96, device=CUDA, dtype=torch.bfloat16)
    b.run_qkv_lora(x, A, B, offsets, 64, base)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        inter = b.run_lora_a_sgemm(x, A, 3)
        b.run_lora_b_sgemm(inter[:, :8], B, base)
        b.run_gate_up_lora(x, A[:, :16], B, base)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_gpu_64bit_row_addressing(triton_backend):
    """T*N and T*K pass 2**31 elements: the last rows must land where they belong."""
    K = N = 4096
    T = 2**31 // N + 64
    tail = 48
    info = make_batch_info([T - tail, tail], [0, 1], [0, 16], [1.0, 0.5], device=CUDA)
    b = triton_backend(batch_info=info)
    x = torch.zeros(T, K, device=CUDA, dtype=torch.bfloat16)
    x[-tail:] = torch.randn(tail, K, device=CUDA, dtype=torch.bfloat16)
    A = torch.randn(2, 16, K, device=CUDA, dtype=torch.bfloat16) / 64
    B = torch.randn(2, N, 16, device=CUDA, dtype=torch.bfloat16) / 4
    inter = b.run_lora_a_sgemm(x, A)
    want = x[-tail:].double() @ A[1].double().T
    torch.testing.assert_close(inter[-tail:].double(), want, atol=5e-2, rtol=2e-2)
    del x
    base = torch.zeros(T, N, device=CUDA, dtype=torch.bfloat16)
    out = b.run_lora_b_sgemm(inter, B, base)
    want_out = 0.5 * (inter[-tail:].double() @ B[1].double().T)
    torch.testing.assert_close(out[-tail:].double(), want_out, atol=5e-2, rtol=2e-2)
    assert not out[: T - tail].any(), "rank-0 rows stay zero"


def test_gpu_64bit_slot_addressing(triton_backend):
    """L*c*R*K passes 2**31: the last slot of a large pool must be read at the right offset."""
    K, R = 4096, 64
    L = 2**31 // (R * K) + 2
    info = make_batch_info([32], [L - 1], [R] * L, [1.0] * L, device=CUDA)
    b = triton_backend(batch_info=info)
    A = torch.empty(L, R, K, device=CUDA, dtype=torch.bfloat16)
    A[: L - 1].fill_(float("nan"))
    A[L - 1] = torch.randn(R, K, device=CUDA, dtype=torch.bfloat16) / 64
    x = torch.randn(32, K, device=CUDA, dtype=torch.bfloat16)
    out = b.run_lora_a_sgemm(x, A)
    torch.testing.assert_close(out.double(), x.double() @ A[L - 1].double().T, atol=5e-2, rtol=2e-2)


def test_gpu_h200_regression_case_with_the_shipped_launch(triton_backend):
    """The H200 campaign's unwritten-row case (caught on a multi-program-per-tile expand launch,
    since removed) passes with the launch rules that ship."""
    from conformance.checks import CHECKS, Example
    from conformance.failures import load_failure

    doc = load_failure(Path(__file__).parents[1] / "data" / "h200_expand_fp16_unwritten_row.json")
    example = Example(doc["case"], doc["params"])
    result = CHECKS[doc["check"]].run(triton_backend, example, CUDA)
    assert result.ok, result.failures


def test_gpu_qkv_rank58_in_the_half_rank_tile_with_transposed_b(triton_backend):
    """The H100 thorough campaign's qkv case (2026-12-06): float16, R = 65, ``qkv_lora_b``
    transposed; the rows of its one adapter whose rank (58) is not a multiple of 8 and falls in
    the half-width rank tile came out wrong.  Fails until that path is fixed."""
    from conformance.checks import CHECKS, Example
    from conformance.failures import load_failure

    data = Path(__file__).parents[1] / "data"
    doc = load_failure(data / "h100_qkv_fp16_rank58_transposed_b.json")
    example = Example(doc["case"], doc["params"])
    result = CHECKS[doc["check"]].run(triton_backend, example, CUDA)
    assert result.ok, result.failures


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("op", ["shrink", "qkv"])
def test_gpu_shrink_weight_tiles_through_tma(op, forced, triton_backend, monkeypatch):
    """The shrink's TMA weight path against the oracle on the GPU.  Unforced: a prefill batch at
    full rank 128 with c*R = 384, where the shipped rule takes the descriptor.  Forced (every
    launch with ``tma=True``): adapters of ranks 128, 40 and 0, whose descriptor tiles hold rows
    past ``c*r`` poisoned with NaN, which must reach no stored column."""
    from lora_triton import config
    from lora_triton.kernels import shrink as shrink_kernel

    made = []
    real = shrink_kernel.weight_descriptor
    monkeypatch.setattr(
        shrink_kernel, "weight_descriptor", lambda w, cfg: made.append(real(w, cfg)) or made[-1]
    )
    case = Case(
        op=op,
        dtype="bfloat16",
        seg_lens=(200, 57, 0, 160),
        weight_indices=(0, 1, 2, 1),
        lora_ranks=(128, 128, 128) if not forced else (128, 40, 0),
        scalings=(1.0, 0.5, -2.0),
        R=128,
        K=512,
        N=0 if op == "shrink" else 256,
        n_kv=64 if op == "qkv" else 0,
        stack=stack_count(op, shrink_stack=3),
        permute=True,
        has_base=op != "shrink",
        seed=5,
    ).replace(poison="nan")
    tiles = config.ShrinkConfig(64, 128, 64, num_stages=3, tma=True) if forced else None
    with config.override(shrink=tiles):
        result = check_diff(triton_backend, case, CUDA)
    assert result.ok, "\n".join(result.failures)
    assert made and all(d is not None for d in made), made


@triton.jit
def _late_writer(src_ptr, dst_ptr, n, spins):
    """Let the next kernel launch at once, then spin (about half a millisecond at 200,000 spins:
    longer than the host takes to launch the next op), then copy ``src`` into ``dst``.  A kernel
    launched after this one with programmatic dependent launch reads stale ``dst`` unless it
    waits for this one to finish."""
    tl.extra.cuda.gdc_launch_dependents()
    acc = tl.program_id(0).to(tl.float32)
    for _ in range(spins):
        acc = acc * 0.999 + 1.0
    offs = tl.program_id(0) * 1024 + tl.arange(0, 1024)
    mask = offs < n
    keep = tl.where(acc > -1.0, 1.0, 0.0)  # always 1; keeps the spin from being removed
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask) * keep, mask=mask)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("op", ["shrink", "qkv"])
def test_gpu_dependent_launch_waits_for_the_previous_kernel(op, graph, triton_backend, monkeypatch):
    """On sm_90 and later the kernels launch with programmatic dependent launch.  The input is
    written by a kernel that lets its dependents launch before it writes, and the shrink is the
    next kernel: the result must still be that of the written input, eagerly and in a CUDA
    graph, and equal bit for bit to the same call with dependent launch off
    (``LORA_TRITON_PDL=0``) after a full synchronisation.  (An eager qkv call reads its offsets
    on the host first, which waits for the writer: that case checks the result only.  On an
    H200, 2026-11-30, the three others failed on a copy of the kernels without the wait, in this
    test's first form, which cloned ``base`` between the writer and the op.)"""
    from lora_triton import config

    if torch.cuda.get_device_capability(CUDA)[0] < 9:
        assert not config.dependent_launch(CUDA, "shrink")
        return
    monkeypatch.setenv("LORA_TRITON_PDL", "1")
    modes = {k: config.dependent_launch(CUDA, k) for k in config.PDL_MODES}
    assert modes == config.PDL_MODES, "Hopper and a Triton with grid dependency control"
    T, K, R = 128, 4096, 16
    # not a graph batch: the row layout is built once, on the first call, so the input's late
    # writer is directly followed by the shrink
    info = make_batch_info([2] * 64, list(range(64)), [R] * 64, [0.5] * 64, device=CUDA)
    b = triton_backend(batch_info=info)
    gen = torch.Generator(device=CUDA).manual_seed(3)
    src = torch.randn(T, K, device=CUDA, dtype=torch.bfloat16, generator=gen)
    x = torch.zeros_like(src)
    A = torch.randn(64, 3 * R, K, device=CUDA, dtype=torch.bfloat16, generator=gen) / 64
    B = torch.randn(64, 1536, R, device=CUDA, dtype=torch.bfloat16, generator=gen) / 4
    offsets = torch.tensor([0, 1024, 1280, 1536], dtype=torch.int32, device=CUDA)
    base = torch.randn(T, 1536, device=CUDA, dtype=torch.bfloat16, generator=gen)

    def call(out_base):
        if op == "shrink":
            return b.run_lora_a_sgemm(x, A, 3)
        return b.run_qkv_lora(x, A, B, offsets, 1024, out_base)

    def late_then_call():
        out_base = base.clone()  # before the writer, so that nothing runs between it and the op
        x.zero_()
        _late_writer[(triton.cdiv(x.numel(), 1024),)](src, x, x.numel(), 200_000)
        return call(out_base)

    with monkeypatch.context() as off:
        off.setenv("LORA_TRITON_PDL", "0")
        x.copy_(src)
        torch.cuda.synchronize()
        want = call(base.clone())
        torch.cuda.synchronize()
    late_then_call()  # compile
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            got = late_then_call()
        g.replay()
    else:
        got = late_then_call()
    torch.cuda.synchronize()
    assert torch.equal(got, want), (got - want).abs().max()
