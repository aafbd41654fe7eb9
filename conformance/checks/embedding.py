"""The ``embedding`` check: embedding LoRA's ``A`` side, ``run_lora_a_embedding``, a gather of
``A`` columns by token id (contract section 3, operation 6), for a backend that declares
``embedding``.

An example is a shrink case read as an embedding: its ``K`` is the vocabulary ``V``, its ``A``
weights ``(L, R, V)`` the table (garbage past each rank and in unused slots, in every memory
layout the shrink's weights take), its batch the rows' slots; ``params["extra"]`` adds an
extra-vocabulary table ``(L, E, R)`` (tokens an adapter adds, garbage past each rank).  Token
ids come from the case's seed: the first and last id of each table, the ids just past the base
vocabulary, and uniform ones.  The result must be the values themselves, bit for bit, in the
columns each row's rank specifies; the inputs must be unchanged.  Then each example hands the
backend :data:`BAD_CALLS` (ids past both tables, -1, float ids, one id too many, a wrong
``vocab_size``, an extra table of the wrong rank), each a ``ValueError`` or ``TypeError``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st

from conformance import corners, space
from conformance.case import Case
from conformance.checks.bad_input import expect_refusal
from conformance.checks.base import Check, Example, GroupContext, requires
from conformance.checks.guards import (
    CaseResult,
    backend_call,
    bits_equal_where,
    changed,
    snapshot,
)
from conformance.domain import within
from conformance.inputs import POISON_VALUES, Inputs, build_inputs, row_slots
from conformance.oracle import bitwise_equal
from conformance.strategies import cases
from lora_ref import BaseLoRABackend, ReferenceLoRABackend

MAX_EXTRA = 16  # SGLang's extra vocabulary per adapter is a handful of added tokens


class Call(NamedTuple):
    """The arguments of one ``run_lora_a_embedding`` call, and its batch."""

    batch_info: Any
    input_ids: torch.Tensor
    weights: torch.Tensor
    vocab_size: int
    extra: torch.Tensor | None


def extra_rows(case: Case, params: dict[str, Any]) -> int:
    """The extra table's rows ``E`` of an example (one where the vocabulary is empty, so that
    an id can be valid)."""
    E = params.get("extra", 0)
    return 1 if case.K + E == 0 and case.T else E


def token_ids(case: Case, E: int) -> tuple[list[int], torch.dtype]:
    """The example's token ids (the vocabulary is ``case.K``) and their dtype, from its seed."""
    V = case.K
    gen = torch.Generator().manual_seed(case.seed ^ 0x1D5)
    edges = [v for v in (0, V - 1, V, V + 1, V + E - 1) if 0 <= v < V + E]
    uniform = torch.randint(0, max(V + E, 1), (case.T,), generator=gen).tolist()
    pick = torch.rand(case.T, generator=gen).tolist()
    ids = [
        edges[int(u * 997) % len(edges)] if u < 0.3 else v
        for u, v in zip(pick, uniform, strict=True)
    ]
    return ids, torch.int64 if case.seed % 2 else torch.int32


def build_call(case: Case, params: dict[str, Any], device: torch.device) -> Call:
    """The call of ``case`` read as an embedding (module docstring)."""
    inputs = build_inputs(case, device)
    weights = inputs.args[0]
    L, R, V = weights.shape
    E = extra_rows(case, params)
    extra = None
    if E:
        gen = torch.Generator().manual_seed(case.seed ^ 0xE3B)
        table = torch.randn(L, E, R, generator=gen, dtype=torch.float64)
        for w, r in enumerate(case.lora_ranks):
            table[w, :, r:] = POISON_VALUES[case.poison]
        extra = table.to(weights.dtype).to(device)
    ids, dtype = token_ids(case, E)
    input_ids = torch.tensor(ids, dtype=dtype, device=device)
    return Call(inputs.batch_info, input_ids, weights, V, extra)


def reach(example: Example) -> dict[str, dict[str, int]]:
    """What an example reached: its case's dimensions (``K`` is the vocabulary), and under
    ``embedding`` the size class of its extra table and the kinds of token id it holds (the
    first and last of the vocabulary, ids in the extra table, the id dtype)."""
    case = example.case
    E = extra_rows(case, example.params)
    ids, dtype = token_ids(case, E)
    V = case.K
    kinds = {"extra rows " + ("0" if E == 0 else "1" if E == 1 else "2-4" if E <= 4 else "5-16"),
             f"{str(dtype).removeprefix('torch.')} ids"}  # fmt: skip
    hits = {
        "id 0": 0 in ids,
        "id V-1 (last of the vocabulary)": V > 0 and V - 1 in ids,
        "id V (first extra)": E > 0 and V in ids,
        "id V+E-1 (last extra)": E > 0 and V + E - 1 in ids,
        "an id past 2^15": any(i >= 2**15 for i in ids),
    }
    kinds |= {label for label, hit in hits.items() if hit}
    counts = space.count([case])
    counts["embedding"] = dict.fromkeys(kinds, 1)
    return counts


def _run(backend_cls: type[BaseLoRABackend], call: Call) -> torch.Tensor:
    backend = backend_cls()
    backend.set_batch_info(call.batch_info)
    return backend.run_lora_a_embedding(call.input_ids, call.weights, call.vocab_size, call.extra)


def _longer(c: Call) -> Call:
    return c._replace(input_ids=torch.cat([c.input_ids, c.input_ids[-1:]]))


