"""Differential tests: every operation and dtype against the float64 oracle.

Each example also poisons garbage regions and fresh allocations, guards ``base_output``, checks
inputs are untouched, rank-0 rows bit-exact, and the call deterministic (see ``checks.check_case``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.case import DTYPES, OPS
from conformance.checks import check_case
from conformance.runner import case_strategy, unsupported


@pytest.mark.lora_conformance
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op", OPS)
def test_matches_reference(
    op, dtype, lora_backend, lora_device, lora_limits, lora_report, lora_stats
):
    reason = unsupported(lora_backend, "diff", dtype, lora_device)
    if reason:
        pytest.skip(reason)
    strategy = case_strategy(lora_backend, "diff", op, dtype, lora_limits)

    @given(data=st.data())
    def run(data):
        case = data.draw(strategy, label="case")
        result = check_case(lora_backend, case, lora_device)
        lora_stats(result)
        assert result.ok, lora_report(result)

    run()
