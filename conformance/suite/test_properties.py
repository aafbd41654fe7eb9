"""Checks beyond the diff: metamorphic relations, bad inputs, declared features, CUDA graphs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.case import OPS
from conformance.checks import (
    RELATIONS,
    check_bad_inputs,
    check_case,
    check_cuda_graph,
    check_metamorphic,
)
from conformance.runner import case_strategy, unsupported

pytestmark = pytest.mark.lora_conformance


def _require(backend, prop, dtype, device):
    reason = unsupported(backend, prop, dtype, device)
    if reason:
        pytest.skip(reason)


def _any_dtype(backend) -> str:
    return next(
        d
        for d in ("float16", "bfloat16", "float32")
        if _torch_dtype(d) in backend.capabilities.dtypes
    )


def _torch_dtype(name):
    from conformance.case import DTYPES

    return DTYPES[name]


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("op", OPS)
def test_metamorphic(op, relation, lora_backend, lora_device, lora_limits, lora_report):
    """Permuting, splitting, padding with empty segments, or dropping others changes no row."""
    dtype = _any_dtype(lora_backend)
    _require(lora_backend, "metamorphic", dtype, lora_device)
    strategy = case_strategy(lora_backend, "metamorphic", op, dtype, lora_limits)

    @given(data=st.data())
    def run(data):
        case = data.draw(strategy, label="case")
        choice = data.draw(st.integers(0, 10**6), label="choice")
        result = check_metamorphic(lora_backend, case, relation, choice, lora_device)
        assert result.ok, lora_report(result)

    run()


@pytest.mark.parametrize("op", OPS)
def test_bad_inputs(op, lora_backend, lora_device, lora_limits, lora_report):
    """Each invalid input of SPEC.md raises ValueError/TypeError before writing anything."""
    dtype = _any_dtype(lora_backend)
    _require(lora_backend, "bad_input", dtype, lora_device)
    strategy = case_strategy(lora_backend, "bad_input", op, dtype, lora_limits)

    @given(data=st.data())
    def run(data):
        result = check_bad_inputs(lora_backend, data.draw(strategy, label="case"), lora_device)
        assert result.ok, lora_report(result)

    run()


def _diff_with(backend, device, limits, report, op: str, **forced) -> None:
    """The diff check on cases with ``forced`` fields set (a feature the backend declares)."""
    dtype = _any_dtype(backend)
    _require(backend, "diff", dtype, device)
    strategy = case_strategy(backend, "diff", op, dtype, limits).map(lambda c: c.replace(**forced))

    @given(data=st.data())
    def run(data):
        result = check_case(backend, data.draw(strategy, label="case"), device)
        assert result.ok, report(result)

    run()


@pytest.mark.parametrize("op", OPS)
def test_permutation(op, lora_backend, lora_device, lora_limits, lora_report):
    """Sorted-by-adapter layouts: logical rows map to physical rows through ``permutation``."""
    if not lora_backend.capabilities.permutation:
        pytest.skip("backend does not declare permutation support")
    _diff_with(lora_backend, lora_device, lora_limits, lora_report, op, permute=True)


@pytest.mark.parametrize("op", ["qkv", "gate_up"])
def test_split_layouts(op, lora_backend, lora_device, lora_limits, lora_report):
    """The split expand-weight tuples of SPEC.md give the stacked layout's result."""
    if not lora_backend.capabilities.split_layouts:
        pytest.skip("backend does not declare the split expand-weight layouts")
    _diff_with(lora_backend, lora_device, lora_limits, lora_report, op, split_b=True)


@pytest.mark.parametrize("op", OPS)
def test_cuda_graph_replay(op, lora_backend, lora_device, lora_limits, lora_report):
    """Capture once; refill the batch info in place with more and fewer segments; replay."""
    dtype = _any_dtype(lora_backend)
    _require(lora_backend, "cuda_graph", dtype, lora_device)
    strategy = case_strategy(lora_backend, "cuda_graph", op, dtype, lora_limits).filter(
        lambda c: c.T > 0
    )

    @given(data=st.data())
    def run(data):
        result = check_cuda_graph(lora_backend, data.draw(strategy, label="case"))
        assert result.ok, lora_report(result)

    run()
