"""The batch description every backend consumes: which rows use which adapter.

Dimension letters (used in every docstring of this package):
    T  tokens in the batch (rows of ``x``)
    L  adapter slots in the weight pool
    R  max rank the pool was sized for; ``r = lora_ranks[w] <= R``
    bs number of segments

A segment is a run of consecutive (logical) rows that share one adapter slot.  When
``permutation`` is set, logical row ``j`` is physical row ``permutation[j]`` of ``x`` and of
every output.

CUDA graphs: with ``use_cuda_graph=True`` the tensors may be preallocated buffers longer than
``bs``.  Segments ``bs..`` are padding and must be empty (``seg_lens == 0``), so a graph whose
kernels were sized on the buffer length stays correct when a later batch has more or fewer live
segments.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lora_ref.errors import check_dtype, check_plain, fail

INDEX_DTYPE = torch.int32


@dataclass(frozen=True)
class BatchSummary:
    """Host-side facts read once from a validated batch, so calls can check shapes without a sync.

    Attributes:
        num_tokens: ``T``, the last entry of ``seg_indptr``.
        num_slots: ``L``, the length of ``lora_ranks``.
        max_weight_index: largest entry of ``weight_indices`` (-1 for an empty batch).
        max_rank: largest entry of ``lora_ranks`` (0 when there are no slots).
        num_segments: length of the segment buffers (``bs``, or the graph capacity).
        num_adapters: distinct slots among the non-empty segments (a launch-size hint only: a
            CUDA-graph refill may change it).
        min_adapter_rank: smallest rank among those slots (0 when there are none; a hint too).
        tensors: the batch's tensors by field name (an output may overlap none of them).
    """

    num_tokens: int
    num_slots: int
    max_weight_index: int
    max_rank: int
    num_segments: int
    num_adapters: int = 0
    min_adapter_rank: int = 0
    tensors: tuple[tuple[str, torch.Tensor], ...] = field(default=(), compare=False, repr=False)


def check_batch_tensors(named: dict[str, object]) -> None:
    """Each of a batch's tensors (by field name, the first one's device for all): a plain,
    contiguous 1-D tensor, float32 for ``scalings``, int32 for the rest."""
    device = None
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            fail(name, "a torch.Tensor", type(t).__name__)
        check_plain(name, t)
        if t.dim() != 1:
            fail(name, "a 1-D tensor", f"shape {tuple(t.shape)}")
        device = t.device if device is None else device
        if t.device != device:
            fail(name, f"a tensor on {device}", f"one on {t.device}")
        check_dtype(name, t, torch.float32 if name == "scalings" else INDEX_DTYPE)
        if t.numel() > 1 and t.stride(0) != 1:
            fail(name, "a contiguous 1-D tensor (stride 1)", f"stride {t.stride()}")


def check_slot_values(ranks: list[int], scalings: torch.Tensor) -> None:
    """Every slot's rank ``>= 0`` and scaling finite."""
    bad_rank = [w for w, r in enumerate(ranks) if r < 0]
    if bad_rank:
        fail("lora_ranks", "ranks >= 0", f"lora_ranks[{bad_rank[0]}]={ranks[bad_rank[0]]}")
    if not bool(torch.isfinite(scalings).all()):
        fail("scalings", "finite values", f"{scalings.tolist()}")


