"""The ``permutation`` check: the diff check on batches whose rows are permuted, as an engine
that sorts tokens by adapter sends them (``LoRABatchInfo.permutation``)."""

from __future__ import annotations

from conformance.checks.diff import diff_variant
from conformance.names import OPS

CHECK = diff_variant(
    "permutation",
    "the diff check on permuted (sorted-by-adapter) batches",
    rules=("1-the-batch-lorabatchinfo",),
    ops=OPS,
    flag="permutation",
    declared="permutation",
    corner_count=3,
    permute=True,
)
