"""The Triton multi-LoRA backend.

Without CUDA, Triton can only run through its interpreter; ``lora_ref.runtime`` selects it
before the kernels are defined (importing the backend does).
"""

from lora_ref.runtime import use_interpreter_without_gpu

use_interpreter_without_gpu()

from lora_triton.backend import TritonBatchInvariantBackend, TritonLoRABackend  # noqa: E402

__all__ = ["TritonBatchInvariantBackend", "TritonLoRABackend"]