@dataclass
class LoRABatchInfo:
    """One batch's segment layout and adapter metadata (docs/contract.md, section 1).

    Attributes:
        bs: number of live segments.
        seg_lens: int32 ``(bs,)`` tokens per segment, ``>= 0``.
        seg_indptr: int32 ``(bs+1,)`` exclusive prefix sum of ``seg_lens``; last entry is ``T``.
        max_len: host ``max(seg_lens)``, used to size launch grids without a device sync.
        weight_indices: int32 ``(bs,)`` adapter slot of each segment, in ``[0, L)``.
        lora_ranks: int32 ``(L,)`` rank of each slot; 0 means "no adapter".
        scalings: float32 ``(L,)`` scaling (``alpha / r``) of each slot.
        permutation: int32 ``(T,)`` logical-to-physical row map, or None for the identity.
        use_cuda_graph: the tensors are preallocated and refilled in place between replays.
        expected_tokens: host ``T`` (SGLang's field), or None.
        has_active_lora: host: some non-empty segment's slot has rank > 0 (SGLang's field; a
            backend may return ``base`` at once when False), or None.
        req_seg_indptr: int32 ``(n+1,)`` request starts (SGLang's request-level segments, of
            which each segment is a part: every entry is an entry of ``seg_indptr``), or None.
        req_weight_indices: int32 ``(n,)`` each request's slot, which each of its non-empty
            segments has; given exactly when ``req_seg_indptr`` is.
        num_segments: (property) ``bs``, SGLang's name for it.
    """

    bs: int
    seg_lens: torch.Tensor
    seg_indptr: torch.Tensor
    max_len: int
    weight_indices: torch.Tensor
    lora_ranks: torch.Tensor
    scalings: torch.Tensor
    permutation: torch.Tensor | None = None
    use_cuda_graph: bool = False
    expected_tokens: int | None = None
    has_active_lora: bool | None = None
    req_seg_indptr: torch.Tensor | None = None
    req_weight_indices: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.seg_lens.device

    @property
    def num_segments(self) -> int:
        """``bs`` (the name SGLang's batch info gives it)."""
        return self.bs

    def validate(self) -> BatchSummary:
        """Check every invariant of the contract (docs/contract.md) and return the host summary.

        Raises ``TypeError`` for a wrong dtype and ``ValueError`` for anything else, naming the
        field, what was expected and what came.  This reads the tensors on the host (a device
        sync), so it belongs to batch preparation, never to a captured CUDA graph.
        """
        if not isinstance(self.bs, int) or isinstance(self.bs, bool) or self.bs < 0:
            fail("bs", "a non-negative int", repr(self.bs))
        if not isinstance(self.max_len, int) or isinstance(self.max_len, bool):
            fail("max_len", "an int", repr(self.max_len))
        named = {
            "seg_lens": self.seg_lens,
            "seg_indptr": self.seg_indptr,
            "weight_indices": self.weight_indices,
            "lora_ranks": self.lora_ranks,
            "scalings": self.scalings,
        }
        if self.permutation is not None:
            named["permutation"] = self.permutation
        if (self.req_seg_indptr is None) != (self.req_weight_indices is None):
            fail("req_weight_indices", "given exactly when req_seg_indptr is",
                 "one of the two")  # fmt: skip
        if self.req_seg_indptr is not None:
            named["req_seg_indptr"] = self.req_seg_indptr
            named["req_weight_indices"] = self.req_weight_indices  # type: ignore[assignment]
        check_batch_tensors(named)

        capacity = self.seg_lens.numel()
        if capacity != self.bs and not (self.use_cuda_graph and capacity > self.bs):
            fail(
                "seg_lens",
                f"shape ({self.bs},) for bs={self.bs}"
                + (" (or a longer buffer with use_cuda_graph=True)" if capacity > self.bs else ""),
                f"shape ({capacity},)",
            )
        if self.weight_indices.numel() != capacity:
            fail(
                "weight_indices",
                f"shape ({capacity},) like seg_lens",
                self._shape("weight_indices"),
            )
        if self.seg_indptr.numel() != capacity + 1:
            fail("seg_indptr", f"shape ({capacity + 1},)", self._shape("seg_indptr"))
        if self.scalings.numel() != self.lora_ranks.numel():
            fail(
                "scalings",
                f"shape ({self.lora_ranks.numel()},) like lora_ranks",
                self._shape("scalings"),
            )

        lens = self.seg_lens.tolist()
        indptr = self.seg_indptr.tolist()
        slots = self.weight_indices.tolist()
        ranks = self.lora_ranks.tolist()
        num_slots = len(ranks)

        negative = [i for i, n in enumerate(lens) if n < 0]
        if negative:
            fail("seg_lens", "lengths >= 0", f"seg_lens[{negative[0]}]={lens[negative[0]]}")
        padding = [i for i in range(self.bs, capacity) if lens[i] != 0]
        if padding:
            i = padding[0]
            fail(
                "seg_lens",
                f"empty padding segments beyond bs={self.bs}",
                f"seg_lens[{i}]={lens[i]}",
            )
        if indptr[0] != 0:
            fail("seg_indptr", "seg_indptr[0] == 0", f"seg_indptr[0]={indptr[0]}")
        for i, n in enumerate(lens):
            if indptr[i + 1] != indptr[i] + n:
                fail(
                    "seg_indptr",
                    f"seg_indptr[{i + 1}] == seg_indptr[{i}] + seg_lens[{i}] = {indptr[i] + n}",
                    f"seg_indptr[{i + 1}]={indptr[i + 1]}",
                )
        true_max = max(lens, default=0)
        if self.max_len < true_max:
            fail("max_len", f">= max(seg_lens) = {true_max}", f"max_len={self.max_len}")
        bad_slot = [i for i, w in enumerate(slots) if not 0 <= w < num_slots]
        if bad_slot:
            i = bad_slot[0]
            fail("weight_indices", f"slots in [0, {num_slots})", f"weight_indices[{i}]={slots[i]}")
        check_slot_values(ranks, self.scalings)

        num_tokens = indptr[-1]
        if self.permutation is not None:
            if self.permutation.numel() != num_tokens:
                fail(
                    "permutation",
                    f"shape ({num_tokens},) (T = seg_indptr[-1])",
                    self._shape("permutation"),
                )
            seen = torch.sort(self.permutation.long()).values.cpu()
            if not torch.equal(seen, torch.arange(num_tokens)):
                fail(
                    "permutation",
                    f"a permutation of range({num_tokens})",
                    f"{self.permutation.tolist()[:16]}...",
                )

        used = {w for w, n in zip(slots, lens, strict=True) if n > 0}
        self._check_engine_fields(num_tokens, indptr, lens, slots, any(ranks[w] for w in used))
        return BatchSummary(
            num_tokens=num_tokens,
            num_slots=num_slots,
            max_weight_index=max(slots, default=-1),
            max_rank=max(ranks, default=0),
            num_segments=capacity,
            num_adapters=len(used),
            min_adapter_rank=min((ranks[w] for w in used), default=0),
            tensors=tuple(named.items()),
        )

    def _check_engine_fields(
        self, T: int, indptr: list[int], lens: list[int], slots: list[int], active: bool
    ) -> None:
        """SGLang's fields, where given, agree with the segments."""
        if self.expected_tokens is not None and (
            not isinstance(self.expected_tokens, int) or self.expected_tokens != T
        ):
            fail("expected_tokens", f"T = {T} (seg_indptr[-1]) or None", repr(self.expected_tokens))
        if self.has_active_lora is not None and self.has_active_lora is not active:
            fail("has_active_lora", f"{active} (whether a non-empty segment's slot has rank > 0)",
                 repr(self.has_active_lora))  # fmt: skip
        if self.req_seg_indptr is None or self.req_weight_indices is None:
            return
        starts = self.req_seg_indptr.tolist()
        req_slots = self.req_weight_indices.tolist()
        bounds = set(indptr[: self.bs + 1])
        if (
            len(starts) != len(req_slots) + 1
            or starts[0] != 0
            or starts[-1] != T
            or any(b < a for a, b in itertools.pairwise(starts))
            or not set(starts) <= bounds
        ):
            fail("req_seg_indptr", f"{len(req_slots) + 1} request starts from 0 to T = {T}, in "
                 "order, each a segment start", f"{starts[:16]}")  # fmt: skip
        for i in range(self.bs):
            if lens[i] == 0:
                continue
            req = max(j for j, s in enumerate(starts[:-1]) if s <= indptr[i])
            if req_slots[req] != slots[i]:
                fail("req_weight_indices", f"slot {slots[i]} for request {req} (its segment {i} "
                     "has it)", f"req_weight_indices[{req}]={req_slots[req]}")  # fmt: skip

    def _shape(self, name: str) -> str:
        return f"shape {tuple(getattr(self, name).shape)}"


