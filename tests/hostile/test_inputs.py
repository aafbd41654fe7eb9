"""Hostile inputs against the built-in backends: every invalid input gets a clear error and
writes nothing; empty dimensions give the defined result; hostile device metadata (written into
CUDA-graph buffers behind the validation's back) never makes a kernel touch memory outside its
tensors.

The probe counts, per backend, what each input led to: a clear error (``ValueError`` or
``TypeError`` naming the argument, what was expected and what came), an unclear error, an
acceptance where an error is due, and modified memory.  The contract wants all but the first at
zero.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from conformance.case import Case
from conformance.checks.bad_input import mutations_for
from conformance.checks.guards import GuardedOutput, changed, guarded_output, snapshot
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import stack_count
from conformance.oracle import expect
from lora_ref import get_backend_from_name, make_batch_info

BACKENDS = ["reference", "triton"]
CPU = torch.device("cpu")


def _case(op: str, **kw) -> Case:
    fields = dict(
        op=op,
        dtype="float32",
        seg_lens=(3, 0, 2),
        weight_indices=(1, 0, 1),
        lora_ranks=(0, 4, 2),
        scalings=(1.0, 0.5, -2.0),
        R=4,
        K=0 if op == "expand" else 12,
        N=0 if op == "shrink" else 8,
        n_kv=4 if op == "qkv" else 0,
        stack=stack_count(op, shrink_stack=2),
        has_base=op != "shrink",
        permute=True,
        seed=3,
    )
    fields.update(kw)
    return Case(**fields)


PROBE_CASES = [_case(op) for op in ("shrink", "expand", "qkv", "gate_up")] + [
    _case(op, permute=False, seed=4) for op in ("expand", "qkv")
]


def _probes():
    for case in PROBE_CASES:
        for m in mutations_for(case):
            yield case, m


def _clear(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, ValueError | TypeError) and "expected" in text and "got" in text


@pytest.mark.parametrize("name", BACKENDS)
def test_every_bad_input_gets_a_clear_error_and_writes_nothing(name):
    backend_cls = get_backend_from_name(name)
    tally: Counter[str] = Counter()
    problems = []
    for case, (label, _, mutate, _witness) in _probes():
        good = build_inputs(case, CPU)
        info, x, args, base = mutate(good, case)
        bad = Inputs(info, x, args, base)
        snap = snapshot(bad)
        base_before = base.clone() if isinstance(base, torch.Tensor) else None
        try:
            backend = backend_cls()
            backend.set_batch_info(info)
            call(backend, case, bad, base)
        except Exception as exc:
            outcome = "clear error" if _clear(exc) else "unclear error"
            detail = f"{type(exc).__name__}: {exc}"
        else:
            outcome, detail = "accepted", ""
        modified = changed(snap) or (
            base_before is not None and not torch.equal(base.nan_to_num(), base_before.nan_to_num())
        )
        if modified:
            outcome = "memory modified"
        tally[outcome] += 1
        if outcome != "clear error":
            problems.append(f"{case.op}: {label}: {outcome} {detail}")
    assert sum(tally.values()) >= 80, tally
    assert tally == Counter({"clear error": sum(tally.values())}), problems


EMPTY = {
    "T=0, bs=0": dict(seg_lens=(), weight_indices=()),
    "T=0, empty segments": dict(seg_lens=(0, 0), weight_indices=(0, 1)),
    "K=0": dict(K=0),
    "N=0": dict(N=0, n_kv=0),
    "R=0": dict(R=0, lora_ranks=(0, 0, 0)),
}


# every (op, empty dimension) that exists: shrink has no N, expand no K
EMPTY_CASES = [
    (op, empty)
    for op in ("shrink", "expand", "qkv", "gate_up")
    for empty in EMPTY
    if not (op == "shrink" and empty == "N=0") and not (op == "expand" and empty == "K=0")
]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(("op", "empty"), EMPTY_CASES)
def test_empty_dimensions_give_the_defined_result(op, empty, name):
    fields = dict(EMPTY[empty])
    if op == "expand":
        fields.pop("K", None)
    case = _case(op, permute=False, **fields)
    inputs = build_inputs(case, CPU)
    exp = expect(case, inputs, "ieee")
    backend = get_backend_from_name(name)()
    backend.set_batch_info(inputs.batch_info)
    base = inputs.base.clone() if inputs.base is not None else None
    out = call(backend, case, inputs, base)
    assert tuple(out.shape) == (case.T, case.out_dim)
    got = torch.where(exp.specified, out.double(), torch.zeros_like(exp.ref))
    torch.testing.assert_close(got, exp.ref, atol=1e-6, rtol=1e-5)


# --- hostile device metadata (CUDA-graph buffers written behind validation's back) ---------


def _graph_batch(case: Case):
    info = make_batch_info(
        case.seg_lens, case.weight_indices, case.lora_ranks, case.scalings,
        permutation=list(reversed(range(case.T))), capacity=6,
    )  # fmt: skip
    return info


HOSTILE = {
    "seg_indptr past T": lambda i: i.seg_indptr.__setitem__(slice(2, None), 10_000),
    "seg_indptr decreasing": lambda i: i.seg_indptr.copy_(torch.tensor([0, 4, 1, 5, 5, 5, 5])),
    "negative seg_indptr": lambda i: i.seg_indptr.__setitem__(1, -1_000),
    "slot 1000": lambda i: i.weight_indices.__setitem__(0, 1000),
    "negative slot": lambda i: i.weight_indices.__setitem__(2, -7),
    "rank above R": lambda i: i.lora_ranks.__setitem__(1, 4 + 50),
    "negative rank": lambda i: i.lora_ranks.__setitem__(1, -3),
    "permutation past T": lambda i: i.permutation.__setitem__(0, 10_000),
    "negative permutation": lambda i: i.permutation.__setitem__(1, -2),
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
def test_triton_kernels_stay_in_bounds_whatever_the_metadata(op, hostile):
    """Validated buffers, then corrupted in place (as a caller that skips refill_batch_info
    could): the kernels clamp, so nothing outside the outputs changes and nothing crashes."""
    case = _case(op, permute=True, seg_lens=(3, 0, 2), weight_indices=(1, 0, 1))
    inputs = build_inputs(case, CPU)
    info = _graph_batch(case)
    backend = get_backend_from_name("triton")()
    backend.set_batch_info(info)
    HOSTILE[hostile](info)
    guard: GuardedOutput | None = (
        guarded_output(inputs.base, "col_slice") if inputs.base is not None else None
    )
    snap = snapshot(inputs._replace(batch_info=info))
    out = call(backend, case, inputs._replace(batch_info=info), guard.view if guard else None)
    assert tuple(out.shape) == (case.T, case.out_dim)
    assert not changed(snap), changed(snap)
    assert guard is None or guard.intact()


@pytest.mark.parametrize("col_align", [1, 8])
@pytest.mark.parametrize(
    "offsets", [[0, -5, 20, 3], [0, 9, 4, 16], [-100, 2, 100, 16], [16, 0, 16, 0]]
)
def test_triton_expand_clamps_hostile_qkv_offsets(offsets, col_align):
    """Inside a graph the offsets are never read on the host: the kernel clamps them (and
    rounds them down to the column alignment the host promised)."""
    from lora_triton.config import expand_config
    from lora_triton.kernels.expand import ExpandPlan, expand
    from lora_triton.kernels.layout import group_rows

    T, N, R = 5, 16, 4
    info = make_batch_info([3, 2], [0, 1], [4, 2], [1.0, -1.0])
    layout = group_rows(info.seg_indptr, info.weight_indices, None, T, 2, 16)
    x = torch.randn(T, 3 * R)
    w = torch.randn(2, N, R)
    guard = guarded_output(torch.randn(T, N), "col_slice")
    plan = ExpandPlan(
        layout=layout, lora_ranks=info.lora_ranks, scalings=info.scalings, num_slices=3,
        slice_width=8, offsets=torch.tensor(offsets, dtype=torch.int32), has_base=True,
        col_align=col_align, config=expand_config(T, R, 8),
    )  # fmt: skip
    before = [t.clone() for t in (x, w)]
    expand(x, w, guard.view, plan)
    assert guard.intact()
    assert all(torch.equal(a, b) for a, b in zip((x, w), before, strict=True))


def test_probe_covers_many_inputs():
    assert len(list(itertools.islice(_probes(), 200))) >= 80


@pytest.mark.parametrize("op", ["shrink", "expand", "qkv", "gate_up"])
def test_every_mutation_of_a_drawn_case_is_invalid(op):
    """Over cases drawn as ``ci`` draws them (small shapes: T = 1, one-column inputs, K = 0
    and every layout included), each mutation the bad_input check applies builds a call that
    is really invalid: its witness holds, and the reference rejects it with a clear error."""
    from hypothesis import HealthCheck, given, settings

    from conformance import profiles
    from conformance.strategies import cases

    ref = get_backend_from_name("reference")
    profile = profiles.get("ci")

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(cases(op, "float32", profile, permutation=True, split_layouts=True))
    def each(case):
        if case.largest_tensor() > 2**18:
            return
        good = build_inputs(case, CPU)
        for label, _, mutate, witness in mutations_for(case):
            info, x, args, base = mutate(good, case)
            assert witness is None or witness((info, x, args, base)), label
            try:
                backend = ref()
                backend.set_batch_info(info)
                call(backend, case, Inputs(info, x, args, base), base)
            except (ValueError, TypeError) as exc:
                assert _clear(exc), (label, exc)
            else:
                raise AssertionError(f"{label}: the reference accepted it")

    each()


def test_the_overlap_witness_tells_overlap_from_adjacency():
    """T = 1 and a one-column input: x and a base that starts right after it are adjacent, not
    overlapping (the false positive the bad_input check once raised)."""
    from conformance.checks.bad_input import _shares_elements

    buf = torch.zeros(1, 4)
    assert not _shares_elements(buf[:, :1], buf[:, 1:])
    assert _shares_elements(buf[:, :1], buf[:, 0:])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("kind", ["sparse", "meta", "negative view"])
def test_tensors_without_plain_storage_get_a_clear_error(name, kind):
    """Sparse tensors, tensors on the meta device and negative views (``.conj().imag``) are
    refused naming the argument, in the batch and in the call alike."""
    backend = get_backend_from_name(name)()
    backend.set_batch_info(make_batch_info([2, 1], [0, 1], [2, 2], [1.0, 0.5]))
    x, w = torch.randn(3, 8), torch.randn(2, 2, 8)
    odd = {"sparse": x.to_sparse(), "meta": x.to("meta"), "negative view": torch._neg_view(x)}
    with pytest.raises(ValueError, match=r"^x: expected .*got"):
        backend.run_lora_a_sgemm(odd[kind], w)
    info = make_batch_info([2, 1], [0, 1], [2, 2], [1.0, 0.5])
    scal = {"sparse": info.scalings.to_sparse(), "meta": info.scalings.to("meta"),
            "negative view": torch._neg_view(info.scalings)}[kind]  # fmt: skip
    info.scalings = scal
    with pytest.raises(ValueError, match=r"^scalings: expected"):
        backend.set_batch_info(info)
        backend.run_lora_a_sgemm(x, w)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("op", ["shrink", "expand"])
def test_two_billion_rows_of_zero_width_are_an_empty_result_at_once(name, op):
    """T = 2^31 - 1 rows with no columns hold no memory: the result is empty, and no launch is
    sized by T (before, Triton's interpreter ran for minutes)."""
    T = 2**31 - 1
    backend = get_backend_from_name(name)()
    backend.set_batch_info(make_batch_info([T], [0], [0], [1.0]))
    x, w = torch.empty(T, 0), torch.empty(1, 0, 0)
    out = backend.run_lora_a_sgemm(x, w) if op == "shrink" else backend.run_lora_b_sgemm(x, w)
    assert tuple(out.shape) == (T, 0)


@pytest.mark.parametrize("op", ["expand", "gate_up"])
def test_rank_zero_rows_keep_a_signalling_nan_bit_for_bit(op):
    """Through float64 a signalling NaN comes back quiet (0x7f800001 -> 0x7fc00001); the rows
    of rank 0 must be base_output's bits."""
    info = make_batch_info([2, 1], [0, 1], [0, 2], [1.0, 1.0])
    N = 4
    base = torch.zeros(3, N, dtype=torch.float32)
    base.view(torch.int32)[:2] = 0x7F800001  # the rank-0 segment's rows: signalling NaNs
    backend = get_backend_from_name("reference")(batch_info=info)
    if op == "expand":
        out = backend.run_lora_b_sgemm(torch.randn(3, 2), torch.randn(2, N, 2), base_output=base)
    else:
        out = backend.run_gate_up_lora(
            torch.randn(3, 5), torch.randn(2, 4, 5), torch.randn(2, N, 2), base_output=base
        )
    assert torch.equal(out[:2].view(torch.int32), base[:2].view(torch.int32))
