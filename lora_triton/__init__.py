"""The Triton multi-LoRA backend.

On a machine without CUDA, Triton can only run through its interpreter, so importing this
package sets ``TRITON_INTERPRET=1`` unless the variable is already set.  It must happen before
the kernels are defined, which is why it sits here.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from lora_triton.backend import TritonLoRABackend

__all__ = ["TritonLoRABackend"]
