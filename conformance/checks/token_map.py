"""The ``token_map`` check: the diff check on batches given as a slot per token
(``lora_ref.TokenMapBatchInfo``), the form vLLM's ``token_lora_mapping`` and SGLang's
``token_slots`` take.  Each drawn segment batch is converted exactly (``to_token_map``): its
permutation applied, so adapters interleave row by row as in a decode batch, and about half
the rows of rank-0 slots given -1 (no LoRA), which must give the same result, base bit for
bit.  Each example then hands the backend three bad maps (:data:`BAD_MAPS`: a slot past the
pool, an entry below -1, one row more than ``x`` has), each of which must be a ``ValueError``
or ``TypeError`` with ``base_output`` unchanged (contract sections 1b and 6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from conformance import corners
from conformance.case import Case
from conformance.checks.bad_input import expect_refusal
from conformance.checks.base import Example, GroupContext
from conformance.checks.diff import check_diff, diff_variant
from conformance.checks.guards import CaseResult
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import OPS
from lora_ref import BaseLoRABackend, TokenMapBatchInfo


def _slot(value: Callable[[int], int]) -> Callable[[TokenMapBatchInfo], TokenMapBatchInfo]:
    def mutate(tm: TokenMapBatchInfo) -> TokenMapBatchInfo:
        slots = tm.token_slots.clone()
        slots[-1] = value(tm.lora_ranks.numel())
        return TokenMapBatchInfo(slots, tm.lora_ranks, tm.scalings)

    return mutate


def _one_row_more(tm: TokenMapBatchInfo) -> TokenMapBatchInfo:
    return TokenMapBatchInfo(torch.cat([tm.token_slots, tm.token_slots[-1:]]), tm.lora_ranks,
                             tm.scalings)  # fmt: skip


BAD_MAPS: dict[str, Callable[[TokenMapBatchInfo], TokenMapBatchInfo]] = {
    "a token slot equal to L (past the pool)": _slot(lambda L: L),
    "a token slot of -2": _slot(lambda L: -2),
    "a token map one row longer than x": _one_row_more,
}


def check_token_map(backend_cls: type[BaseLoRABackend], case: Case, device: torch.device
                    ) -> CaseResult:  # fmt: skip
    """The diff check on ``case`` as a token map, then each of :data:`BAD_MAPS`."""
    result = check_diff(backend_cls, case, device, check="token_map")
    if not result.ok or case.T == 0:
        return result
    good = build_inputs(case, device)
    for label, mutate in BAD_MAPS.items():
        bad = mutate(good.batch_info)
        base = good.base.clone() if good.base is not None else None

        def go(bad=bad, base=base):
            backend = backend_cls()
            backend.set_batch_info(bad)
            return call(backend, case, Inputs(bad, good.x, good.args, base), base)

        if not expect_refusal(result, label, go, [t for t in (base, good.x) if t is not None]):
            break
    return result


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
    shared, _ = corners.corner_cases(ctx.op, ctx.profile.name, ctx.caps.n_slices)
    with_rows = [c for c in shared if c.T >= 2]
    no_lora = [c for c in with_rows if any(c.lora_ranks[w] == 0 for w in c.weight_indices)]
    chosen = (no_lora + [c for c in with_rows if c not in no_lora])[:3]
    return [Example(c.replace(dtype=ctx.dtype, permute=True, token_map=True), {}) for c in chosen]


CHECK = dataclasses.replace(
    CHECK, explicit=_corners, run=lambda b, e, d: check_token_map(b, e.case, d)
)
