"""The ``split_layout`` check: the diff check with the fused ops' expand weights given split,
one tensor per slice (a backend that declares ``split_layouts``)."""

from __future__ import annotations

from conformance.checks.diff import diff_variant

CHECK = diff_variant(
    "split_layout",
    "the diff check with the split expand-weight layouts",
    rules=("3-the-operations-baselorabackend",),
    ops=("qkv", "gate_up"),
    flag="split_layouts",
    declared="the split expand-weight layouts",
    corner_count=2,
    split_b=True,
)
