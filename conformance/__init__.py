"""Hypothesis-driven differential conformance testing of multi-LoRA backends.

Without CUDA, Triton kernels can only run in Triton's interpreter, and Triton reads
``TRITON_INTERPRET`` when its own modules are first imported.  The suite (and its pytest plugin,
loaded at start-up) therefore sets it here, before anything imports Triton, unless it is set.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
