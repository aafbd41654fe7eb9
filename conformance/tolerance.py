"""The tolerance model: a per-element error bound derived from magnitudes.

The emitted repro scripts (``conformance/repro.py``) carry this module verbatim, so it imports
nothing from the harness but :mod:`conformance.inputs`, which they carry too.

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
* ``accumulator floor``: every float32 operation that lands in float32's subnormal range rounds
  to its spacing, ``2^-149``, absolutely: ``ALPHA * 2^-149 * (K + R + 2) * (1 + M_B)`` covers
  the ``K + R + 2`` operations of a row, the shrink's share carried through ``s * B``.
* A backend that declares ``subnormals="flush"`` may flush any intermediate or result below the
  smallest normal to zero: both floors then use the smallest normal instead of the subnormal
  spacing (``2^-126`` for float32 and bfloat16, ``2^-14`` for float16 results).
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

import torch

from conformance.inputs import Inputs, call

ALPHA = 2.0
U32 = 2.0**-24
TF32 = 2.0**-10  # tensor cores truncate float32 operands to TF32's 10 mantissa bits
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
SUBNORMAL_SPACING = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
SMALLEST_NORMAL = {torch.float16: 2.0**-14, torch.bfloat16: 2.0**-126, torch.float32: 2.0**-126}
SUBNORMALS = ("preserve", "flush")


def magnitudes(case, inputs: Inputs, ref):
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


def chain_roundoff(case, float32_matmul: str, device: torch.device) -> float:
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
    case,
    magnitude: torch.Tensor,
    base: torch.Tensor | None,
    float32_matmul: str,
    device: torch.device,
    b_magnitude: torch.Tensor | None = None,
    subnormals: str = "preserve",
) -> torch.Tensor:
    """Each element's bound from ``M``, ``|base|`` and, for the fused ops, ``M_B`` (the module
    docstring)."""
    dtype = getattr(torch, case.dtype)
    u = UNIT_ROUNDOFF[dtype]
    flush = subnormals == "flush"
    spacing = SMALLEST_NORMAL[dtype] if flush else SUBNORMAL_SPACING[dtype]
    acc_spacing = SMALLEST_NORMAL[torch.float32] if flush else SUBNORMAL_SPACING[torch.float32]
    chain = chain_roundoff(case, float32_matmul, device)
    base_mag = base.double().abs() if base is not None else torch.zeros_like(magnitude)
    ops = case.K + case.R + 2
    tol = ALPHA * (chain * magnitude + u * (base_mag + magnitude)) + 2 * spacing
    tol = tol + ALPHA * acc_spacing * ops
    if b_magnitude is not None:  # a shrink result rounded into the subnormal range
        tol = tol + ALPHA * (spacing + acc_spacing * ops) * b_magnitude
    return tol
