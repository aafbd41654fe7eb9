"""The ``permutation`` check: the diff check on batches whose rows are permuted, as an engine
that sorts tokens by adapter sends them (``LoRABatchInfo.permutation``)."""

from __future__ import annotations

from conformance.checks.base import Check, drawn, plain, primary_corners, requires
from conformance.checks.diff import check_diff
from conformance.names import OPS

CHECK = Check(
    name="permutation",
    doc="the diff check on permuted (sorted-by-adapter) batches",
    rules=("1-the-batch-lorabatchinfo",),
    ops=OPS,
    dtypes="primary",
    scale=0.5,
    shrink=True,
    needs=requires("permutation", "permutation"),
    strategy=lambda ctx: plain(drawn(ctx, permute=True)),
    explicit=lambda ctx: primary_corners(ctx, 3, permute=True),
    run=lambda b, e, d: check_diff(b, e.case, d, check="permutation"),
)
