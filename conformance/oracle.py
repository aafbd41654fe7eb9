"""The oracle: the float64 reference result and a per-element tolerance derived from magnitudes.

Tolerance model
---------------
A flat atol/rtol is either too loose for small outputs or too tight where terms cancel.  Every
element gets its own bound instead, from the classic floating-point error analysis of a dot
product: the error of ``sum_k a_k b_k`` computed in precision ``u`` is at most ``n u sum|a_k b_k|``.

Let ``M`` be the LoRA term evaluated on absolute values (``|s| * (|x| @ |A|^T) @ |B|^T`` for the
fused ops; ``|x| @ |A|^T`` for shrink; ``|s| * |x| @ |B|^T`` for expand) and ``|base|`` the base
magnitude.  With ``u`` the unit roundoff of the input dtype (2^-11 float16, 2^-8 bfloat16,
2^-24 float32) and ``u32 = 2^-24``::

    tol = ALPHA * (chain * M  +  u * (|base| + M))  +  floor

* ``u * (|base| + M)``: rounding of the final result (after the add into ``base_output``) to the
  output dtype.  For shrink there is no base.
* ``chain``, the relative error accumulated before the final rounding:
  - float32 accumulation of each GEMM: ``K * u32`` (shrink) and ``R * u32`` (expand);
  - operand truncation to TF32 (``2 * 2^-10`` per GEMM: tensor cores drop the low mantissa
    bits rather than round) for float32 inputs on a GPU, when the backend declares
    ``float32_matmul="tf32"`` (the contract allows it);
  - the rounding of the fused paths' intermediate ``x @ A^T`` to the input dtype: ``u``;
  - the float32 multiply by the scaling: ``u32``.
* ``floor``: two subnormal spacings of the dtype, for results that underflow; in the fused ops
  also ``ALPHA * spacing * M_B`` with ``M_B = |s| * sum_k |B[n, k]|``: a shrink result rounded
  to the input dtype inside its subnormal range carries an absolute error of up to half a
  spacing, which the expand multiplies by ``s * B`` (a GPU campaign found it: float16,
  dynamic-range data, scaling 40).
* ``ALPHA = 2`` absorbs what the bound leaves out (an accumulator that rounds at each tile).

Overflow: where the exact value lies beyond the dtype's range (``|ref| + tol`` reaches the
overflow threshold, the maximum plus half an ulp), an infinity of the exact value's sign is
also accepted, since that is what correct rounding gives.  NaN is never accepted.

Products of two float16 or bfloat16 values are exact in float32, so no operand term enters there.
Rows whose adapter has rank 0 are held to bit-exactness instead: they must equal ``base``.

The model was calibrated against a GPU campaign (see README, "Calibration"); the worst
error-to-tolerance ratio seen is reported by every run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from conformance.case import Case
from conformance.inputs import Inputs, call, overflow_threshold, physical_row_slots
from conformance.ops import torch_dtype
from lora_ref import ReferenceLoRABackend

ALPHA = 2.0
U32 = 2.0**-24
TF32 = 2.0**-10  # tensor cores truncate float32 operands to TF32's 10 mantissa bits
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
SUBNORMAL_SPACING = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}


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


def magnitudes(case: Case, inputs: Inputs, ref: ReferenceLoRABackend):
    """The exact result and the two magnitude bounds of the tolerance model, all float64.

    ``M``: the same call on absolute values (``|x|``, ``|A|``, ``|B|``, ``|s|``, no base).
    ``M_B`` (fused ops only, else None): ``|s| * sum_k |B[w, n, k]|`` over the adapter's rank,
    which scales the absolute rounding error of a shrink result that falls in the subnormal
    range of the input dtype.  ``ref`` must be inside its ``exact()`` block.
    """
    info = inputs.batch_info
    exact = call(ref, case, inputs, inputs.base)
    absolute = dataclasses.replace(info, scalings=info.scalings.abs())
    args = tuple(
        tuple(a.abs() for a in arg) if isinstance(arg, tuple)
        else arg.abs() if isinstance(arg, torch.Tensor) and arg.is_floating_point()
        else arg
        for arg in inputs.args
    )  # fmt: skip
    ref.set_batch_info(absolute)
    magnitude = call(ref, case, Inputs(absolute, inputs.x.abs(), args, None), None)
    b_magnitude = None
    if case.op in ("qkv", "gate_up"):
        # an intermediate of ones: x (T, 1) @ A (L, c*R, 1)^T
        ones_x = torch.ones(inputs.x.shape[0], 1, dtype=inputs.x.dtype, device=inputs.x.device)
        ones_a = torch.ones(*args[0].shape[:2], 1, dtype=args[0].dtype, device=args[0].device)
        b_args = (ones_a, *args[1:])
        b_magnitude = call(ref, case, Inputs(absolute, ones_x, b_args, None), None)
    ref.set_batch_info(info)
    return exact, magnitude, b_magnitude


def chain_roundoff(case: Case, float32_matmul: str, device: torch.device) -> float:
    """The relative error accumulated before the final rounding (see the module docstring)."""
    dtype = getattr(torch, case.dtype)
    tf32 = (
        2 * TF32
        if dtype == torch.float32 and float32_matmul == "tf32" and device.type == "cuda"
        else 0.0
    )
    if case.op == "shrink":
        return case.K * U32 + tf32
    if case.op == "expand":
        return case.R * U32 + tf32 + U32
    return (case.K + case.R) * U32 + 2 * tf32 + UNIT_ROUNDOFF[dtype] + U32


def tolerance(
    case: Case,
    magnitude: torch.Tensor,
    base: torch.Tensor | None,
    float32_matmul: str,
    device: torch.device,
    b_magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each element's bound from ``M``, ``|base|`` and, for the fused ops, ``M_B`` (the module
    docstring)."""
    dtype = getattr(torch, case.dtype)
    u = UNIT_ROUNDOFF[dtype]
    spacing = SUBNORMAL_SPACING[dtype]
    chain = chain_roundoff(case, float32_matmul, device)
    base_mag = base.double().abs() if base is not None else torch.zeros_like(magnitude)
    tol = ALPHA * (chain * magnitude + u * (base_mag + magnitude)) + 2 * spacing
    if b_magnitude is not None:  # a shrink result rounded into the subnormal range
        tol = tol + ALPHA * spacing * b_magnitude
    return tol


def expect(case: Case, inputs: Inputs, float32_matmul: str = "tf32") -> Expectation:
    """Compute the reference result and the tolerance of every element of ``case``."""
    device = inputs.x.device
    ref_backend = ReferenceLoRABackend(batch_info=inputs.batch_info)
    with ref_backend.exact():
        ref, magnitude, b_magnitude = magnitudes(case, inputs, ref_backend)
    tol = tolerance(case, magnitude, inputs.base, float32_matmul, device, b_magnitude)
    if bool((tol < 0).any()):
        raise AssertionError("oracle: a negative tolerance; the magnitude run saw a signed input")

    info = inputs.batch_info
    perm = info.permutation.tolist() if info.permutation is not None else None
    row_ranks = torch.tensor(
        [case.lora_ranks[w] for w in physical_row_slots(case, perm)],
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
    """Elementwise bit equality (distinguishes -0.0 from 0.0 and NaN payloads)."""
    int_type = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.contiguous().view(int_type) == b.contiguous().view(int_type)
