"""The ``token_map`` check: the diff check on batches given as a slot per token
(``lora_ref.TokenMapBatchInfo``), the form vLLM's ``token_lora_mapping`` and SGLang's
``token_slots`` take.  Each drawn segment batch is converted exactly (``to_token_map``): its
permutation applied, so adapters interleave row by row as in a decode batch, and about half
the rows of rank-0 slots given -1 (no LoRA), which must give the same result, base bit for
bit."""

from __future__ import annotations

import dataclasses

from conformance import corners
from conformance.checks.base import Example, GroupContext
from conformance.checks.diff import diff_variant
from conformance.names import OPS

CHECK = diff_variant(
    "token_map",
    "the diff check on token-map batches (a slot per row, -1 for no LoRA, adapters "
    "interleaved row by row)",
    rules=("1b-the-token-map-form",),
    ops=OPS,
    flag="token_map",
    declared="token-map batches",
    corner_count=3,
    token_map=True,
)


def _corners(ctx: GroupContext) -> list[Example]:
    """Shared corner cases with rows, those using a rank-0 slot first (their rows may become
    -1), permuted so the slots interleave."""
    shared, _ = corners.corner_cases(ctx.op, ctx.profile.name)
    with_rows = [c for c in shared if c.T >= 2]
    no_lora = [c for c in with_rows if any(c.lora_ranks[w] == 0 for w in c.weight_indices)]
    chosen = (no_lora + [c for c in with_rows if c not in no_lora])[:3]
    return [Example(c.replace(dtype=ctx.dtype, permute=True, token_map=True), {}) for c in chosen]


CHECK = dataclasses.replace(CHECK, explicit=_corners)
