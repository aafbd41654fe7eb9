"""The differential check: one call against the float64 oracle, plus every per-call property.

Per example: garbage regions poisoned (:mod:`conformance.inputs`), fresh allocations poisoned,
``base_output`` between guard bands (and laid out as the case asks), inputs snapshotted, rank-0
rows bit-exact, and the same call on a second, fresh instance bitwise equal (determinism).
After both calls (the device synchronised), and again when the next example starts, the first
call's result, its inputs and the guard bands must hold the bits they held when it returned: a
backend whose threads or streams write after returning fails ("wrote after returning").
"""

from __future__ import annotations

import time

import torch

from conformance import corners
from conformance.case import Case
from conformance.checks.base import (
    Check,
    Example,
    GroupContext,
    drawn,
    plain,
    primary_corners,
    requires,
)
from conformance.checks.guards import (
    CaseResult,
    backend_call,
    bits_equal_where,
    changed,
    guarded_output,
    poison_allocator,
    record_problem,
    snapshot,
)
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import OPS, torch_dtype
from conformance.oracle import Expectation, compare, expect_for
from lora_ref import BaseLoRABackend


def run_call(
    backend_cls: type[BaseLoRABackend], case: Case, inputs: Inputs, result: CaseResult, what: str
):
    """Construct a fresh backend, set the batch, call the op once with a guarded
    ``base_output``.  Returns ``(out, guard)`` or None after recording the problem."""
    guard = (
        guarded_output(inputs.base, case.arg_layout("base")) if inputs.base is not None else None
    )
    poison_allocator(case.T * case.out_dim, torch_dtype(case.dtype), inputs.x.device)

    def go():
        backend = backend_cls()
        backend.set_batch_info(inputs.batch_info)
        return call(backend, case, inputs, guard.view if guard is not None else None)

    out, problem = backend_call(go)
    if problem is not None:
        record_problem(result, problem, f"{what} on a valid input")
        return None
    return out, guard


def check_diff(
    backend_cls: type[BaseLoRABackend],
    case: Case,
    device: torch.device,
    exp: Expectation | None = None,
    check: str = "diff",
) -> CaseResult:
    """Run ``case`` on fresh ``backend_cls`` instances and apply every per-call check."""
    result = CaseResult(case, check=check)
    for earlier in _recent_watches():
        if touched := earlier.changed():
            result.fail(
                f"wrote after returning: {', '.join(touched)} of an earlier example changed "
                "after its call had returned"
            )
    inputs = build_inputs(case, device)
    exp = exp or expect_for(case, inputs, backend_cls.capabilities)
    snap = snapshot(inputs)
    first = run_call(backend_cls, case, inputs, result, "the call")
    if first is None:
        return result
    out, guard = first
    verdict = compare(case, out, exp)
    result.note_ratio(verdict.worst_ratio)
    if not verdict.ok:
        result.fail(f"wrong result: {verdict.message}")
    else:
        result.below_signal_floor = below_signal_floor(case, inputs, exp)
    if guard is not None and not guard.intact():
        result.fail("wrote outside base_output: the sentinels around and between its rows changed")
    touched = changed(snap)
    if touched:
        result.fail(f"modified its inputs: {', '.join(touched)}")
    # inputs already reported as modified are not watched again
    watch = LateWrites([e for e in snap if e[0] not in touched], out, guard)
    if verdict.ok and isinstance(out, torch.Tensor):
        out = out.clone()  # the second call may write into the same buffer
        second = run_call(backend_cls, case, inputs, result, "the second, identical call")
        if second is not None and not isinstance(second[0], torch.Tensor):
            result.fail(f"the second call returned {type(second[0]).__name__}, not a tensor")
        again = second[0] if second is not None else None
        if isinstance(again, torch.Tensor) and not bits_equal_where(out, again, exp.specified):
            result.fail("not deterministic: the same call twice gave different bits")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    touched = watch.changed()
    if touched:
        result.fail(f"wrote after returning: {', '.join(touched)} changed after the call returned")
    _LATE.append((time.monotonic(), watch.later()))
    return result


