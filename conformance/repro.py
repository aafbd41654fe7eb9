"""``lora-conformance replay FILE --emit-script repro.py``: a standalone script for a bug report.

The script needs torch, the backend's package and the contract package (``lora_ref``, which
every backend subclasses and which holds the float64 reference) — not this harness.  It carries
the case as data and, copied verbatim from the harness, the code that rebuilds its tensors from
the seed (:mod:`conformance.inputs`) and the tolerance model (:mod:`conformance.oracle`), so it
computes exactly what the harness did.  It calls the backend, compares every element with the
float64 reference within the tolerance (rank-0 rows bit for bit), calls again to check
determinism, prints what it found and exits 1 when the failure reproduces, 0 when it does not.
"""

from __future__ import annotations

import inspect
import pprint
import textwrap
from typing import Any

from conformance import inputs, oracle
from conformance.case import Case

EMITTABLE = ("diff", "permutation", "split_layout")


def _source(obj: Any) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def _module_body(module: Any) -> str:
    """The module's source without its docstring and ``__future__`` import."""
    src = inspect.getsource(module)
    tree_start = src.index("from __future__ import annotations")
    return src[tree_start + len("from __future__ import annotations") :].lstrip("\n")


_MAIN = '''

def run_backend(case, device):
    """One call on a fresh backend; returns the result (a copy) and the inputs."""
    made = build_inputs(case, device)
    base = made.base.clone() if made.base is not None else None
    backend = Backend()
    backend.set_batch_info(made.batch_info)
    out = call(backend, case, made, base)
    return out.clone() if isinstance(out, torch.Tensor) else out, made


def reference(case, made, float32_matmul, device):
    """The float64 result and each element's tolerance (the harness's oracle)."""
    ref = ReferenceLoRABackend(batch_info=made.batch_info)
    with ref.exact():
        exact, magnitude, b_magnitude = magnitudes(case, made, ref)
    return exact, tolerance(case, magnitude, made.base, float32_matmul, device, b_magnitude)


def main() -> int:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else DEVICE)
    case = Case(**CASE)
    print(f"backend {BACKEND_TARGET}, {case.op} in {case.dtype} on {device}")
    out, made = run_backend(case, device)
    T, D = sum(case.seg_lens), case.out_dim
    dtype = getattr(torch, case.dtype)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (T, D) or out.dtype != dtype:
        got = getattr(out, "shape", type(out))
        print(f"REPRODUCED: returned {got}, expected ({T}, {D}) {dtype}")
        return 1
    exact, tol = reference(case, made, FLOAT32_MATMUL, device)
    perm = made.batch_info.permutation
    slots = physical_row_slots(case, perm.tolist() if perm is not None else None)
    ranks = torch.tensor([case.lora_ranks[w] for w in slots], dtype=torch.int64, device=device)
    specified = torch.ones(T, D, dtype=torch.bool, device=device)
    if case.op == "shrink":
        cols = torch.arange(D, device=device)
        specified = cols[None, :] < (case.stack * ranks)[:, None]
    got = out.double()
    err = (got - exact).abs()
    beyond = exact.abs() + tol >= overflow_threshold(dtype)
    inf_ok = torch.isinf(got) & beyond & (torch.sign(got) == torch.sign(exact))
    bad = specified & ~((err <= tol) | inf_ok)
    if case.op != "shrink":
        zero_rows = (ranks == 0).nonzero().flatten()
        want = made.base[zero_rows] if made.base is not None else torch.zeros_like(out[zero_rows])
        if not torch.equal(out[zero_rows].view(torch.uint8), want.contiguous().view(torch.uint8)):
            print("REPRODUCED: a rank-0 row differs from base_output (it must be bit-exact)")
            return 1
    if bad.any():
        t, j = bad.nonzero()[0].tolist()
        print(
            f"REPRODUCED: out[{t}, {j}] = {got[t, j].item():.6g}, but the float64 reference is "
            f"{exact[t, j].item():.6g} ± {tol[t, j].item():.3g} "
            f"({int(bad.sum())} of {int(specified.sum())} elements off)"
        )
        return 1
    again, _ = run_backend(case, device)
    same = out.view(torch.uint8) == again.view(torch.uint8)
    if isinstance(again, torch.Tensor) and not bool(same.all()):
        print("REPRODUCED: the same call twice gave different bits (not deterministic)")
        return 1
    print("not reproduced: every element is within its tolerance and the call is deterministic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def emit_script(doc: dict[str, Any], backend_target: str, device: str = "cpu") -> str:
    """The text of a standalone repro script for the failure ``doc`` (a loaded replay file) on
    the backend ``backend_target`` (``package.module:Class``)."""
    if doc["check"] not in EMITTABLE:
        raise ValueError(
            f"--emit-script: writes scripts for the {', '.join(EMITTABLE)} checks, "
            f"this file holds a {doc['check']} failure; replay it with lora-conformance replay"
        )
    module, _, cls = backend_target.partition(":")
    case = doc["case"]
    data = case.to_json()
    data_text = pprint.pformat(data, sort_dicts=True)
    failures = "\n".join(f"#   {line}" for line in doc.get("failures", [])) or "#   (none saved)"
    header = f'''#!/usr/bin/env python3
"""Reproduce a multi-LoRA backend finding: {case.describe()}

Found by lora-conformance ({doc["check"]} check) on backend {doc["backend"]!r}.  Needs torch,
the backend's package and the contract package lora_ref; run: python {{this file}} [cpu|cuda]
"""
# What the harness reported:
{failures}

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

from {module} import {cls.split(".")[0]} as _backend_root
from lora_ref import ReferenceLoRABackend

Backend = _backend_root{"".join("." + p for p in cls.split(".")[1:])}
BACKEND_TARGET = {backend_target!r}
DEVICE = {device!r}
FLOAT32_MATMUL = getattr(Backend.capabilities, "float32_matmul", "tf32")
CASE = {data_text}


class Case(SimpleNamespace):
    """The case's fields, and the output width the harness derives from them."""

{textwrap.indent(_source(Case.out_dim.fget), "    ")}

# ---- the harness's input builder (conformance/inputs.py), verbatim ----
'''
    parts = [
        header,
        _module_body(inputs),
        "\n\n# ---- the harness's tolerance model (conformance/oracle.py), verbatim ----\n",
        "ALPHA = 2.0\nU32 = 2.0**-24\nTF32 = 2.0**-10\n",
        f"UNIT_ROUNDOFF = {{torch.float16: {oracle.UNIT_ROUNDOFF[_t('float16')]!r}, "
        f"torch.bfloat16: {oracle.UNIT_ROUNDOFF[_t('bfloat16')]!r}, "
        f"torch.float32: {oracle.UNIT_ROUNDOFF[_t('float32')]!r}}}\n",
        f"SUBNORMAL_SPACING = {{torch.float16: {oracle.SUBNORMAL_SPACING[_t('float16')]!r}, "
        f"torch.bfloat16: {oracle.SUBNORMAL_SPACING[_t('bfloat16')]!r}, "
        f"torch.float32: {oracle.SUBNORMAL_SPACING[_t('float32')]!r}}}\n\n\n",
        _source(oracle.magnitudes),
        "\n\n",
        _source(oracle.chain_roundoff),
        "\n\n",
        _source(oracle.tolerance),
        _MAIN,
    ]
    return "".join(parts)


def _t(name: str):
    import torch

    return getattr(torch, name)
