"""A backend with a rare bug for the campaign tests: its drawn examples find it now and then,
the one hand-built case of ``bad_input-shrink-float32`` does not."""

from __future__ import annotations

import torch

from lora_ref import ReferenceLoRABackend

WINDOW = (1.6, 2.6)


class RareWindow(ReferenceLoRABackend):
    """The shrink validates nothing (and returns zeros) wherever ``x[2, 0]`` lies in
    ``WINDOW``: about one Gaussian input in twenty."""

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, stack_num: int = 1
    ) -> torch.Tensor:
        if (
            isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] > 2 and x.shape[1] > 0
            and x.dtype.is_floating_point and WINDOW[0] < float(x[2, 0]) < WINDOW[1]
        ):  # fmt: skip
            return torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return super().run_lora_a_sgemm(x, weights, stack_num)
