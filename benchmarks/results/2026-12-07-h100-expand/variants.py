"""The expand's rank buckets on a GPU: the shipped kernel, the one before the fix (odd ranks
in the half and quarter rank tiles) and the one before with its general path masked by the
rank, each on the saved H100 qkv failure and on edits of it (other R, dtypes, ops, layouts).
Usage (repository root, on the device): python3 THIS_FILE FAILURE.json [cuda]

``use(name)`` also serves diagnose_expand.py: it loads a variant of
lora_triton/kernels/expand.py, built by text edits of today's file, and routes the backend's
expand through it."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

import lora_triton.backend as backend

SOURCE = Path(backend.__file__).parent / "kernels" / "expand.py"
FIX = ("if r > HALF_R or r % 8 != 0:", "if r > HALF_R:")
RANK_MASK = (
    "bt = tl.load(w_ptrs, mask=(offs_r[:, None] < R_POOL) & n_mask[None, :], other=0.0)\n"
    "            bt = tl.where(r_mask[:, None], bt, tl.zeros_like(bt))",
    "bt = tl.load(w_ptrs, mask=r_mask[:, None] & n_mask[None, :], other=0.0)",
)
VARIANTS = {"shipped": [], "before": [FIX], "before+rank_mask": [FIX, RANK_MASK]}
_folder = Path(tempfile.mkdtemp(prefix="expand_variants_"))


def use(name: str):
    """Load variant ``name`` and make the backend's expand call it; returns its module."""
    text = SOURCE.read_text()
    for old, new in VARIANTS[name]:
        assert text.count(old) == 1, (name, old)
        text = text.replace(old, new)
    path = _folder / f"expand_{name.replace('+', '_')}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    backend.expand = module.expand
    return module


def cases(case0):
    """The saved case and its edits: (label, case)."""
    lay = dict(case0.layouts)
    odd_ranks = (17, 129, 58, 15, 64, 21, 16, 1, 14, 21, 0, 100, 0, 63, 33, 31)
    yield "saved", case0
    yield "b contiguous", case0.replace(layouts={**lay, "b": "contiguous"})
    yield "bfloat16", case0.replace(dtype="bfloat16")
    yield "R=129", case0.replace(R=129, lora_ranks=odd_ranks)
    yield (
        "R=129 b contiguous",
        case0.replace(R=129, lora_ranks=odd_ranks, layouts={**lay, "b": "contiguous"}),
    )
    yield "R=96", case0.replace(R=96, lora_ranks=tuple(min(r, 96) for r in odd_ranks))
    yield "R=65 no base", case0.replace(has_base=False)
    yield "gate_up", case0.replace(op="gate_up", stack=2, n_kv=0, N=2048)
    yield (
        "expand",
        case0.replace(
            op="expand", stack=1, n_kv=0, N=4096, layouts={"b": "transposed", "x": "contiguous"}
        ),
    )


def main() -> None:
    from conformance.checks import CHECKS, Example
    from conformance.failures import load_failure

    doc = load_failure(sys.argv[1])
    device = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cuda")
    check = CHECKS[doc["check"]]
    small = len(sys.argv) > 3 and sys.argv[3] == "small"  # a CPU smoke run on tiny sizes
    for name in VARIANTS:
        use(name)
        for label, case in cases(doc["case"]):
            if small:
                case = case.replace(
                    K=32, N=min(case.N, 64), n_kv=min(case.n_kv, 32), seg_lens=(0, 3, 2) + (0,) * 31
                )
            try:
                result = check.run(backend.TritonLoRABackend, Example(case, doc["params"]), device)
                worst = result.worst_ratio if result.worst_ratio is not None else float("nan")
                text = "" if result.ok else str(result.failures)[:160]
                print(f"{name:18s} {label:22s} ok={result.ok} worst={worst:.3g} {text}", flush=True)
            except Exception as e:  # noqa: BLE001 - a variant or an edit that cannot run is reported
                print(
                    f"{name:18s} {label:22s} raised {type(e).__name__}: {str(e)[:200]}", flush=True
                )


if __name__ == "__main__":
    main()