def make_batch_info(
    seg_lens: Sequence[int],
    weight_indices: Sequence[int],
    lora_ranks: Sequence[int],
    scalings: Sequence[float],
    *,
    permutation: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    capacity: int | None = None,
    use_cuda_graph: bool = False,
    request_segments: Sequence[int] | None = None,
) -> LoRABatchInfo:
    """Build a :class:`LoRABatchInfo` from host lists, on ``device``.

    Args:
        seg_lens: ``bs`` segment lengths.
        weight_indices: ``bs`` adapter slots, one per segment.
        lora_ranks: ``L`` ranks, one per slot.
        scalings: ``L`` scalings, one per slot.
        permutation: optional ``T`` logical-to-physical row map.
        device: where the tensors live.
        capacity: pad the segment buffers to this many segments (CUDA-graph buffers); padding
            segments are empty and point at slot 0.  Implies ``use_cuda_graph=True``.
        use_cuda_graph: mark the tensors as graph buffers.
        request_segments: how many consecutive segments each request has (SGLang's
            ``req_seg_indptr`` and ``req_weight_indices`` are built from it), or None.

    ``expected_tokens`` and ``has_active_lora`` are filled in.  The result is not validated;
    call ``validate()`` (``set_batch_info`` does).
    """
    bs = len(seg_lens)
    if len(weight_indices) != bs:
        fail("weight_indices", f"{bs} entries (one per segment)", f"{len(weight_indices)}")
    if len(scalings) != len(lora_ranks):
        fail("scalings", f"{len(lora_ranks)} entries (one per slot)", f"{len(scalings)}")
    cap = bs if capacity is None else capacity
    if cap < bs:
        fail("capacity", f">= bs = {bs}", f"{cap}")
    lens = [*seg_lens, *([0] * (cap - bs))]
    slots = [*weight_indices, *([0] * (cap - bs))]
    indptr = [0]
    for n in lens:
        indptr.append(indptr[-1] + n)

    def ints(values: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(values), dtype=INDEX_DTYPE, device=device)

    requests = {}
    if request_segments is not None:
        firsts = [0, *itertools.accumulate(request_segments)]
        requests = dict(
            req_seg_indptr=ints([indptr[min(f, cap)] for f in firsts]),
            req_weight_indices=ints([slots[f] if f < bs else 0 for f in firsts[:-1]]),
        )
    used = {w for w, n in zip(slots, lens, strict=True) if n > 0}
    return LoRABatchInfo(
        bs=bs,
        seg_lens=ints(lens),
        seg_indptr=ints(indptr),
        max_len=max(lens, default=0),
        weight_indices=ints(slots),
        lora_ranks=ints(lora_ranks),
        scalings=torch.tensor(list(scalings), dtype=torch.float32, device=device),
        permutation=None if permutation is None else ints(permutation),
        use_cuda_graph=use_cuda_graph or capacity is not None,
        expected_tokens=indptr[-1],
        has_active_lora=any(0 <= w < len(lora_ranks) and lora_ranks[w] > 0 for w in used),
        **requests,
    )


