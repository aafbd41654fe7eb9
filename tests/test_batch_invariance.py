"""The ``batch_invariance`` check: it passes a backend whose rows are computed one by one,
fails one whose rows go through a batched float32 product (BLAS gives a row bits that depend
on its place in the product), and is skipped where the property is not declared."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.checks.batch_invariance import REBATCHINGS, rebatch
from conformance.engine import run_plan
from conformance.profiles import PROFILES
from conformance.strategies import cases
from lora_ref import Capabilities, ReferenceLoRABackend

INVARIANT = Capabilities(float32_matmul="ieee", batch_invariant=True)


class _RowByRow(ReferenceLoRABackend):
    """The reference, one row per product: every row's bits are its own."""

    capabilities = INVARIANT

    def _segments(self):
        return [(rows[i : i + 1], w, r, s) for rows, w, r, s in super()._segments()
                for i in range(len(rows))]  # fmt: skip


class _Batched(_RowByRow):
    """Declares batch invariance, but multiplies each segment's rows together in float32."""

    def _segments(self):
        return ReferenceLoRABackend._segments(self)

    def _finish(self, out, dtype, base_output=None):
        return super()._finish(out.float().double(), dtype, base_output)

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        for rows, w, r, _ in ReferenceLoRABackend._segments(self):
            if r:
                a = weights[w, : stack_num * r].float()
                out[rows, : stack_num * r] = (x[rows].float() @ a.T).to(out.dtype)
        return out


@settings(max_examples=30, deadline=None)
@given(cases("expand", "float32", PROFILES["ci"]), st.integers(0, 10**6))
def test_rebatchings_repeat_rows_of_the_case(case, choice):
    case = case.replace(permute=False, layouts={})
    slots = [w for n, w in zip(case.seg_lens, case.weight_indices, strict=True) for _ in range(n)]
    for how in REBATCHINGS:
        again = rebatch(case, how, choice)
        if again is None:
            assert case.T == 0
            continue
        derived, rows = again
        assert len(rows) == derived.T and all(0 <= t < case.T for t in rows)
        mapped = [w for n, w in zip(derived.seg_lens, derived.weight_indices, strict=True)
                  for _ in range(n)]  # fmt: skip
        assert mapped == [slots[t] for t in rows]


def test_the_check_passes_row_by_row_and_fails_batched_float32(tmp_path: Path):
    kw = dict(profile="ci", failures_dir=tmp_path, checks=("batch_invariance",),
              dtypes=("float32",), ops=("shrink",), shrink=False)  # fmt: skip
    assert [r.outcome for r in run_plan(_RowByRow, "row-by-row", **kw)] == ["pass"]
    assert [r.outcome for r in run_plan(_Batched, "batched", **kw)] == ["fail"]
    assert [r.outcome for r in run_plan(ReferenceLoRABackend, "reference", **kw)] == ["skip"]


def test_the_invariant_launch_rules_take_no_batch_size():
    import inspect

    from lora_triton import config

    for rule in (config.invariant_shrink_config, config.invariant_expand_config):
        assert not {"T", "num_adapters", "positions"} & set(inspect.signature(rule).parameters)
