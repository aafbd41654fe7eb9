"""The GPU-only size classes: element offsets past 2^31, in the thorough profile on a CUDA
device with the memory for them, never on the CPU."""

from __future__ import annotations

from conformance import corners
from conformance.checks.base import GroupContext
from conformance.checks.diff import CHECK
from conformance.profiles import PROFILES
from lora_ref import ReferenceLoRABackend


def test_the_huge_cases_pass_2_to_the_31_elements_and_fit_only_where_there_is_room():
    for op in ("shrink", "qkv", "gate_up"):
        [case] = corners.huge_cases(op, 2, 80 << 30)
        assert case.T * case.K > 2**31 and case.T == corners.HUGE_T
        assert corners.huge_cases(op, 2, 8 << 30) == []
    assert corners.huge_cases("expand", 2, 80 << 30) == []


def test_the_diff_check_leaves_them_out_off_a_gpu():
    caps = ReferenceLoRABackend.capabilities
    ctx = GroupContext("qkv", "bfloat16", ["bfloat16"], PROFILES["thorough"], caps, "cpu")
    names = [e.case.name for e in CHECK.explicit(ctx)]
    assert names and not any(n.startswith("2^31") for n in names)
