"""The multi-LoRA backend contract (docs/contract.md) and its float64 reference backend."""

from lora_ref.backend import BaseLoRABackend, Capabilities, Domain
from lora_ref.batch_info import BatchSummary, LoRABatchInfo, make_batch_info, refill_batch_info
from lora_ref.reference import ReferenceLoRABackend
from lora_ref.registry import (
    ENTRY_POINT_GROUP,
    BackendLoadError,
    BackendNotFoundError,
    get_backend_from_name,
    known_backend_names,
)
from lora_ref.token_map import TokenMapBatchInfo, to_segments, to_token_map

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendLoadError",
    "BackendNotFoundError",
    "BaseLoRABackend",
    "BatchSummary",
    "Capabilities",
    "Domain",
    "LoRABatchInfo",
    "ReferenceLoRABackend",
    "TokenMapBatchInfo",
    "get_backend_from_name",
    "known_backend_names",
    "make_batch_info",
    "refill_batch_info",
    "to_segments",
    "to_token_map",
]
