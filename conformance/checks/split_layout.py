"""The ``split_layout`` check: the diff check with the fused ops' expand weights given split,
one tensor per slice (a backend that declares ``split_layouts``)."""

from __future__ import annotations

from conformance.checks.base import Check, drawn, plain, primary_corners, requires
from conformance.checks.diff import check_diff

CHECK = Check(
    name="split_layout",
    doc="the diff check with the split expand-weight layouts",
    rules=("3-the-operations-baselorabackend",),
    ops=("qkv", "gate_up"),
    dtypes="primary",
    scale=0.5,
    shrink=True,
    needs=requires("split_layouts", "the split expand-weight layouts"),
    strategy=lambda ctx: plain(drawn(ctx, split_b=True)),
    explicit=lambda ctx: primary_corners(ctx, 2, split_b=True),
    run=lambda b, e, d: check_diff(b, e.case, d, check="split_layout"),
)