def refill_summaries(target, source) -> tuple[BatchSummary, BatchSummary]:
    """The checks every in-place refill starts with, of either batch form: ``target`` is a
    graph buffer, both batches are valid, on one device.  Returns their summaries."""
    if not target.use_cuda_graph:
        fail("target.use_cuda_graph", "True (preallocated graph buffers)", "False")
    src, dst = source.validate(), target.validate()
    if source.device != target.device:
        fail("source", f"tensors on {target.device} like the target", f"tensors on {source.device}")
    return src, dst


def refill_batch_info(target: LoRABatchInfo, source: LoRABatchInfo) -> None:
    """Copy ``source`` into ``target``'s preallocated buffers in place (CUDA-graph refill).

    Everything is checked on the host before the first byte is written, so a refill either
    succeeds whole or raises (``ValueError``/``TypeError``) and leaves ``target`` as it was:

    * ``source`` passes :meth:`LoRABatchInfo.validate` (slots in ``[0, L)``, lengths ``>= 0``,
      ``seg_indptr`` consistent, a true permutation, ...);
    * ``target`` is a graph buffer (``use_cuda_graph=True``) on the same device;
    * it fits: at most as many segments as the buffers hold, the same number of slots, the same
      token count ``T`` (a captured graph's inputs have a fixed number of rows), and a
      permutation exactly when ``target`` has one.

    Padding segments become empty.  Kernels must still bound every index they read from these
    buffers: a caller can write them without this helper.  Two token maps
    (:class:`~lora_ref.token_map.TokenMapBatchInfo`) are refilled the same way
    (:func:`~lora_ref.token_map.refill_token_map`).
    """
    from lora_ref.token_map import TokenMapBatchInfo, refill_token_map

    if isinstance(target, TokenMapBatchInfo) or isinstance(source, TokenMapBatchInfo):
        refill_token_map(target, source)  # type: ignore[arg-type]
        return
    if not isinstance(target, LoRABatchInfo):
        fail("target", "a LoRABatchInfo", type(target).__name__, error=TypeError)
    if not isinstance(source, LoRABatchInfo):
        fail("source", "a LoRABatchInfo", type(source).__name__, error=TypeError)
    src, dst = refill_summaries(target, source)
    capacity = dst.num_segments
    if source.bs > capacity:
        fail("source.bs", f"<= the buffer capacity {capacity}", f"{source.bs}")
    if src.num_slots != dst.num_slots:
        fail("source.lora_ranks", f"{dst.num_slots} slots", f"{src.num_slots}")
    if src.num_tokens != dst.num_tokens:
        fail(
            "source",
            f"T = {dst.num_tokens} tokens, the rows the graph was captured with",
            f"T = {src.num_tokens}",
        )
    if (source.permutation is None) != (target.permutation is None):
        fail("source.permutation", "present exactly when the target has one", "a mismatch")
    n = source.bs
    total = source.seg_indptr[n : n + 1]
    target.seg_lens[:n].copy_(source.seg_lens[:n])
    target.seg_lens[n:].zero_()
    target.seg_indptr[: n + 1].copy_(source.seg_indptr[: n + 1])
    target.seg_indptr[n + 1 :].copy_(total.expand(capacity - n))
    target.weight_indices[:n].copy_(source.weight_indices[:n])
    target.weight_indices[n:].zero_()
    target.lora_ranks.copy_(source.lora_ranks)
    target.scalings.copy_(source.scalings)
    if target.permutation is not None and source.permutation is not None:
        target.permutation.copy_(source.permutation)
    target.bs = n
    target.max_len = max(target.max_len, source.max_len)
    target.expected_tokens = src.num_tokens
    target.has_active_lora = source.has_active_lora
