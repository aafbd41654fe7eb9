"""``lora-conformance replay FILE --emit-script repro.py``: a standalone script for a bug report.

The script needs torch, the backend's package and the contract package (``lora_ref``, which
every backend subclasses and which holds the float64 reference) — not this harness.  It carries
the case as data and, copied verbatim from the harness, the code that rebuilds its tensors from
the seed (:mod:`conformance.inputs`) and the tolerance model (:mod:`conformance.tolerance`), so it
computes exactly what the harness did.  It calls the backend, compares every element with the
float64 reference within the tolerance (rank-0 rows bit for bit), calls again to check
determinism, prints what it found and exits 1 when the failure reproduces, 0 when it does not.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

from conformance import inputs, tolerance
from conformance.case import Case

EMITTABLE = ("diff", "permutation", "split_layout")
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _literal(value: Any) -> str:
    """``value`` (plain data: str, int, float, bool, None, lists, dicts) as a Python literal on
    one line, checked: it evaluates back to ``value`` and holds no line break."""
    text = repr(value)
    if "\n" in text or "\r" in text or ast.literal_eval(text) != value:
        raise ValueError(f"--emit-script: cannot write {text[:80]} as a literal")
    return text


def _source(obj: Any) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def _module_body(module: Any) -> str:
    """The module's source without its docstring, its ``__future__`` import and its imports
    from this harness (the script carries what they name)."""
    src = inspect.getsource(module)
    tree_start = src.index("from __future__ import annotations")
    body = src[tree_start + len("from __future__ import annotations") :].lstrip("\n")
    return "".join(
        line for line in body.splitlines(keepends=True) if not line.startswith("from conformance")
    )


_MAIN = '''

def run_backend(case, device):
    """One call on a fresh backend; returns the result (a copy) and the inputs."""
    made = build_inputs(case, device)
    base = made.base.clone() if made.base is not None else None
    backend = Backend()
    backend.set_batch_info(made.batch_info)
    out = call(backend, case, made, base)
    return out.clone() if isinstance(out, torch.Tensor) else out, made


def reference(case, made, device):
    """The float64 result and each element's tolerance (the harness's oracle)."""
    ref = ReferenceLoRABackend(batch_info=made.batch_info)
    with ref.exact():
        exact, magnitude, b_magnitude = magnitudes(case, made, ref)
    tol = tolerance(
        case, magnitude, made.base, FLOAT32_MATMUL, device, b_magnitude, SUBNORMALS
    )
    return exact, tol


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
    exact, tol = reference(case, made, device)
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
    if not _TARGET.fullmatch(backend_target):
        raise ValueError(
            f"--emit-script: the backend must be package.module:Class (identifiers only), "
            f"got {backend_target!r}"
        )
    module, _, cls = backend_target.partition(":")
    case = doc["case"]
    data = case.to_json()
    data_text = _literal(data)
    # text from the file enters the script only as literals (repr never spans lines), in
    # comments and in the docstring alike
    failures = "\n".join(f"#   {_literal(line)}" for line in doc.get("failures", []))
    header = f'''#!/usr/bin/env python3
"""Reproduce a multi-LoRA backend finding found by lora-conformance.  Needs torch, the backend's
package and the contract package lora_ref; run: python {{this file}} [cpu|cuda]
"""
# The case: {_literal(case.describe())}
# Found by the {_literal(doc["check"])} check on the backend {_literal(doc["backend"])}.
# What the harness reported:
{failures or "#   (none saved)"}

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
SUBNORMALS = getattr(Backend.capabilities, "subnormals", "preserve")
CASE = {data_text}


class Case(SimpleNamespace):
    """The case's fields, and the output width the harness derives from them."""

{textwrap.indent(_source(Case.out_dim.fget), "    ")}

# ---- the harness's input builder (conformance/inputs.py), verbatim ----
'''
    parts = [
        header,
        _module_body(inputs),
        "\n\n# ---- the harness's tolerance model (conformance/tolerance.py), verbatim ----\n",
        _module_body(tolerance),
        _MAIN,
    ]
    return "".join(parts)
