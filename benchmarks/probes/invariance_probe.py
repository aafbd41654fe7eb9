"""The built-in Triton backend's default launch rules *declared* batch invariant, so that the
``batch_invariance`` check can show what the mode changes (mode off, beside
``triton-invariant``, mode on).  A probe, not a backend to ship: its declaration is false
wherever the default rules pick tiles or K splits by batch size.

    PYTHONPATH=benchmarks/probes lora-conformance check invariance_probe:TritonDeclaredInvariant \
        --checks batch_invariance --device cuda
"""

from __future__ import annotations

import dataclasses

from lora_triton import TritonLoRABackend


class TritonDeclaredInvariant(TritonLoRABackend):
    """``TritonLoRABackend`` with ``batch_invariant=True`` declared and nothing else changed."""

    name = "triton-declared-invariant"
    capabilities = dataclasses.replace(TritonLoRABackend.capabilities, batch_invariant=True)
