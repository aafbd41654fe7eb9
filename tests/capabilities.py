"""Reference backends declaring other capability sets, for the plan and collection tests."""

from __future__ import annotations

import torch

from lora_ref import Capabilities, ReferenceLoRABackend


class Bf16Only(ReferenceLoRABackend):
    capabilities = Capabilities(dtypes=frozenset({torch.bfloat16}), float32_matmul="ieee")


class NoPermutation(ReferenceLoRABackend):
    capabilities = Capabilities(permutation=False, float32_matmul="ieee")


class SplitAndGraphs(ReferenceLoRABackend):
    capabilities = Capabilities(split_layouts=True, cuda_graph=True, float32_matmul="ieee")


class CudaOnly(ReferenceLoRABackend):
    capabilities = Capabilities(devices=frozenset({"cuda"}), float32_matmul="ieee")


ALL = [Bf16Only, NoPermutation, SplitAndGraphs, CudaOnly]
