"""The checks run on a backend for one case; each returns failures as readable strings.

* :func:`check_case`: the differential check against the oracle, plus poisoned garbage regions,
  poisoned fresh allocations, guard bands around ``base_output``, untouched inputs, rank-0 rows
  bit-exact, and determinism (the same call twice is bitwise equal).
* :func:`check_metamorphic`: relations that must leave every row's result unchanged.
* :func:`check_bad_inputs`: every invalid input of SPEC.md raises ``ValueError``/``TypeError``
  and writes nothing.
* :func:`check_cuda_graph`: capture, refill the batch info in place, replay (GPU only).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from conformance.case import Case, Inputs, build_inputs, call
from conformance.oracle import Expectation, Verdict, bitwise_equal, compare, expect
from lora_ref import BaseLoRABackend, LoRABatchInfo, refill_batch_info

GUARD = 64
SENTINEL = -1234.5


@dataclass
class CaseResult:
    """Outcome of one case: failures (empty when it passed) and the worst error/tolerance."""

    case: Case
    failures: list[str] = field(default_factory=list)
    worst_ratio: float = 0.0
    check: str = "diff"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def _float32_matmul(backend_cls: type[BaseLoRABackend]) -> str:
    return backend_cls.capabilities.float32_matmul


def _guarded_base(base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``base`` inside a flat buffer with ``GUARD`` sentinel elements on each side."""
    T, N = base.shape
    buf = torch.full((2 * GUARD + T * N,), SENTINEL, dtype=base.dtype, device=base.device)
    view = buf[GUARD : GUARD + T * N].view(T, N)
    view.copy_(base)
    return buf, view


def _poison_allocator(numel: int, dtype: torch.dtype, device: torch.device) -> None:
    """Leave NaN-filled blocks of the output's size in the allocator's free lists.

    A backend that allocates its output and leaves an element unwritten then returns NaN there,
    not a lucky zero.  Reliable with CUDA's caching allocator; best effort on the CPU.
    """
    for _ in range(2):
        block = torch.full((max(numel, 1),), float("nan"), dtype=dtype, device=device)
        del block


def _snapshot(inputs: Inputs) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    named: list[tuple[str, torch.Tensor]] = [("x", inputs.x)]
    named += [(f"arg{i}", a) for i, a in enumerate(inputs.args) if isinstance(a, torch.Tensor)]
    info = inputs.batch_info
    for name in (
        "seg_lens",
        "seg_indptr",
        "weight_indices",
        "lora_ranks",
        "scalings",
        "permutation",
    ):
        t = getattr(info, name)
        if t is not None:
            named.append((f"batch_info.{name}", t))
    return [(name, t, t.clone()) for name, t in named]


