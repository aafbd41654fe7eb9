"""The ``batch_invariance`` check: a row's result has the same bits whatever else is in the
batch, for a backend that declares ``batch_invariant`` (vLLM's ``VLLM_BATCH_INVARIANT=1``
promises it; an engine that must give a request the same tokens at any batch size needs it).

Each example computes a drawn batch, then the same rows in another batch: one row alone
(``T = 1``), a random subset of the rows in a random order (other sizes, other neighbours,
other positions), every row twice over, shuffled, or the rows repeated, shuffled, to a tall
batch of ``TALL_ROWS`` rows whatever the profile's row limit (kernels pick tiles and K splits
by batch size: the serving engines' decode and prefill rules switch between 128 and 512 rows).
Each row of the second call must have the bits of the same row of the first, wherever the
contract defines them.
"""

from __future__ import annotations

import random

import torch
from hypothesis import strategies as st

from conformance import corners
from conformance.case import Case
from conformance.checks.base import Check, Example, GroupContext, drawn, primary_corners, requires
from conformance.checks.guards import CaseResult
from conformance.checks.metamorphic import related_calls
from conformance.inputs import build_inputs
from conformance.names import OPS
from conformance.oracle import bitwise_equal, expect_for
from lora_ref import BaseLoRABackend
from lora_ref.token_map import runs

REBATCHINGS = ("alone", "subset", "doubled", "tall")
DOUBLED_MAX_ROWS = 4096  # a taller batch only while it stays cheap
TALL_ROWS = (129, 257, 300, 513, 1025)  # the tall batch's rows: one is drawn per example
TALL_MAX_ELEMENTS = 1 << 21  # ... at most this many elements in its widest tensor


def rebatch(case: Case, how: str, choice: int) -> tuple[Case, list[int]] | None:
    """Another batch of ``case``'s rows (``case`` unpermuted) and, for each of its rows, the
    row of ``case`` it repeats; None when ``case`` has no rows."""
    if case.T == 0:
        return None
    rng = random.Random(choice)
    slots = [w for n, w in zip(case.seg_lens, case.weight_indices, strict=True) for _ in range(n)]
    if how == "alone":
        rows = [rng.randrange(case.T)]
    elif how == "subset" or case.T > DOUBLED_MAX_ROWS:
        rows = rng.sample(range(case.T), rng.randint(1, case.T))
    elif how == "doubled":
        rows = list(range(case.T)) * 2
        rng.shuffle(rows)
    elif how == "tall":
        width = max(case.K, case.out_dim, case.R + case.extra_cols, 1)
        fits = [n for n in TALL_ROWS if n * width <= TALL_MAX_ELEMENTS and n > case.T]
        if not fits:
            return rebatch(case, "subset", choice)
        n = rng.choice(fits)
        rows = list(range(case.T)) + [rng.randrange(case.T) for _ in range(n - case.T)]
        rng.shuffle(rows)
    else:
        raise ValueError(f"how: expected one of {REBATCHINGS}, got {how!r}")
    segments = runs([slots[t] for t in rows])
    derived = case.replace(seg_lens=tuple(n for _, n in segments),
                           weight_indices=tuple(w for w, _ in segments))  # fmt: skip
    return derived, rows


def check_batch_invariance(
    backend_cls: type[BaseLoRABackend], case: Case, how: str, choice: int, device: torch.device
) -> CaseResult:
    """The rows of a rebatched call must have the bits of the same rows of the first call."""
    case = case.replace(permute=False, layouts={})
    result = CaseResult(case, check="batch_invariance", params={"how": how, "choice": choice})
    again = rebatch(case, how, choice)
    if again is None:
        return result
    derived, rows = again
    inputs = build_inputs(case, device)
    pair = related_calls(backend_cls, case, inputs, derived, rows, result, how)
    if pair is None:
        return result
    out, out2 = pair
    index = torch.tensor(rows, dtype=torch.long, device=device)
    specified = expect_for(case, inputs, backend_cls.capabilities).specified[index]
    a = out[index]
    bad = specified & ~bitwise_equal(a, out2)
    if bad.any():
        i, j = bad.nonzero()[0].tolist()
        result.fail(
            f"not batch invariant ({how}, choice={choice}): row {rows[i]} of a batch of "
            f"{case.T} rows gives {a[i, j].item():.9g} at column {j}, and the same row as row "
            f"{i} of a batch of {derived.T} ({derived.describe()}) gives "
            f"{out2[i, j].item():.9g}; {int(bad.sum())} elements differ"
        )
    return result


def _strategy(ctx: GroupContext) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda c, how, choice: Example(c, {"how": how, "choice": choice}),
        drawn(ctx, permute=False),
        st.sampled_from(REBATCHINGS),
        st.integers(0, 10**6),
    )


# a decode batch whose reduction is long: launch rules that pick the K split (shrink) or the
# row tile (expand) from T or from the batch's adapters give its rows other bits alone, or in a
# tall batch, than here
_LONG_DECODE = dict(name="decode rows, K=4096, rank 128: a K split or a row tile chosen by T",
                    seg_lens=(1, 1, 2), weight_indices=(0, 1, 0), lora_ranks=(128, 8), R=128,
                    K=4096, N=96, n_kv=32, scalings=(0.5, -1.0))  # fmt: skip


def _explicit(ctx: GroupContext) -> list[Example]:
    picked = primary_corners(ctx, 4, permute=False, layouts={})
    out = [Example(e.case, {"how": how, "choice": 11})
           for e, how in zip(picked, REBATCHINGS, strict=False)]  # fmt: skip
    long = corners.build_case(ctx.op, _LONG_DECODE)
    if long is not None:
        long = long.replace(dtype=ctx.dtype, seed=4096)
        out += [Example(long, {"how": how, "choice": 5}) for how in ("alone", "tall")]
    return out


CHECK = Check(
    name="batch_invariance",
    doc="a row's result has the same bits alone, in a random subset of its batch in a random "
    "order, in its batch twice over, and in a tall batch (129 to 1025 rows) of its batch's rows",
    rules=("4-results",),
    ops=OPS,
    dtypes="all",
    scale=0.5,
    shrink=True,
    needs=requires("batch_invariant", "batch invariance"),
    strategy=_strategy,
    explicit=_explicit,
    run=lambda b, e, d: check_batch_invariance(b, e.case, e.params["how"], e.params["choice"], d),
)
