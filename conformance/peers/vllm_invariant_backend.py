"""vLLM's LoRA ops under ``VLLM_BATCH_INVARIANT=1``, vLLM's batch-invariant mode (no split-K in
the shrink, a deterministic reduction), as a backend that declares ``batch_invariant``.

Registered as ``vllm-invariant``.  vLLM reads the variable once, when its LoRA ops are first
imported (``vllm.lora.ops.triton_ops.utils.is_batch_invariant``), so this module sets it before
importing them and refuses to load where they were imported without it (a process that
imported ``vllm`` first: name this backend in a fresh one, as ``lora-conformance check`` does).
Setting the variable holds for the whole process.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from conformance.peers import PeerInterfaceError, peer_attribute

_OPS = "vllm.lora.ops.triton_ops"
if not any(m == _OPS or m.startswith(_OPS + ".") for m in sys.modules):
    os.environ["VLLM_BATCH_INVARIANT"] = "1"

from vllm.lora.ops.triton_ops import lora_shrink_op  # noqa: E402
from vllm.lora.ops.triton_ops import utils as _utils  # noqa: E402

from conformance.peers.vllm_backend import VLLMBackend  # noqa: E402

# the flag as each module holds it (lora_shrink_op keeps its own copy from its import)
for _module in (_utils, lora_shrink_op):
    if not peer_attribute(_module, "is_batch_invariant", bool, "vllm"):
        raise PeerInterfaceError(
            f"{_module.__name__}.is_batch_invariant is False: vLLM's LoRA ops were imported "
            "before VLLM_BATCH_INVARIANT=1 was set; load the backend vllm-invariant in a fresh "
            "process (or export VLLM_BATCH_INVARIANT=1 first)"
        )


class VLLMBatchInvariantBackend(VLLMBackend):
    """:class:`VLLMBackend` with vLLM's batch-invariant mode on, declaring ``batch_invariant``."""

    name = "vllm-invariant"
    capabilities = dataclasses.replace(VLLMBackend.capabilities, batch_invariant=True)
