"""Lifecycle: one backend instance serves a sequence of calls, its state reused between them.

A real server keeps one backend and its tensors: it refills the batch-info tensors in place
before each forward pass, loads an adapter into the same pool memory, reuses its output
buffers, and runs every LoRA layer (qkv, gate_up, the plain expands, in their own dtypes) on one
batch.  A backend that caches something (a row layout, a converted weight, a host copy of a
device tensor) and keys it on the wrong thing (the tensor's identity, its ``data_ptr``, its
shape, the batch's size) passes every fresh-instance check and fails here.

An example is a list of *steps*, one call each.  A step's kind says what changed since the
previous call and how the call's tensors are provided (:data:`STEP_KINDS`):

==================  ==============================================================================
``fresh``           a new batch and new tensors; ``set_batch_info`` with the new batch
``same_call``       the previous call again, on the same tensors
``refill_batch``    new segment lengths, adapters and scalings (same counts), copied into the
                    batch-info tensors in place; ``set_batch_info`` with the same object
``rewrite_weights`` the same shapes, new values (another adapter) copied into the same tensors
``relayout``        the same shapes and values in other memory layouts (new strides)
``change_rank``     one slot's rank changed, in place in ``lora_ranks``; ``set_batch_info``
``change_N``        another output width on the same batch
``change_offsets``  qkv: the same total width split differently, ``output_offset`` in place
``change_dtype``    another dtype on the same batch
``other_op``        another op on the same batch
==================  ==============================================================================

Except in ``fresh``, every tensor whose shape, dtype and strides match the previous call's is
that tensor, its values overwritten in place (``base_output`` included).  Each result is diffed
against the oracle.  The contract allows all of it: ``set_batch_info`` describes the batch until
the next ``set_batch_info``, and tensors are read at each call (docs/contract.md, section 3).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch
from hypothesis import strategies as st

from conformance import corners
from conformance.case import LAYOUT_KINDS, Case
from conformance.checks.base import Check, Example, GroupContext
from conformance.checks.guards import CaseResult, backend_call, record_problem
from conformance.domain import project, within
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import OPS, STACKS
from conformance.oracle import compare, expect_for
from conformance.strategies import cases
from lora_ref import BaseLoRABackend, LoRABatchInfo

STEP_KINDS = (
    "fresh",
    "same_call",
    "refill_batch",
    "rewrite_weights",
    "relayout",
    "change_rank",
    "change_N",
    "change_offsets",
    "change_dtype",
    "other_op",
)
SETS_BATCH = ("fresh", "refill_batch", "change_rank")  # the steps that call set_batch_info
_NEW_SCALINGS = (0.5, -1.25, 2.0, 0.375, -3.0)
_BATCH_TENSORS = ("seg_lens", "seg_indptr", "weight_indices", "lora_ranks", "scalings")


def applicable(prev: Case, kind: str, dtypes: list[str]) -> bool:
    """Whether :func:`derive` can make a ``kind`` step after a call of ``prev``."""
    if kind == "refill_batch":
        return prev.bs >= 1
    if kind == "change_rank":
        return prev.L >= 1 and prev.R >= 1
    if kind == "change_N":
        return prev.op != "shrink"
    if kind == "change_offsets":
        return prev.op == "qkv" and prev.N + prev.n_kv >= 2
    if kind == "change_dtype":
        return len(set(dtypes)) >= 2
    return True


def _near(rng: random.Random, v: int, lo: int, hi: int) -> int:
    """A value near ``v`` and different from it where ``[lo, hi]`` allows: ±1, double, half or
    the next power-of-two boundary."""
    picks = [v - 1, v + 1, 2 * v, v // 2, 1 << max(v, 1).bit_length(), (1 << v.bit_length()) - 1]
    picks = [p for p in picks if lo <= p <= hi and p != v]
    return rng.choice(picks) if picks else v


def derive(prev: Case, kind: str, rng: random.Random, dtypes: list[str]) -> Case:
    """The case of a ``kind`` step after a call of ``prev`` (:func:`applicable` holds)."""
    seed = rng.randrange(2**31)
    if kind == "same_call":
        return prev
    if kind == "rewrite_weights":
        return prev.replace(seed=seed)
    if kind == "refill_batch":
        top = max(max(prev.seg_lens, default=0), 1)
        lens = tuple(_near(rng, n, 0, 2 * top) if rng.random() < 0.7 else n for n in prev.seg_lens)
        slots = tuple(rng.randrange(prev.L) for _ in prev.weight_indices)
        # every scaling moves to the next slot, and one takes a new value
        scalings = list(prev.scalings[1:] + prev.scalings[:1])
        scalings[rng.randrange(len(scalings))] = rng.choice(_NEW_SCALINGS)
        return prev.replace(seg_lens=lens, weight_indices=slots, scalings=tuple(scalings),
                            seed=seed)  # fmt: skip
    if kind == "relayout":
        layouts = dict(prev.layouts)
        movable = [a for a in layouts if a != "batch" and len(LAYOUT_KINDS[a]) > 1]
        for arg in rng.sample(movable, k=rng.randint(1, len(movable))) if movable else []:
            layouts[arg] = rng.choice([k for k in LAYOUT_KINDS[arg] if k != layouts[arg]])
        return prev.replace(layouts=layouts)
    if kind == "change_rank":
        used = sorted({w for w, n in zip(prev.weight_indices, prev.seg_lens, strict=True) if n})
        w = rng.choice(used) if used else rng.randrange(prev.L)  # a slot rows use, if any
        ranks = list(prev.lora_ranks)
        ranks[w] = rng.choice([r for r in range(prev.R + 1) if r != ranks[w]] or [ranks[w]])
        return prev.replace(lora_ranks=tuple(ranks), seed=seed)
    if kind == "change_N":
        N = _near(rng, prev.N, 1, max(2 * prev.N, 8))
        return prev.replace(N=N, n_kv=min(prev.n_kv, N) if prev.op == "qkv" else 0, seed=seed)
    if kind == "change_offsets":
        total = prev.N + 2 * prev.n_kv
        n_kv = rng.choice([k for k in range(total // 2 + 1) if k != prev.n_kv] or [prev.n_kv])
        return prev.replace(N=total - 2 * n_kv, n_kv=n_kv, seed=seed)
    if kind == "change_dtype":
        return prev.replace(dtype=rng.choice([d for d in dtypes if d != prev.dtype]), seed=seed)
    if kind == "other_op":
        op = rng.choice([o for o in OPS if o != prev.op])
        K = prev.K or rng.randint(1, 64)
        N = prev.N or rng.randint(1, 64)
        has_base = op != "shrink" and rng.random() < 0.5
        out = Case(
            op=op, dtype=prev.dtype, seg_lens=prev.seg_lens, weight_indices=prev.weight_indices,
            lora_ranks=prev.lora_ranks, scalings=prev.scalings, R=prev.R,
            K=K if op != "expand" else 0, N=N if op != "shrink" else 0,
            n_kv=rng.randint(0, N) if op == "qkv" else 0, stack=rng.choice(STACKS[op]),
            has_base=has_base, poison=prev.poison, seed=seed, layout=prev.layout,
            data=prev.data, layouts={"batch": prev.layouts["batch"]},
        )  # fmt: skip
        return out
    raise ValueError(f"step kind: expected one of {STEP_KINDS}, got {kind!r}")


def _reuse(old: Any, new: Any) -> Any:
    """``old`` with ``new``'s values copied in, where both are tensors of one shape, dtype,
    device and strides; else ``new``.  Tuples (split weights) element by element."""
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        return tuple(_reuse(o, n) for o, n in zip(old, new, strict=True))

    def form(t: torch.Tensor) -> tuple[Any, ...]:
        return t.shape, t.dtype, t.device, t.stride()

    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and form(old) == form(new):
        old.copy_(new)
        return old
    return new


def _refill(batch: LoRABatchInfo, new: LoRABatchInfo) -> None:
    """``new``'s batch copied into ``batch``'s tensors and fields, in place (same object)."""
    for name in _BATCH_TENSORS:
        getattr(batch, name).copy_(getattr(new, name))
    batch.bs, batch.max_len = new.bs, new.max_len
    batch.expected_tokens, batch.has_active_lora = new.expected_tokens, new.has_active_lora


def check_lifecycle(
    backend_cls: type[BaseLoRABackend], steps: list[tuple[str, Case]], device: torch.device
) -> CaseResult:
    """Run the ``(kind, case)`` steps on one instance, state reused as their kinds say."""
    params = {"steps": [{"kind": k, "case": c.to_json()} for k, c in steps]}
    result = CaseResult(steps[0][1], check="lifecycle", params=params)
    made, problem = backend_call(backend_cls)
    if problem is not None:
        record_problem(result, problem, "the constructor")
        return result
    backend = made
    batch: LoRABatchInfo | None = None
    prev: Inputs | None = None
    prev_case: Case | None = None
    out_buffer: torch.Tensor | None = None
    for s, (kind, case) in enumerate(steps):
        fresh = build_inputs(case, device)
        where = f"step {s} ({kind}: {case.op} {case.dtype}, T={case.T})"
        if kind == "fresh" or prev is None or batch is None:
            batch, inputs = fresh.batch_info, fresh
            out_buffer = fresh.base.clone() if fresh.base is not None else None
        else:
            if kind in SETS_BATCH:
                _refill(batch, fresh.batch_info)
            same_op = prev_case is not None and prev_case.op == case.op
            x = _reuse(prev.x, fresh.x)
            args = (
                tuple(_reuse(o, n) for o, n in zip(prev.args, fresh.args, strict=True))
                if same_op
                else fresh.args
            )
            inputs = Inputs(batch, x, args, fresh.base)
            out_buffer = _reuse(out_buffer, fresh.base.clone()) if fresh.base is not None else None
        if kind in SETS_BATCH or s == 0:
            _, problem = backend_call(lambda b=batch: backend.set_batch_info(b))
            if problem is not None:
                record_problem(result, problem, f"{where}: set_batch_info")
                return result
        exp = expect_for(case, inputs, backend_cls.capabilities)
        out, problem = backend_call(
            lambda c=case, i=inputs, b=out_buffer: call(backend, c, i, b)
        )  # fmt: skip
        if problem is not None:
            record_problem(result, problem, where)
            return result
        verdict = compare(case, out, exp)
        result.note_ratio(verdict.worst_ratio)
        if not verdict.ok:
            result.fail(
                f"{where}, after {s} earlier calls on this instance: "
                f"{verdict.message} [{case.describe()}]"
            )
            return result
        prev, prev_case = inputs, case
    return result


def steps_from_params(params: dict[str, Any]) -> list[tuple[str, Case]]:
    """The ``(kind, case)`` steps saved in an example's params (``{"kind", "case"}`` objects;
    a list of cases, the older form, is a ``fresh`` step then ``other_op`` steps)."""
    out: list[tuple[str, Case]] = []
    for step in params["steps"]:
        if isinstance(step, list):
            out += [
                ("fresh" if k == 0 else "other_op", Case.from_json(c)) for k, c in enumerate(step)
            ]
        else:
            out.append((step["kind"], Case.from_json(step["case"])))
    return out


def _example(steps: list[tuple[str, Case]]) -> Example:
    return Example(steps[0][1], {"steps": [{"kind": k, "case": c.to_json()} for k, c in steps]})


def _strategy(ctx: GroupContext) -> st.SearchStrategy[Example]:
    dtypes = ctx.op_dtypes
    # every call of an example runs on one instance: a smaller budget per call
    small = dataclasses.replace(ctx.profile, budget=max(ctx.profile.budget // 8, 1))

    shapes = ctx.caps.shapes

    def first_case(draw: st.DrawFn) -> Case:
        op = draw(st.sampled_from(OPS), label="op")
        return draw(within(cases(op, draw(st.sampled_from(dtypes)), small, permutation=False),
                           shapes))  # fmt: skip

    @st.composite
    def steps(draw: st.DrawFn) -> Example:
        prev = first_case(draw)
        out = [("fresh", prev)]
        for _ in range(draw(st.integers(1, 6), label="steps")):
            kinds = [k for k in STEP_KINDS if applicable(prev, k, dtypes)]
            kind = draw(st.sampled_from(kinds), label="step")
            if kind == "fresh":
                prev = first_case(draw)
            else:
                rng = random.Random(draw(st.integers(0, 2**32 - 1), label="change"))
                moved = project(derive(prev, kind, rng, dtypes), shapes)
                if moved is None:  # this change leaves the declared domain: no step
                    continue
                prev = moved
            out.append((kind, prev))
        return _example(out)

    return steps()


def _explicit(ctx: GroupContext) -> list[Example]:
    """Every step kind once, from a qkv batch with an empty segment, several slots and GQA;
    then a decode batch of another size, an op and dtype change on it, and the same again."""
    dtypes = ctx.op_dtypes
    shared = {c.name: c for c in corners.corner_cases("qkv", ctx.profile.name)[0]}
    start = shared["rows 15,32,65,16 (T=128)"].replace(dtype=dtypes[0], permute=False)
    decode = shared["decode: 17 segments"].replace(dtype=dtypes[-1], permute=False)
    plan = ["same_call", "rewrite_weights", "relayout", "refill_batch", "change_rank",
            "change_offsets", "change_N", "change_dtype", "other_op", "fresh", "refill_batch",
            "other_op", "change_rank", "same_call"]  # fmt: skip
    steps = [("fresh", start)]
    for k, kind in enumerate(plan):
        prev = steps[-1][1]
        if kind == "fresh":
            steps.append((kind, decode))
        elif applicable(prev, kind, dtypes):
            steps.append((kind, derive(prev, kind, random.Random(k), dtypes)))
    return [_example(steps)]


CHECK = Check(
    name="lifecycle",
    doc="one instance over a sequence of calls whose state is reused: the same call again, "
    "batch tensors refilled in place and set again, weights rewritten in place, new layouts "
    "of the same data, one rank, `N`, the qkv offsets, the dtype or the op changed",
    rules=("3-the-operations-baselorabackend",),
    ops=("mixed",),
    dtypes="mixed",
    scale=0.5,
    shrink=True,
    strategy=_strategy,
    explicit=_explicit,
    run=lambda b, e, d: check_lifecycle(b, steps_from_params(e.params), d),
)
