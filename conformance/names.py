"""The one table of operations and dtypes every part of the harness reads.

Nothing here imports torch, so the command line can offer these names without loading it.
"""

from __future__ import annotations

OPS = ("shrink", "expand", "qkv", "gate_up")
# the ops a run selects from (``--ops``): the four, and embedding LoRA's gather, which only its
# own check (``embedding``) calls
GROUP_OPS = (*OPS, "embedding")
DTYPE_NAMES = ("float16", "bfloat16", "float32")

# the checks of the registry (``conformance.checks.CHECKS`` holds them in this order)
CHECK_NAMES = (
    "diff",
    "permutation",
    "split_layout",
    "token_map",
    "metamorphic",
    "batch_invariance",
    "bad_input",
    "lifecycle",
    "cuda_graph",
    "embedding",
)

# the backend method each operation calls
METHODS = {
    "shrink": "run_lora_a_sgemm",
    "expand": "run_lora_b_sgemm",
    "qkv": "run_qkv_lora",
    "gate_up": "run_gate_up_lora",
}

# stack count c of each operation; shrink takes any c in 1..3 (its ``stack_num``); qkv's is 3,
# and 1 to MAX_SLICES for a backend that declares ``n_slices`` (its n-slice cases)
STACKS = {"shrink": (1, 2, 3), "expand": (1,), "qkv": (3,), "gate_up": (2,)}
MAX_SLICES = 8


def stack_count(op: str, shrink_stack: int = 1) -> int:
    """``c`` of ``op``: fixed for the expand and fused ops, ``shrink_stack`` for shrink."""
    return shrink_stack if op == "shrink" else STACKS[op][0]


def torch_dtype(name: str):
    """The torch dtype of a dtype name (``float16`` -> ``torch.float16``)."""
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype: expected one of {DTYPE_NAMES}, got {name!r}")
    return getattr(torch, name)


def dtype_name(dtype) -> str:
    """The name of a torch dtype (``torch.float16`` -> ``float16``)."""
    return str(dtype).removeprefix("torch.")