def below_signal_floor(case: Case, inputs: Inputs, exp: Expectation) -> bool:
    """Whether ``case``'s LoRA terms are too small, against base and the dtype's rounding, to
    show: the result with every LoRA term dropped (``base_output``, or zeros) is within the
    tolerance too, so a backend that dropped them, or got them wrong by as much, would pass.
    Such an example passes but is not evidence (the signal floor; SGLang's own benchmarks
    refuse bf16 deltas below about 12.5% of base for this reason).  A shrink has no base: its
    result is all LoRA term, and never below the floor."""
    if case.op == "shrink" or case.T == 0 or case.out_dim == 0:
        return False
    if not any(case.lora_ranks[w] for n, w in zip(case.seg_lens, case.weight_indices,
                                                  strict=True) if n):  # fmt: skip
        return False  # no LoRA rows at all: the bit-exact base rule is the evidence
    dropped = inputs.base if inputs.base is not None else torch.zeros_like(exp.ref)
    return compare(case, dropped.to(torch_dtype(case.dtype)), exp).ok


class LateWrites:
    """What one call's caller holds when it returns (the result, the inputs, the buffer around
    ``base_output``), with copies of the bits, to look at again later."""

    def __init__(self, snap: list, out: object = None, guard: object = None) -> None:
        self.snap = list(snap)
        if isinstance(out, torch.Tensor):
            self.snap.append(("the result", out, out.clone()))
        if guard is not None:
            self.snap.append(("the buffer around base_output", guard.buffer, guard.buffer.clone()))

    def changed(self) -> list[str]:
        return changed(self.snap)

    def later(self) -> LateWrites:
        """The part kept for the examples that follow: the result, ``x`` and the buffer around
        ``base_output`` (the weight pools, the largest inputs, are looked at only at the end of
        their own example)."""
        return LateWrites([e for e in self.snap if e[0] == "x" or e[0].startswith("the ")])


# the watches of the examples of the last LATE_WINDOW seconds (at most LATE_MAX), looked at
# again when each example starts (one list per process)
LATE_WINDOW, LATE_MAX = 2.0, 64
_LATE: list[tuple[float, LateWrites]] = []


def _recent_watches() -> list[LateWrites]:
    """The watches still in the window (each is looked at once more after it leaves)."""
    now = time.monotonic()
    out = [w for _, w in _LATE]
    _LATE[:] = [(t, w) for t, w in _LATE[-LATE_MAX:] if now - t < LATE_WINDOW]
    return out


def _corners(ctx: GroupContext) -> list[Example]:
    cases = corners.explicit_cases(
        ctx.op, ctx.dtype, ctx.op_dtypes, ctx.profile.name, ctx.caps.permutation, False,
        ctx.caps.n_slices,
    )  # fmt: skip
    return [Example(c, {}) for c in cases + _huge(ctx)]


def _huge(ctx: GroupContext) -> list[Case]:
    """The GPU-only size classes (element offsets past 2^31), in the thorough profile on a
    CUDA device with the memory for them, in the group's dtype."""
    if ctx.profile.name != "thorough" or ctx.device != "cuda" or not torch.cuda.is_available():
        return []
    free, _ = torch.cuda.mem_get_info()
    size = torch.empty((), dtype=getattr(torch, ctx.dtype)).element_size()
    return [c.replace(dtype=ctx.dtype) for c in corners.huge_cases(ctx.op, size, free)]


CHECK = Check(
    name="diff",
    doc="against the float64 oracle, per element; garbage regions (beyond each rank, unused "
    "slots, strided buffers) hold NaN or huge values; fresh allocations poisoned; "
    "`base_output` between sentinels; inputs snapshotted; rank-0 rows bit-exact; the same call "
    "twice bit-identical",
    rules=("3-the-operations-baselorabackend", "4-results", "5-numerics", "7-empty-dimensions"),
    ops=OPS,
    dtypes="all",
    scale=1.0,
    shrink=True,
    strategy=lambda ctx: plain(drawn(ctx)),
    explicit=_corners,
    run=lambda b, e, d: check_diff(b, e.case, d),
)


def diff_variant(
    name: str, doc: str, rules: tuple[str, ...], ops: tuple[str, ...], flag: str, declared: str,
    corner_count: int, **forced: object,
) -> Check:  # fmt: skip
    """The diff check on the cases of one layout family (``forced`` set on every case), run
    where the backend declares ``flag``, in its first declared dtype, with half the examples."""
    return Check(
        name=name,
        doc=doc,
        rules=rules,
        ops=ops,
        dtypes="primary",
        scale=0.5,
        shrink=True,
        needs=requires(flag, declared),
        strategy=lambda ctx: plain(drawn(ctx, **forced)),
        explicit=lambda ctx: primary_corners(ctx, corner_count, **forced),
        run=lambda b, e, d: check_diff(b, e.case, d, check=name),
    )
