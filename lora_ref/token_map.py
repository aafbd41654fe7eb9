"""The second batch form: a slot per token, -1 for a token without LoRA (docs/contract.md,
section 1b).  vLLM's ``token_lora_mapping`` and SGLang's ``token_slots`` are this form.

Letters: ``T`` tokens (rows of ``x``), ``L`` adapter slots.

A token map says, for each *physical* row of ``x`` and of every output, which slot it uses.
It is the segment form with its permutation applied: :func:`to_token_map` converts a
:class:`~lora_ref.batch_info.LoRABatchInfo` into one, and :func:`to_segments` converts back,
each exactly (the same rows get the same slots; a -1 row goes to a slot of rank 0, which
gives the same result, base bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lora_ref.batch_info import (
    INDEX_DTYPE,
    BatchSummary,
    LoRABatchInfo,
    check_batch_tensors,
    check_slot_values,
    make_batch_info,
    refill_summaries,
)
from lora_ref.errors import fail

NO_LORA = -1


@dataclass
class TokenMapBatchInfo:
    """One batch as a slot per token.

    Attributes:
        token_slots: int32 ``(T,)``: the slot of each physical row, in ``[0, L)``, or -1 for
            a row without LoRA (its result is ``base_output`` bit for bit, zeros without one).
        lora_ranks: int32 ``(L,)`` rank of each slot; 0 means "no adapter".
        scalings: float32 ``(L,)`` scaling of each slot.
        use_cuda_graph: the tensors are preallocated buffers, refilled in place between graph
            replays (``T`` is then fixed: a captured graph's inputs have fixed rows).
    """

    token_slots: torch.Tensor
    lora_ranks: torch.Tensor
    scalings: torch.Tensor
    use_cuda_graph: bool = False

    @property
    def device(self) -> torch.device:
        return self.token_slots.device

    @property
    def num_tokens(self) -> int:
        return self.token_slots.numel()

    def validate(self) -> BatchSummary:
        """Check the contract's rules for this form and return the host summary.

        Raises ``TypeError`` for a wrong dtype and ``ValueError`` for anything else, naming the
        field, what was expected and what came.  Reads the tensors on the host (a device sync).
        """
        named = {
            "token_slots": self.token_slots,
            "lora_ranks": self.lora_ranks,
            "scalings": self.scalings,
        }
        check_batch_tensors(named)
        num_slots = self.lora_ranks.numel()
        if self.scalings.numel() != num_slots:
            fail("scalings", f"shape ({num_slots},) like lora_ranks",
                 f"shape {tuple(self.scalings.shape)}")  # fmt: skip
        slots = self.token_slots.tolist()
        ranks = self.lora_ranks.tolist()
        bad = [t for t, w in enumerate(slots) if not NO_LORA <= w < num_slots]
        if bad:
            t = bad[0]
            fail("token_slots", f"slots in [0, {num_slots}) or -1 (no LoRA)",
                 f"token_slots[{t}]={slots[t]}")  # fmt: skip
        check_slot_values(ranks, self.scalings)
        used = {w for w in slots if w != NO_LORA}
        return BatchSummary(
            num_tokens=len(slots),
            num_slots=num_slots,
            max_weight_index=max(slots, default=-1),
            max_rank=max(ranks, default=0),
            num_segments=len(runs(slots)),
            num_adapters=len(used),
            min_adapter_rank=min((ranks[w] for w in used), default=0),
            tensors=tuple(named.items()),
        )


Batch = LoRABatchInfo | TokenMapBatchInfo

SEGMENT_TENSORS = ("seg_lens", "seg_indptr", "weight_indices", "lora_ranks", "scalings")
TOKEN_MAP_TENSORS = ("token_slots", "lora_ranks", "scalings")


def batch_tensors(batch: Batch) -> list[tuple[str, torch.Tensor]]:
    """The tensors of either batch form, by field name (the permutation when there is one)."""
    if isinstance(batch, TokenMapBatchInfo):
        return [(name, getattr(batch, name)) for name in TOKEN_MAP_TENSORS]
    named = [(name, getattr(batch, name)) for name in SEGMENT_TENSORS]
    if batch.permutation is not None:
        named.append(("permutation", batch.permutation))
    return named


def runs(slots: list[int]) -> list[tuple[int, int]]:
    """``(slot, length)`` of each run of equal consecutive entries."""
    out: list[tuple[int, int]] = []
    for w in slots:
        if out and out[-1][0] == w:
            out[-1] = (w, out[-1][1] + 1)
        else:
            out.append((w, 1))
    return out


def slots_by_row(
    seg_lens: Sequence[int], weight_indices: Sequence[int], permutation: Sequence[int] | None
) -> list[int]:
    """The slot of each physical row of segments given as host lists (logical row ``t`` is
    physical row ``permutation[t]``)."""
    out = [NO_LORA] * sum(seg_lens)
    t = 0
    for n, w in zip(seg_lens, weight_indices, strict=True):
        for _ in range(n):
            out[permutation[t] if permutation is not None else t] = w
            t += 1
    return out


def physical_slots(info: LoRABatchInfo) -> list[int]:
    """The slot of each physical row of a segment batch (its permutation applied)."""
    perm = info.permutation.tolist() if info.permutation is not None else None
    return slots_by_row(info.seg_lens.tolist(), info.weight_indices.tolist(), perm)


def to_token_map(info: LoRABatchInfo) -> TokenMapBatchInfo:
    """The token map of a (valid) segment batch: each physical row's slot.  Rows of rank-0
    slots keep their slot (use :data:`NO_LORA` for them only where the caller wants -1)."""
    info.validate()
    slots = physical_slots(info)
    return TokenMapBatchInfo(
        token_slots=torch.tensor(slots, dtype=INDEX_DTYPE, device=info.device),
        lora_ranks=info.lora_ranks.clone(),
        scalings=info.scalings.clone(),
    )


def to_segments(batch: TokenMapBatchInfo, no_lora_slot: int | None = None) -> LoRABatchInfo:
    """The segment batch of a (valid) token map: one segment per run of equal slots, no
    permutation.  -1 rows go to ``no_lora_slot``, which must be a slot of rank 0 (default:
    the first such slot); a map with -1 rows and no rank-0 slot cannot be converted
    (``ValueError``)."""
    batch.validate()
    slots = batch.token_slots.tolist()
    ranks = batch.lora_ranks.tolist()
    if NO_LORA in slots:
        if no_lora_slot is None:
            no_lora_slot = next((w for w, r in enumerate(ranks) if r == 0), None)
        if no_lora_slot is None:
            fail("no_lora_slot", "a slot of rank 0 for the -1 rows", "no slot of rank 0")
        in_range = 0 <= no_lora_slot < len(ranks)
        if not in_range or ranks[no_lora_slot] != 0:
            got = f"rank {ranks[no_lora_slot]}" if in_range else "out of range"
            expected = f"a slot in [0, {len(ranks)}) of rank 0"
            fail("no_lora_slot", expected, f"{no_lora_slot} ({got})")
        slots = [no_lora_slot if w == NO_LORA else w for w in slots]
    segments = runs(slots)
    return make_batch_info(
        [n for _, n in segments],
        [w for w, _ in segments],
        ranks,
        batch.scalings.tolist(),
        device=batch.device,
    )


def refill_token_map(target: TokenMapBatchInfo, source: TokenMapBatchInfo) -> None:
    """Copy ``source`` into ``target``'s graph buffers in place, after checking on the host
    that ``source`` is valid and fits (the same ``T`` and ``L``, the same device, ``target`` a
    graph buffer): a refill succeeds whole or raises and leaves ``target`` as it was."""
    for name, batch in (("target", target), ("source", source)):
        if not isinstance(batch, TokenMapBatchInfo):
            fail(name, "a TokenMapBatchInfo (both or neither)", type(batch).__name__,
                 error=TypeError)  # fmt: skip
    src, dst = refill_summaries(target, source)
    if src.num_tokens != dst.num_tokens:
        fail("source.token_slots", f"T = {dst.num_tokens} rows, the rows the graph was captured "
             "with", f"T = {src.num_tokens}")  # fmt: skip
    if src.num_slots != dst.num_slots:
        fail("source.lora_ranks", f"{dst.num_slots} slots", f"{src.num_slots}")
    target.token_slots.copy_(source.token_slots)
    target.lora_ranks.copy_(source.lora_ranks)
    target.scalings.copy_(source.scalings)
