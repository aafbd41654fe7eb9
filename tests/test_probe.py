"""``probe-domain``: each restriction of a declared domain gets a case just inside and one just
outside it, and the probe says what the backend does outside (works, a clean error, a wrong
result, a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.cli import main
from conformance.domain import outside
from conformance.names import OPS
from conformance.probe import edges, probe
from lora_ref import Capabilities, Domain, ReferenceLoRABackend

NARROW = Domain(K_min=16, K_multiple=16, rank_multiple=8, rank_max=32, slots_max=4,
                segments_max=6, dense_only=True, wide_expand_input=False)  # fmt: skip


class Narrow(ReferenceLoRABackend):
    """Refuses K off a multiple of 16 (a clean error), doubles its LoRA term at ranks off a
    multiple of 8 (a wrong result), and computes everything else right."""

    capabilities = Capabilities(float32_matmul="ieee", domain=NARROW)

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        if x.shape[1] % 16:
            raise ValueError(f"x: expected K a multiple of 16, got {x.shape[1]}")
        out = super().run_lora_a_sgemm(x, weights, stack_num)
        info, _ = self._batch()
        return out * 2 if any(r % 8 for r in info.lora_ranks.tolist()) else out


@settings(max_examples=60, deadline=None)
@given(
    st.builds(Domain, K_min=st.integers(0, 40), K_multiple=st.sampled_from([1, 8, 16]),
              N_min=st.integers(0, 40), N_multiple=st.sampled_from([1, 8]),
              rank_multiple=st.sampled_from([1, 4, 8, 16]),
              rank_max=st.one_of(st.none(), st.sampled_from([16, 32, 64])),
              slots_max=st.one_of(st.none(), st.integers(1, 6)),
              segments_max=st.one_of(st.none(), st.integers(1, 6)), dense_only=st.booleans(),
              wide_expand_input=st.booleans()),
    st.sampled_from(OPS),
)  # fmt: skip
def test_each_edge_is_inside_then_just_outside(domain, op):
    if domain.rank_max is not None and domain.rank_max < domain.rank_multiple:
        return
    for e in edges(op, "float32", domain):
        assert outside(e.inside, domain) is None, e
        assert outside(e.outside, domain) is not None, e


def test_the_probe_says_where_the_backend_stops():
    rows = probe("tests.test_probe:Narrow", NARROW, "cpu", ["float32"], ("shrink", "expand"), 60)
    by = {(r["restriction"], r["op"]): r for r in rows}
    assert all(r["inside"] == "works" for r in rows), rows
    assert by[("K % 16 == 0", "shrink")]["outside"] == "error"
    assert by[("rank % 8 == 0", "shrink")]["outside"] == "wrong"
    assert by[("segments <= 6", "shrink")]["outside"] == "works"
    assert by[("expand x exactly R wide", "expand")]["outside"] == "works"
    assert ("expand x exactly R wide", "shrink") not in by


def test_the_command_writes_the_edges_and_exits_by_the_inside(tmp_path: Path, capsys):
    out = tmp_path / "edges.json"
    code = main(["probe-domain", "tests.test_probe:Narrow", "--ops", "shrink", "--dtypes",
                 "float32", "--report-json", str(out)])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["domain"] == NARROW.describe() and doc["edges"]
    assert "K % 16 == 0" in capsys.readouterr().out
    assert main(["probe-domain", "reference"]) == 5


@pytest.mark.parametrize("name", ["no-such-backend"])
def test_an_unknown_backend_is_a_usage_error(name):
    assert main(["probe-domain", name]) == 2
