"""SGLang's dense LoRA kernels (``sglang.kernels.ops.lora.dense``), driven from our batch info.

Two of SGLang's backends are exposed:

* ``triton``: one segment per request; ``sgemm_lora_a`` shrinks, ``sgemm_lora_b`` /
  ``qkv_lora_b`` / ``gate_up_lora_b`` expand.
* ``csgmv``: rows sorted by adapter (a stable argsort), consecutive same-adapter rows cut into
  chunks of 16/32/128 tokens; ``chunked_sgmv_shrink`` and ``chunked_sgmv_expand``.

SGLang is imported lazily; without it every entry point raises :class:`PeerNotInstalledError`.
"""

from __future__ import annotations

import importlib
import itertools
from types import SimpleNamespace
from typing import Any

import torch

from conformance.peers import PeerNotInstalledError, PreparedWeights
from lora_ref import LoRABatchInfo

DENSE = "sglang.kernels.ops.lora.dense"


def load(module: str) -> Any:
    try:
        return importlib.import_module(f"{DENSE}.{module}")
    except ImportError as exc:
        raise PeerNotInstalledError(
            f"SGLang's LoRA kernels are not importable ({exc}); install them with "
            "`pip install 'lora-conformance[sglang]'` (sglang==0.5.23)"
        ) from exc


def version() -> str:
    from importlib.metadata import version as dist_version

    return f"sglang {dist_version('sglang')}"


def triton_batch_info(info: LoRABatchInfo) -> Any:
    """SGLang's ``LoRABatchInfo`` for its triton backend: our segments unchanged."""
    return SimpleNamespace(
        use_cuda_graph=info.use_cuda_graph,
        bs=info.seg_lens.numel(),
        num_segments=info.seg_lens.numel(),
        seg_indptr=info.seg_indptr,
        weight_indices=info.weight_indices,
        lora_ranks=info.lora_ranks,
        scalings=info.scalings,
        max_len=max(info.max_len, 1),
        seg_lens=info.seg_lens,
        permutation=info.permutation,
        **engine_fields(info),
    )


def engine_fields(info: LoRABatchInfo) -> dict[str, Any]:
    """The fields of SGLang's batch info beyond the segments, from ours (the request-level
    segments are ours where no request list was given)."""
    active = info.has_active_lora
    return dict(
        expected_tokens=info.expected_tokens,
        has_active_lora=True if active is None else active,
        req_seg_indptr=info.seg_indptr if info.req_seg_indptr is None else info.req_seg_indptr,
        req_weight_indices=info.weight_indices
        if info.req_weight_indices is None
        else info.req_weight_indices,
    )


def chunk_size(num_tokens: int) -> int:
    """The chunk size SGLang's csgmv backend picks for a batch of ``num_tokens``."""
    if num_tokens >= 256:
        return 128
    return 32 if num_tokens >= 64 else 16


def csgmv_batch_info(info: LoRABatchInfo) -> Any:
    """SGLang's csgmv batch layout: rows sorted by adapter, same-adapter runs cut into chunks.

    Built on the host (a sync), as SGLang's ``prepare_lora_batch`` does, outside any graph.
    """
    lens = info.seg_lens.cpu()
    slots = info.weight_indices.cpu()
    row_slot = torch.repeat_interleave(slots, lens)
    order = torch.argsort(row_slot, stable=True)
    if info.permutation is not None:
        order = info.permutation.cpu().long()[order]
    sorted_slots = row_slot[torch.argsort(row_slot, stable=True)].tolist()
    chunk = chunk_size(len(sorted_slots))
    seg_slots: list[int] = []
    seg_lens: list[int] = []
    for w in sorted_slots:
        if seg_slots and seg_slots[-1] == w and seg_lens[-1] < chunk:
            seg_lens[-1] += 1
        else:
            seg_slots.append(w)
            seg_lens.append(1)
    device = info.device
    indptr = torch.zeros(len(seg_lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(seg_lens, dtype=torch.int32), 0)
    return SimpleNamespace(
        use_cuda_graph=False,
        bs=info.bs,
        num_segments=len(seg_lens),
        seg_indptr=indptr.to(device),
        weight_indices=torch.tensor(seg_slots, dtype=torch.int32, device=device),
        lora_ranks=info.lora_ranks,
        scalings=info.scalings,
        max_len=chunk,
        seg_lens=torch.tensor(seg_lens, dtype=torch.int32, device=device),
        permutation=order.to(torch.int32).to(device),
        **engine_fields(info),
    )


class SGLangTritonKernels:
    """Calls of SGLang's triton backend kernels for one batch."""

    def __init__(self, info: LoRABatchInfo) -> None:
        self.a = load("sgemm_lora_a")
        self.b = load("sgemm_lora_b")
        self.qkv_b = load("qkv_lora_b")
        self.gate_up_b = load("gate_up_lora_b")
        self.info = triton_batch_info(info)

    def shrink(self, x, A, c):
        return self.a.sgemm_lora_a_fwd(x, A, self.info, c)

    def expand(self, xa, B, base):
        return self.b.sgemm_lora_b_fwd(xa, B, self.info, base)

    def qkv(self, x, A, B, offsets, max_dim, base):
        return self.qkv_b.qkv_lora_b_fwd(self.shrink(x, A, 3), B, self.info, offsets, max_dim, base)

    def gate_up(self, x, A, B, base):
        return self.gate_up_b.gate_up_lora_b_fwd(
            self.shrink(x, A, 2), B, self.info, B.shape[1] // 2, base
        )


class SGLangCsgmvKernels:
    """Calls of SGLang's chunked-SGMV backend kernels for one batch."""

    def __init__(self, info: LoRABatchInfo) -> None:
        self.a = load("chunked_sgmv_shrink")
        self.b = load("chunked_sgmv_expand")
        self.info = csgmv_batch_info(info)
        self._offsets: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._host = PreparedWeights()

    def _slices(self, bounds: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(bounds)
        if key not in self._offsets:
            cpu = torch.tensor(bounds, dtype=torch.int32)
            self._offsets[key] = (cpu.to(device), cpu)
        return self._offsets[key]

    def shrink(self, x, A, c):
        return self.a.chunked_sgmv_lora_shrink_forward(x, A, self.info, c)

    def _expand(self, xa, B, bounds, base):
        dev, cpu = self._slices(bounds, B.device)
        widest = max(b - a for a, b in itertools.pairwise(bounds))
        return self.b.chunked_sgmv_lora_expand_forward(
            xa, B, self.info, dev, widest, base, slice_offsets_cpu=cpu
        )

    def expand(self, xa, B, base):
        return self._expand(xa, B, [0, B.shape[1]], base)

    def qkv(self, x, A, B, offsets, max_dim, base):
        # host copy of the offsets, read once per tensor (SGLang keeps them on the host per layer)
        bounds = self._host.get(offsets, "offsets", offsets.tolist)
        return self._expand(self.shrink(x, A, 3), B, bounds, base)

    def gate_up(self, x, A, B, base):
        n = B.shape[1] // 2
        return self._expand(self.shrink(x, A, 2), B, [0, n, 2 * n], base)