def _changed(snapshot: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[str]:
    return [name for name, t, before in snapshot if not bool(bitwise_equal(t, before).all())]


def run_once(
    backend: BaseLoRABackend, case: Case, inputs: Inputs
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One guarded call: returns (result, guard buffer or None, the base view passed or None)."""
    buf = view = None
    if inputs.base is not None:
        buf, view = _guarded_base(inputs.base)
    _poison_allocator(case.T * case.out_dim, case.torch_dtype, inputs.x.device)
    backend.set_batch_info(inputs.batch_info)
    out = call(backend, case, inputs, view)
    return out, buf, view


def _guards_intact(buf: torch.Tensor | None) -> bool:
    if buf is None:
        return True
    guards = torch.cat([buf[:GUARD], buf[-GUARD:]])
    return bool((guards == SENTINEL).all())


def check_case(
    backend_cls: type[BaseLoRABackend],
    case: Case,
    device: torch.device,
    exp: Expectation | None = None,
) -> CaseResult:
    """Run ``case`` on a fresh ``backend_cls`` instance and apply every per-call check."""
    result = CaseResult(case)
    inputs = build_inputs(case, device)
    exp = exp or expect(case, inputs, _float32_matmul(backend_cls))
    snapshot = _snapshot(inputs)
    try:
        out, buf, _ = run_once(backend_cls(), case, inputs)
    except Exception as exc:  # any exception on a valid input is a failure
        result.failures.append(f"raised {type(exc).__name__} on a valid input: {exc}")
        result.worst_ratio = float("inf")
        return result

    verdict = compare(case, out, exp)
    result.worst_ratio = verdict.worst_ratio
    if not verdict.ok:
        result.failures.append(f"wrong result: {verdict.message}")
    if not _guards_intact(buf):
        result.failures.append(
            f"wrote outside base_output: the {GUARD}-element guard bands changed"
        )
    changed = _changed(snapshot)
    if changed:
        result.failures.append(f"modified its inputs: {', '.join(changed)}")
    if verdict.ok:
        again, _, _ = run_once(backend_cls(), case, inputs)
        if not _bitwise(out, again, exp.specified):
            result.failures.append("not deterministic: the same call twice gave different bits")
    return result


def _bitwise(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> bool:
    """Equal bits at every element ``where`` marks."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool((bitwise_equal(a, b) | ~where).all())


# --- metamorphic relations ------------------------------------------------------------------

RELATIONS = ("permute_segments", "split_segment", "insert_empty", "drop_others")


def derive(case: Case, relation: str, choice: int) -> tuple[Case, list[int]] | None:
    """A related case and, for each of its rows, the row of ``case`` with the same result.

    ``case`` must not be permuted.  Returns None when the relation does not apply.
    """
    rng = random.Random(choice)
    segs = list(zip(case.seg_lens, case.weight_indices, strict=False))
    starts = [sum(case.seg_lens[:i]) for i in range(len(segs))]
    blocks = [list(range(s, s + n)) for s, (n, _) in zip(starts, segs, strict=False)]
    if relation == "permute_segments":
        order = list(range(len(segs)))
        rng.shuffle(order)
        new = [segs[i] for i in order]
        rows = [t for i in order for t in blocks[i]]
    elif relation == "split_segment":
        long = [i for i, (n, _) in enumerate(segs) if n >= 2]
        if not long:
            return None
        i = rng.choice(long)
        n, w = segs[i]
        k = rng.randint(1, n - 1)
        new = [*segs[:i], (k, w), (n - k, w), *segs[i + 1 :]]
        rows = list(range(case.T))
    elif relation == "insert_empty":
        p = rng.randint(0, len(segs))
        new = [*segs[:p], (0, rng.randrange(case.L)), *segs[p:]]
        rows = list(range(case.T))
    elif relation == "drop_others":
        nonempty = [i for i, (n, _) in enumerate(segs) if n > 0]
        if len(nonempty) < 2:
            return None
        i = rng.choice(nonempty)
        new = [segs[i]]
        rows = blocks[i]
    else:
        raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")
    derived = case.replace(
        seg_lens=tuple(n for n, _ in new), weight_indices=tuple(w for _, w in new)
    )
    return derived, rows


def _gather_inputs(inputs: Inputs, derived: Case, rows: list[int]) -> Inputs:
    device = inputs.x.device
    index = torch.tensor(rows, dtype=torch.long, device=device)
    info = derived.batch_info(device)
    base = inputs.base[index].contiguous() if inputs.base is not None else None
    return Inputs(info, inputs.x[index].contiguous(), inputs.args, base)


def check_metamorphic(
    backend_cls: type[BaseLoRABackend], case: Case, relation: str, choice: int, device: torch.device
) -> CaseResult:
    """Rows of the related case must match the original rows within the oracle's tolerance."""
    case = case.replace(permute=False)
    result = CaseResult(case, check="metamorphic", params={"relation": relation, "choice": choice})
    related = derive(case, relation, choice)
    if related is None:
        return result
    derived, rows = related
    inputs = build_inputs(case, device)
    exp = expect(case, inputs, _float32_matmul(backend_cls))
    try:
        out, _, _ = run_once(backend_cls(), case, inputs)
        out2, _, _ = run_once(backend_cls(), derived, _gather_inputs(inputs, derived, rows))
    except Exception as exc:
        result.failures.append(f"{relation}: raised {type(exc).__name__}: {exc}")
        return result
    index = torch.tensor(rows, dtype=torch.long, device=device)
    mask = exp.specified[index]
    diff = torch.where(
        mask,
        (out2.double() - out[index].double()).abs(),
        torch.zeros_like(mask, dtype=torch.float64),
    )
    bad = mask & ~(diff <= 2 * exp.tol[index])
    if bad.any():
        i, j = bad.nonzero()[0].tolist()
        result.failures.append(
            f"{relation} (choice={choice}) changed a row: row {i} of {derived.describe()} gives "
            f"{out2[i, j].item():.6g} at column {j}, the original row {rows[i]} gave "
            f"{out[rows[i], j].item():.6g}"
        )
    return result


# --- bad inputs -----------------------------------------------------------------------------


def _info_with(info: LoRABatchInfo, **changes: Any) -> LoRABatchInfo:
    fields = {k: getattr(info, k) for k in info.__dataclass_fields__}
    fields.update(changes)
    return LoRABatchInfo(**fields)


Mutation = Callable[[Inputs], tuple[LoRABatchInfo, torch.Tensor, tuple[Any, ...], Any]]


def bad_input_mutations(case: Case) -> dict[str, Mutation]:
    """Label -> a function making (batch_info, x, args, base) invalid in one SPEC.md way."""
    muts: dict[str, Mutation] = {}

    def m(label: str):
        def register(fn: Mutation) -> Mutation:
            muts[label] = fn
            return fn

        return register

    @m("x is 1-D")
    def _(i):
        return i.batch_info, i.x.flatten(), i.args, i.base

    @m("x is float64")
    def _(i):
        return i.batch_info, i.x.double(), i.args, i.base

    @m("weights dtype differs from x")
    def _(i):
        other = torch.float32 if i.x.dtype != torch.float32 else torch.float16
        return i.batch_info, i.x, (i.args[0].to(other), *i.args[1:]), i.base

    @m("weights have one slot too many")
    def _(i):
        w = i.args[0]
        return (
            i.batch_info,
            i.x,
            (torch.cat([w, w.new_zeros(1, *w.shape[1:])]), *i.args[1:]),
            i.base,
        )

    @m("x has one row too many")
    def _(i):
        return i.batch_info, torch.cat([i.x, i.x.new_zeros(1, i.x.shape[1])]), i.args, i.base

    if case.op != "expand":

        @m("x has one column too few")
        def _(i):
            return i.batch_info, i.x[:, :-1], i.args, i.base

    elif max(case.lora_ranks) > 0:

        @m("x is narrower than the largest rank")
        def _(i):
            return i.batch_info, i.x[:, : max(case.lora_ranks) - 1], i.args, i.base

    @m("seg_indptr disagrees with seg_lens")
    def _(i):
        ptr = i.batch_info.seg_indptr.clone()
        ptr[1] += 1
        return _info_with(i.batch_info, seg_indptr=ptr), i.x, i.args, i.base

    @m("negative segment length")
    def _(i):
        lens = i.batch_info.seg_lens.clone()
        ptr = i.batch_info.seg_indptr.clone()
        lens[0] = -1
        ptr[1:] -= ptr[1] + 1
        return _info_with(i.batch_info, seg_lens=lens, seg_indptr=ptr), i.x, i.args, i.base

    @m("weight index outside [0, L)")
    def _(i):
        w = i.batch_info.weight_indices.clone()
        w[0] = case.L
        return _info_with(i.batch_info, weight_indices=w), i.x, i.args, i.base

    @m("negative weight index")
    def _(i):
        w = i.batch_info.weight_indices.clone()
        w[0] = -1
        return _info_with(i.batch_info, weight_indices=w), i.x, i.args, i.base

    @m("rank above R")
    def _(i):
        r = i.batch_info.lora_ranks.clone()
        r[0] = case.R + 1
        return _info_with(i.batch_info, lora_ranks=r), i.x, i.args, i.base

    @m("seg_lens is int64")
    def _(i):
        return _info_with(i.batch_info, seg_lens=i.batch_info.seg_lens.long()), i.x, i.args, i.base

    if case.T >= 1:

        @m("permutation is not a permutation")
        def _(i):
            # T >= 2: a repeated row; T == 1: a row out of range
            perm = torch.zeros(case.T, dtype=torch.int32, device=i.x.device) + (case.T == 1)
            return _info_with(i.batch_info, permutation=perm), i.x, i.args, i.base

    @m("permutation has the wrong length")
    def _(i):
        perm = torch.arange(case.T + 1, dtype=torch.int32, device=i.x.device)
        return _info_with(i.batch_info, permutation=perm), i.x, i.args, i.base

    if case.op == "shrink":

        @m("stack_num is 4")
        def _(i):
            return i.batch_info, i.x, (i.args[0], 4), i.base

    else:

        @m("base_output has the wrong shape")
        def _(i):
            return (
                i.batch_info,
                i.x,
                i.args,
                torch.zeros(case.T, case.out_dim + 1, dtype=i.x.dtype, device=i.x.device),
            )

        @m("base_output dtype differs from x")
        def _(i):
            other = torch.float32 if i.x.dtype != torch.float32 else torch.float16
            return (
                i.batch_info,
                i.x,
                i.args,
                torch.zeros(case.T, case.out_dim, dtype=other, device=i.x.device),
            )

    if case.op == "qkv":

        @m("output_offset is int64")
        def _(i):
            return i.batch_info, i.x, (*i.args[:2], i.args[2].long(), i.args[3]), i.base

        @m("output_offset has 3 entries")
        def _(i):
            return i.batch_info, i.x, (*i.args[:2], i.args[2][:3], i.args[3]), i.base

    return muts


def check_bad_inputs(
    backend_cls: type[BaseLoRABackend], case: Case, device: torch.device
) -> CaseResult:
    """Each mutation must raise ``ValueError``/``TypeError`` and leave ``base_output`` as it was."""
    result = CaseResult(case, check="bad_input")
    good = build_inputs(case, device)
    for label, mutate in bad_input_mutations(case).items():
        info, x, args, base = mutate(good)
        base_before = base.clone() if isinstance(base, torch.Tensor) else None
        backend = backend_cls()
        try:
            backend.set_batch_info(info)
            call(backend, case, Inputs(info, x, args, base), base)
        except (ValueError, TypeError):
            pass
        except Exception as exc:
            result.failures.append(
                f"{label}: raised {type(exc).__name__} ({exc}), expected ValueError or TypeError"
            )
            continue
        else:
            result.failures.append(f"{label}: accepted, expected ValueError or TypeError")
            continue
        if base_before is not None and not torch.equal(base, base_before):
            result.failures.append(f"{label}: raised, but wrote base_output first")
    return result


# --- CUDA graphs ----------------------------------------------------------------------------


def graph_layouts(case: Case, capacity: int) -> list[Case]:
    """The capture layout and two refills over the same ``T`` rows: more, then fewer segments."""
    T = case.T
    rng = random.Random(case.seed)
    out = []
    for bs in (max(1, capacity // 3), capacity, 1):
        bs = min(bs, max(T, 1))
        cuts = sorted(rng.sample(range(1, T), bs - 1)) if T > 1 and bs > 1 else []
        lens = [b - a for a, b in zip([0, *cuts], [*cuts, T], strict=False)] if T else [0]
        slots = [rng.randrange(case.L) for _ in lens]
        out.append(case.replace(seg_lens=tuple(lens), weight_indices=tuple(slots), permute=False))
    return out


def check_cuda_graph(
    backend_cls: type[BaseLoRABackend], case: Case, capacity: int = 12
) -> CaseResult:
    """Capture ``case.op`` once, refill the batch info in place with other layouts, replay, diff."""
    result = CaseResult(case, check="cuda_graph", params={"capacity": capacity})
    device = torch.device("cuda")
    layouts = graph_layouts(case, capacity)
    first = build_inputs(layouts[0], device)
    graph_info = layouts[0].batch_info(device, capacity=capacity)
    backend = backend_cls()
    backend.set_batch_info(graph_info)
    static_base = first.base.clone() if first.base is not None else None
    static = Inputs(graph_info, first.x.clone(), first.args, static_base)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up: compile kernels, fill caches
            call(
                backend,
                layouts[0],
                static,
                static_base.clone() if static_base is not None else None,
            )
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = call(backend, layouts[0], static, static_base)
    except Exception as exc:
        result.failures.append(f"capture failed: {type(exc).__name__}: {exc}")
        return result
    for layout in layouts:
        fresh = build_inputs(layout, device)
        refill_batch_info(graph_info, fresh.batch_info)
        static.x.copy_(fresh.x)
        if static_base is not None and fresh.base is not None:
            static_base.copy_(fresh.base)
        graph.replay()
        torch.cuda.synchronize()
        exp = expect(
            layout,
            Inputs(fresh.batch_info, fresh.x, first.args, fresh.base),
            _float32_matmul(backend_cls),
        )
        verdict: Verdict = compare(layout, out.clone(), exp)
        result.worst_ratio = max(result.worst_ratio, verdict.worst_ratio)
        if not verdict.ok:
            result.failures.append(
                f"replay after refill to seg_lens={list(layout.seg_lens)} (captured with "
                f"{list(layouts[0].seg_lens)}): {verdict.message}"
            )
    return result
