"""The oracle: the float64 reference result, each element's tolerance
(:mod:`conformance.tolerance`), and the comparison of a result with both."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from conformance.case import Case
from conformance.inputs import Inputs, overflow_threshold, row_slots
from conformance.names import torch_dtype
from conformance.tolerance import magnitudes, tolerance
from lora_ref import ReferenceLoRABackend


@dataclass
class Expectation:
    """What a correct backend returns for one case.

    Attributes:
        ref: float64 ``(T, out_dim)`` exact result (unspecified elements hold 0).
        tol: float64 ``(T, out_dim)`` per-element tolerance.
        specified: bool ``(T, out_dim)``: elements the contract defines.
        exact_rows: bool ``(T,)``: rows that must equal ``base`` bit for bit (rank 0).
        base: the ``base_output`` values given (None when absent).
    """

    ref: torch.Tensor
    tol: torch.Tensor
    specified: torch.Tensor
    exact_rows: torch.Tensor
    base: torch.Tensor | None


def expect(
    case: Case, inputs: Inputs, float32_matmul: str = "tf32", subnormals: str = "preserve"
) -> Expectation:
    """Compute the reference result and the tolerance of every element of ``case``, for a
    backend declaring ``float32_matmul`` and ``subnormals`` (``Capabilities``)."""
    device = inputs.x.device
    ref_backend = ReferenceLoRABackend(batch_info=inputs.batch_info)
    with ref_backend.exact():
        ref, magnitude, b_magnitude = magnitudes(case, inputs, ref_backend)
    tol = tolerance(case, magnitude, inputs.base, float32_matmul, device, b_magnitude, subnormals)
    if bool((tol < 0).any()):
        raise AssertionError("oracle: a negative tolerance; the magnitude run saw a signed input")

    row_ranks = torch.tensor(
        [case.lora_ranks[w] if w >= 0 else 0 for w in row_slots(inputs.batch_info)],
        dtype=torch.int64,
        device=device,
    )
    cols = torch.arange(case.out_dim, device=device)
    if case.op == "shrink":
        specified = cols[None, :] < (case.stack * row_ranks)[:, None]
        exact_rows = torch.zeros(case.T, dtype=torch.bool, device=device)
    else:
        specified = torch.ones(case.T, case.out_dim, dtype=torch.bool, device=device)
        exact_rows = row_ranks == 0
    ref = torch.where(specified, ref, torch.zeros_like(ref))
    return Expectation(ref, tol, specified, exact_rows, inputs.base)


def expect_for(case: Case, inputs: Inputs, capabilities: object) -> Expectation:
    """:func:`expect` for a backend whose ``Capabilities`` are ``capabilities``."""
    return expect(
        case,
        inputs,
        getattr(capabilities, "float32_matmul", "tf32"),
        getattr(capabilities, "subnormals", "preserve"),
    )


@dataclass
class Verdict:
    """The outcome of comparing one result with its expectation.

    ``worst_ratio`` is the largest error/tolerance over the specified elements: ``nan`` when
    the result holds a NaN there, ``inf`` for a wrong shape, dtype or bit pattern.
    """

    ok: bool
    worst_ratio: float
    message: str = ""


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _overflow_ok(got: torch.Tensor, exp: Expectation, dtype: torch.dtype) -> torch.Tensor:
    """Infinities of the exact value's sign where the exact value may lie past the range."""
    beyond = exp.ref.abs() + exp.tol >= overflow_threshold(dtype)
    same_sign = torch.sign(got) == torch.sign(exp.ref)
    return torch.isinf(got) & beyond & same_sign


def compare(case: Case, out: object, exp: Expectation) -> Verdict:
    """Check ``out`` against ``exp``: shape, dtype, exact rank-0 rows, tolerance everywhere else."""
    T, D = case.T, case.out_dim
    dtype = torch_dtype(case.dtype)
    if not isinstance(out, torch.Tensor):
        return Verdict(False, math.inf, f"returned {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != (T, D) or out.dtype != dtype:
        return Verdict(
            False,
            math.inf,
            f"returned shape {tuple(out.shape)} {out.dtype}, expected ({T}, {D}) {dtype}",
        )
    if out.device != exp.ref.device:
        return Verdict(
            False, math.inf, f"returned a tensor on {out.device}, expected {exp.ref.device}"
        )

    if exp.exact_rows.any():
        rows = exp.exact_rows.nonzero().flatten()
        want = exp.base[rows] if exp.base is not None else torch.zeros_like(out[rows])
        got = out[rows]
        same = bitwise_equal(got, want)
        if not same.all():
            i, j = (~same).nonzero()[0].tolist()
            t = rows[i].item()
            return Verdict(
                False,
                math.inf,
                f"out[{t}, {j}]={_fmt(got[i, j].item())}, "
                "but a rank-0 row must equal base bit for bit: "
                f"{_fmt(want[i, j].item())}",
            )

    got = out.double()
    zeros = torch.zeros_like(got)
    err = torch.where(exp.specified, (got - exp.ref).abs(), zeros)
    inf_ok = _overflow_ok(got, exp, dtype)
    within = err <= exp.tol  # NaN compares false: never within
    bad = exp.specified & ~(within | inf_ok)
    measured = exp.specified & (exp.tol > 0) & ~inf_ok
    ratio = torch.where(measured, err / exp.tol, zeros)
    worst = _worst(ratio, exp.specified & torch.isnan(got))
    if bad.any():
        t, j = bad.nonzero()[0].tolist()
        count = int(bad.sum())
        return Verdict(
            False,
            worst,
            f"out[{t}, {j}]={_fmt(got[t, j].item())}, but should be {_fmt(exp.ref[t, j].item())} "
            f"± {_fmt(exp.tol[t, j].item())} ({count} of {int(exp.specified.sum())} elements off)",
        )
    return Verdict(True, worst)


def _worst(ratio: torch.Tensor, nan_mask: torch.Tensor) -> float:
    """The largest ratio, ``nan`` if any specified element is NaN (shown as such, not clamped)."""
    if bool(nan_mask.any()):
        return math.nan
    return float(ratio.max()) if ratio.numel() else 0.0


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bit equality (distinguishes -0.0 from 0.0 and NaN payloads) of the values
    (a negative view's are its storage negated)."""
    int_type = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    a, b = (t.resolve_neg().resolve_conj().contiguous() for t in (a, b))
    return a.view(int_type) == b.view(int_type)
