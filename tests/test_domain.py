"""Declared shape domains (``Capabilities.domain``): drawn cases are moved inside, hand-built
ones outside are left out and counted, the report states the domain with its verdict, and a
backend that fails only outside its domain passes while one that fails inside it does not."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.domain import outside, project
from conformance.engine import run_plan
from conformance.profiles import PROFILES
from conformance.report import verdict_line
from conformance.strategies import cases
from lora_ref import Capabilities, Domain, ReferenceLoRABackend

DOMAIN = Domain(K_min=16, K_multiple=16, N_multiple=8, rank_multiple=8, rank_max=64,
                slots_max=6, segments_max=12, dense_only=True,
                wide_expand_input=False)  # fmt: skip
CHECKS = ("diff", "metamorphic", "bad_input", "lifecycle")


class _Shapes(ReferenceLoRABackend):
    """The reference, recording the shapes of every valid call it computes."""

    capabilities = Capabilities(float32_matmul="ieee", domain=DOMAIN)
    seen: ClassVar[list[tuple[int | None, tuple[int, ...], int, int, tuple[int, ...]]]] = []

    def _note(self, K: int | None, widths: tuple[int, ...], R: int, *tensors) -> None:
        assert all(t is None or t.is_contiguous() for t in tensors)
        info, summary = self._batch()
        ranks = tuple(info.lora_ranks.tolist())
        type(self).seen.append((K, widths, R, summary.num_segments, ranks))

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        self._note(x.shape[1], (), weights.shape[1] // stack_num, x, weights)
        return out

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        out = super().run_lora_b_sgemm(x, weights, base_output)
        assert x.shape[1] == weights.shape[2]  # wide_expand_input=False
        self._note(None, (weights.shape[1],), weights.shape[2], x, weights, base_output)
        return out

    def run_qkv_lora(self, x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim,
                     base_output=None):  # fmt: skip
        out = super().run_qkv_lora(x, qkv_lora_a, qkv_lora_b, output_offset, max_qkv_out_dim,
                                   base_output)  # fmt: skip
        widths = tuple(b - a for a, b in itertools.pairwise(output_offset.tolist()))
        self._note(x.shape[1], widths, qkv_lora_a.shape[1] // 3, x, qkv_lora_a, base_output)
        return out

    def run_gate_up_lora(self, x, gate_up_lora_a, gate_up_lora_b, base_output=None):
        out = super().run_gate_up_lora(x, gate_up_lora_a, gate_up_lora_b, base_output)
        n = out.shape[1] // 2
        self._note(x.shape[1], (n, n), gate_up_lora_a.shape[1] // 2, x, gate_up_lora_a)
        return out


class _WrongOutside(ReferenceLoRABackend):
    """Doubles its LoRA term when K is not a multiple of 16: a bug outside ``DOMAIN`` only."""

    capabilities = _Shapes.capabilities

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        return out * 2 if x.shape[1] % 16 else out


class _WrongInside(_WrongOutside):
    """Doubles its LoRA term when K is 16 or more: a bug inside ``DOMAIN``."""

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        out = ReferenceLoRABackend.run_lora_a_sgemm(self, x, weights, stack_num)
        return out * 2 if x.shape[1] >= 16 and x.shape[0] else out


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.sampled_from(("shrink", "expand", "qkv", "gate_up")).flatmap(
    lambda op: cases(op, "float32", PROFILES["dev"])))  # fmt: skip
def test_a_projected_case_lies_inside_and_the_whole_space_changes_nothing(case):
    moved = project(case, DOMAIN)
    assert moved is not None and outside(moved, DOMAIN) is None
    assert moved.op == case.op and moved.dtype == case.dtype and moved.seed == case.seed
    assert project(case, Domain()) is case


def test_every_call_a_run_makes_lies_inside_the_domain(tmp_path: Path):
    _Shapes.seen.clear()
    records = run_plan(_Shapes, "shapes", profile="ci", failures_dir=tmp_path, shrink=False,
                       dtypes=("float32",), checks=CHECKS, max_examples=12)  # fmt: skip
    assert all(r.outcome == "pass" for r in records), [(r.id, r.failure) for r in records]
    assert len(_Shapes.seen) > 100
    for K, widths, R, segments, ranks in _Shapes.seen:
        assert K is None or (K >= 16 and K % 16 == 0), K
        assert all(w % 8 == 0 for w in widths), widths
        assert R % 8 == 0 and R <= 64 and all(r % 8 == 0 for r in ranks), (R, ranks)
        assert len(ranks) <= 6 and segments <= 12
    assert sum(r.outside_domain for r in records) > 0  # hand-built corners it leaves out


def test_a_bug_outside_the_domain_passes_and_one_inside_fails(tmp_path: Path):
    kw = dict(profile="ci", failures_dir=tmp_path, shrink=False, ops=("shrink",),
              dtypes=("float32",), checks=("diff",), max_examples=20)  # fmt: skip
    assert [r.outcome for r in run_plan(_WrongOutside, "outside", **kw)] == ["pass"]
    assert [r.outcome for r in run_plan(_WrongInside, "inside", **kw)] == ["fail"]
    # the same outside bug, with no domain declared, is caught
    whole = type("Whole", (_WrongOutside,), {"capabilities": Capabilities(float32_matmul="ieee")})
    assert [r.outcome for r in run_plan(whole, "whole", **kw)] == ["fail"]


def test_the_verdict_names_the_domain():
    doc = {"verdict": "PASS", "settings": {"domain": DOMAIN.describe()},
           "totals": {"outside_domain": 7}}  # fmt: skip
    assert verdict_line(doc) == (
        "PASS within K >= 16, K % 16 == 0, N % 8 == 0, rank % 8 == 0, R <= 64, slots <= 6, "
        "segments <= 12, dense tensors only, expand x exactly R wide (7 hand-built cases "
        "outside it not run)"
    )
    assert verdict_line({"verdict": "FAIL", "settings": {"domain": None}}) == "FAIL"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("K_multiple", 0, "Domain.K_multiple: expected >= 1"),
     ("N_min", -1, "Domain.N_min: expected >= 0"),
     ("rank_max", 0, "Domain.rank_max: expected None or >= 1")],
)  # fmt: skip
def test_a_bad_domain_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(Domain(), **{field: value})
    with pytest.raises(ValueError, match=r"Capabilities\.domain: expected a lora_ref\.Domain"):
        Capabilities(domain={"K_min": 16})  # type: ignore[arg-type]
