"""Third-party LoRA kernels, loaded at run time when their package is installed."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

from lora_ref import BaseLoRABackend
from lora_ref.token_map import Batch
from lora_ref.validation import check_call

P = TypeVar("P")


_OPS = {"run_lora_a_sgemm": "shrink", "run_lora_b_sgemm": "expand", "run_qkv_lora": "qkv",
        "run_gate_up_lora": "gate_up"}  # fmt: skip


def validated(run: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A peer's ``run_*`` method that first checks its call as the contract says (section 6,
    :func:`lora_ref.validation.check_call`): the peer's kernel then sees only valid input, and
    a bad one gets the contract's error instead of the peer's assertion or crash."""
    op = _OPS[run.__name__]
    signature = inspect.signature(getattr(BaseLoRABackend, run.__name__))

    @functools.wraps(run)
    def checked(self: BaseLoRABackend, *args: Any, **kwargs: Any) -> torch.Tensor:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        info, summary = self._batch()
        check_call(summary, info.device, op, bound.arguments)
        return run(self, *args, **kwargs)

    return checked


class PeerNotInstalledError(ImportError):
    """The peer's package is missing; the message names the pip extra that installs it."""


class PeerInterfaceError(ImportError):
    """The peer is installed, but a name the adapter reaches into is gone (a rename upstream)."""


def peer_attribute(module: Any, name: str, kind: type, peer: str) -> Any:
    """``module.name``, checked to be a ``kind``: a private hook of a peer (a cache to clear)
    that a new release may rename fails here, by name, instead of deep inside a run."""
    value = getattr(module, name, None)
    if not isinstance(value, kind):
        found = "missing" if value is None else type(value).__name__
        where = getattr(module, "__name__", "its module")
        raise PeerInterfaceError(
            f"{peer}: {where}.{name} is {found}, expected a {kind.__name__} (the adapter "
            f"clears it); this adapter knows the versions named in COMPATIBILITY.md"
        )
    return value


class PreparedWeights:
    """Weights re-laid out for a peer's kernel, rebuilt only when their source changes.

    A peer that needs its own weight layout (zero-padded ranks, scaling folded in) would rebuild
    it on every call, and a benchmark would time that copy instead of the peer's kernel.  A
    server converts an adapter once, when it loads it; this cache does the same.  An entry is
    reused only while its source is the same live tensor object at the same in-place version
    (``Tensor._version``), so a freed tensor whose memory is reused, or a weight refilled in
    place, is never served stale.  ``clear()`` drops everything (call it when the batch's ranks
    or scalings change).  A host copy of a small device tensor (``output_offset.tolist``) is
    kept the same way, so repeated calls, and a CUDA-graph capture of them, need no sync.
    At most ``capacity`` entries are kept (the least recently used goes first).
    """

    def __init__(self, capacity: int = 64) -> None:
        self._entries: OrderedDict[Hashable, tuple[weakref.ref, int, Any]] = OrderedDict()
        self.capacity = capacity

    def clear(self) -> None:
        self._entries.clear()

    def get(self, source: torch.Tensor, key: Hashable, build: Callable[[], P]) -> P:
        """What ``build()`` made of ``source`` under ``key``; built again when stale or missing."""
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is source and entry[1] == source._version:
            self._entries.move_to_end(key)
            return entry[2]
        prepared = build()
        self._entries[key] = (weakref.ref(source), source._version, prepared)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return prepared


class PeerBackend(BaseLoRABackend):
    """Base of the adapters that drive a peer's kernels: reports the peer's installed version and
    keeps the weights it converted (:class:`PreparedWeights`, cleared by ``set_batch_info``)."""

    distribution: str = ""  # the peer's pip distribution, e.g. ``vllm``

    def __init__(self, name: str | None = None, batch_info: Batch | None = None) -> None:
        self._weights = PreparedWeights()
        super().__init__(name, batch_info)

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return f"{self.distribution} {version(self.distribution)}"

    def set_batch_info(self, batch_info: Batch) -> None:
        super().set_batch_info(batch_info)
        self._ranks: list[int] = batch_info.lora_ranks.tolist()  # what weight conversions mask by
        self._weights.clear()  # converted weights hold the last batch's ranks and scalings

    def _logical_row_slots(self) -> torch.Tensor:
        """``(T,)`` int64: the slot of each logical row (segment order), on the batch's device.
        Peers that index by token need this where the contract gives segments."""
        info, summary = self._batch()
        lens = info.seg_indptr.diff().long()
        return torch.repeat_interleave(
            info.weight_indices.long(), lens, output_size=summary.num_tokens
        )
