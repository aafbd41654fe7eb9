"""Hugging Face PEFT as an independent second oracle for the fused LoRA layers.

PEFT's LoRA layers serve mixed-adapter batches: ``model(x, adapter_names=[...])`` with one name
per row.  :func:`peft_fused` builds one linear layer per output slice (q, k, v, or gate, up),
registers one PEFT adapter per slot with the pool's weights (``lora_alpha = s * r``, so
``alpha / r`` is the slot's scaling), runs the batch in float64 and returns the LoRA term.  The
project's reference must agree with it: ground truth is then not only self-defined.

Rank-0 slots run as ``"__base__"``, PEFT's name for "no adapter".
"""

from __future__ import annotations

import warnings

import torch

from conformance.case import Case
from conformance.inputs import Inputs, physical_row_slots
from conformance.peers import PeerNotInstalledError


def _load_peft():
    try:
        import peft
    except ImportError as exc:
        raise PeerNotInstalledError(
            f"PEFT is not importable ({exc}); "
            "install it with `pip install 'lora-conformance[peft]'`"
        ) from exc
    return peft


class _Slices(torch.nn.Module):
    """One bias-free linear layer per output slice; the output is their concatenation."""

    def __init__(self, K: int, widths: list[int]) -> None:
        super().__init__()
        self.names = [f"slice{j}" for j in range(len(widths))]
        for name, width in zip(self.names, widths, strict=True):
            layer = torch.nn.Linear(K, width, bias=False, dtype=torch.float64)
            torch.nn.init.zeros_(layer.weight)  # the base term is zero: only LoRA is compared
            setattr(self, name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, n)(x) for n in self.names], dim=-1)


def peft_fused(case: Case, inputs: Inputs) -> torch.Tensor:
    """PEFT's float64 LoRA term of a ``qkv`` or ``gate_up`` case: ``(T, out_dim)``, by row."""
    if case.op not in ("qkv", "gate_up"):
        raise ValueError(f"case.op: expected qkv or gate_up, got {case.op!r}")
    peft = _load_peft()
    A, B = (t.double().cpu() for t in inputs.args[:2])
    bounds = [lo for lo, _ in case.slices] + [case.slices[-1][1]]
    model = _Slices(case.K, [hi - lo for lo, hi in case.slices])
    peft_model = None
    for w, (r, s) in enumerate(zip(case.lora_ranks, case.scalings, strict=True)):
        if r == 0:
            continue
        config = peft.LoraConfig(
            r=r,
            lora_alpha=s * r,
            target_modules=model.names,
            lora_dropout=0.0,
            bias="none",
            init_lora_weights=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if peft_model is None:
                peft_model = peft.get_peft_model(model, config, adapter_name=f"slot{w}")
            else:
                peft_model.add_adapter(f"slot{w}", config)
        for j, name in enumerate(model.names):
            layer = getattr(peft_model.base_model.model, name)
            with torch.no_grad():
                layer.lora_A[f"slot{w}"].weight.copy_(A[w, j * r : (j + 1) * r])
                layer.lora_B[f"slot{w}"].weight.copy_(B[w, bounds[j] : bounds[j + 1], :r])
    x = inputs.x.double().cpu()
    if peft_model is None:
        return torch.zeros(case.T, case.out_dim, dtype=torch.float64)
    perm = inputs.batch_info.permutation
    slots = physical_row_slots(case, perm.tolist() if perm is not None else None)
    names = [f"slot{w}" if case.lora_ranks[w] else "__base__" for w in slots]
    peft_model.eval()
    with torch.no_grad():
        return peft_model(x, adapter_names=names)