def _id(value: Callable[[Call], int]) -> Callable[[Call], Call]:
    def mutate(c: Call) -> Call:
        ids = c.input_ids.clone()
        ids[-1] = value(c)
        return c._replace(input_ids=ids)

    return mutate


def _wider_extra(c: Call) -> torch.Tensor:
    L, R, _ = c.weights.shape
    return torch.zeros(L, 2, R + 1, dtype=c.weights.dtype, device=c.weights.device)


def _extra_rows(c: Call) -> int:
    return 0 if c.extra is None else c.extra.shape[1]


BAD_CALLS: dict[str, Callable[[Call], Call]] = {
    "a token id past both tables": _id(lambda c: c.vocab_size + _extra_rows(c)),
    "a token id of -1": _id(lambda c: -1),
    "float token ids": lambda c: c._replace(input_ids=c.input_ids.float()),
    "one token id more than the batch has rows": _longer,
    "vocab_size one more than the table's": lambda c: c._replace(vocab_size=c.vocab_size + 1),
    "an extra table of the wrong rank": lambda c: c._replace(extra=_wider_extra(c)),
}


def check_embedding(
    backend_cls: type[BaseLoRABackend], example: Example, device: torch.device
) -> CaseResult:
    """The gather, bit for bit, inputs unchanged; then each of :data:`BAD_CALLS`."""
    case, params = example
    result = CaseResult(case, check="embedding", params=params)
    call = build_call(case, params, device)
    watched = [t for t in (call.input_ids, call.weights, call.extra) if t is not None]
    snap = snapshot(Inputs(call.batch_info, call.input_ids, (call.weights, call.extra), None))
    expected = _run(ReferenceLoRABackend, call)
    got, problem = backend_call(lambda: _run(backend_cls, call))
    if problem is not None:
        result.fail(f"the call raised {problem.describe()}", problem.kind)
        return result
    T, R = expected.shape
    if not isinstance(got, torch.Tensor) or got.shape != (T, R) or got.dtype != call.weights.dtype:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        result.fail(f"result: expected a ({T}, {R}) {call.weights.dtype} tensor, got {shape}")
        return result
    ranks = call.batch_info.lora_ranks.tolist()
    slots = row_slots(call.batch_info)
    row_rank = torch.tensor([ranks[w] if w >= 0 else 0 for w in slots], device=got.device)
    specified = torch.arange(R, device=got.device)[None, :] < row_rank[:, None]
    if not bits_equal_where(got, expected, specified):
        t = int((specified & ~bitwise_equal(got, expected)).any(1).nonzero()[0])
        w, r, v = slots[t], int(row_rank[t]), int(call.input_ids[t])
        want, came = expected[t, :r].tolist()[:4], got[t, :r].tolist()[:4]
        result.fail(f"row {t} (slot {w}, rank {r}, token id {v}): expected {want}..., "
                    f"got {came}...")  # fmt: skip
        return result
    if changed(snap):
        result.fail("an input (token ids, weights or the extra table) was changed")
        return result
    result.worst_ratio = 0.0
    if case.T == 0:
        return result
    for label, mutate in BAD_CALLS.items():
        bad = mutate(call)
        if not expect_refusal(result, label, lambda bad=bad: _run(backend_cls, bad), watched):
            break
    return result


def _strategy(ctx: GroupContext) -> st.SearchStrategy[Example]:
    shrink = cases("shrink", ctx.dtype, ctx.profile, permutation=ctx.caps.permutation)
    shrink = within(shrink.map(lambda c: c.replace(stack=1)), ctx.caps.shapes)
    extra = st.one_of(st.just(0), st.integers(1, MAX_EXTRA))
    return st.tuples(shrink, extra).map(lambda ce: Example(ce[0], {"extra": ce[1]}))


# hand-built: (extra-table rows, the case): one without an extra table; the largest extra table
# with a pool holding a rank-0 slot and ids at every edge; a one-token vocabulary with extras; a
# vocabulary of 65536 (the top of K's range) with one extra row
_EXPLICIT = [
    (0, dict(name="embedding: no extra table", seg_lens=(3, 2), lora_ranks=(4, 2), R=4, K=20)),
    (MAX_EXTRA, dict(name="embedding: edges, a rank-0 slot", seg_lens=(5, 0, 7, 3),
                     weight_indices=(2, 1, 0, 2), lora_ranks=(8, 0, 5), R=8, K=33)),
    (3, dict(name="embedding: one base token, extras", seg_lens=(4,), lora_ranks=(3,), R=4,
             K=1)),
    (1, dict(name="embedding: vocabulary 65536, one extra row", seg_lens=(6, 2),
             lora_ranks=(16, 9), R=16, K=65536, permute=True)),
]  # fmt: skip


def _explicit(ctx: GroupContext) -> list[Example]:
    out = []
    for extra, spec in _EXPLICIT:
        case = corners.build_case("shrink", spec)
        assert case is not None
        out.append(Example(case.replace(dtype=ctx.dtype, stack=1, seed=len(out) + 11),
                           {"extra": extra}))  # fmt: skip
    return out


CHECK = Check(
    name="embedding",
    doc="embedding LoRA's gather (`run_lora_a_embedding`): each row's `A` column for its token "
    "id, or its extra-vocabulary row, bit for bit; ids past the tables and other bad calls "
    "refused",
    rules=("3-the-operations-baselorabackend", "6-bad-input"),
    ops=("embedding",),
    dtypes="all",
    scale=1.0,
    shrink=True,
    strategy=_strategy,
    reach=reach,
    explicit=_explicit,
    run=check_embedding,
    needs=requires("embedding", "embedding LoRA"),
)
