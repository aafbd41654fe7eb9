"""``lora-conformance replay FILE --emit-script repro.py``: a standalone script for a bug report.

The script needs torch, the backend's package and the contract package (``lora_ref``, which
every backend subclasses and which holds the float64 reference) — not this harness.  It carries
the case as data and, copied verbatim from the harness, the code that rebuilds its tensors from
the seed (:mod:`conformance.inputs`), the tolerance model (:mod:`conformance.tolerance`) and the
oracle's comparison (:mod:`conformance.oracle`), so it computes and judges exactly what the
harness did: no line of the oracle is typed twice.  It calls the backend, compares the result
with the oracle (every element within its tolerance, rank-0 rows bit for bit), calls again to
check determinism, prints what it found and exits 1 when the failure reproduces, 0 when it
does not.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

from conformance import inputs, names, oracle, tolerance
from conformance.case import Case

EMITTABLE = ("diff", "permutation", "split_layout", "token_map")
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

def run_backend(case, made, device):
    """One call on a fresh backend; returns the result (a copy)."""
    base = made.base.clone() if made.base is not None else None
    backend = Backend()
    backend.set_batch_info(made.batch_info)
    out = call(backend, case, made, base)
    return out.clone() if isinstance(out, torch.Tensor) else out


def main() -> int:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else DEVICE)
    case = Case(**CASE)
    print(f"backend {BACKEND_TARGET}, {case.op} in {case.dtype} on {device}")
    made = build_inputs(case, device)
    exp = expect(case, made, FLOAT32_MATMUL, SUBNORMALS)
    out = run_backend(case, made, device)
    verdict = compare(case, out, exp)
    if not verdict.ok:
        print(f"REPRODUCED: {verdict.message}")
        return 1
    again = run_backend(case, made, device)
    same = isinstance(again, torch.Tensor) and bitwise_equal(out, again)[exp.specified].all()
    if not same:
        print("REPRODUCED: the same call twice gave different bits (not deterministic)")
        return 1
    print(f"not reproduced: every element is within its tolerance (worst error/tolerance "
          f"{verdict.worst_ratio:.3g}) and the call is deterministic")
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
    """The case's fields, and the sizes the harness derives from them."""

{textwrap.indent(_source(Case.T.fget), "    ")}
{textwrap.indent(_source(Case.out_dim.fget), "    ")}

DTYPE_NAMES = {_literal(list(names.DTYPE_NAMES))}


{_source(names.torch_dtype)}

# ---- the harness's input builder (conformance/inputs.py), verbatim ----
'''
    parts = [
        header,
        _module_body(inputs),
        "\n\n# ---- the harness's tolerance model (conformance/tolerance.py), verbatim ----\n",
        _module_body(tolerance),
        "\n\n# ---- the harness's oracle (conformance/oracle.py), verbatim ----\n",
        _module_body(oracle),
        _MAIN,
    ]
    return "".join(parts)
