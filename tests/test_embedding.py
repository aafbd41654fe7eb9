"""Embedding LoRA's gather (``run_lora_a_embedding``): what the reference computes, and the
``embedding`` check against backends that read the wrong table, the wrong slot, or take ids
past the tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conformance.engine import run_plan
from lora_ref import Capabilities, ReferenceLoRABackend, make_batch_info
from lora_triton.backend import TritonLoRABackend


def _call(backend_cls, ids):
    info = make_batch_info([2, 3], [1, 0], [2, 3], [1.0, 1.0], permutation=[4, 0, 3, 1, 2])
    weights = torch.arange(2 * 3 * 6, dtype=torch.float32).view(2, 3, 6)
    extra = -torch.arange(2 * 2 * 3, dtype=torch.float32).view(2, 2, 3) - 1
    backend = backend_cls(batch_info=info)
    return backend.run_lora_a_embedding(torch.tensor(ids), weights, 6, extra), weights, extra


@pytest.mark.parametrize("backend_cls", [ReferenceLoRABackend, TritonLoRABackend])
def test_each_row_gets_its_slots_column_or_extra_row(backend_cls):
    ids = [5, 6, 0, 7, 2]  # physical rows; rows 4, 0 are slot 1 (rank 3), rows 3, 1, 2 slot 0
    out, w, extra = _call(backend_cls, ids)
    assert torch.equal(out[4, :3], w[1, :3, 2])
    assert torch.equal(out[0, :3], w[1, :3, 5])
    assert torch.equal(out[3, :2], extra[0, 1, :2])  # id 7 = vocabulary 6 + extra row 1
    assert torch.equal(out[1, :2], extra[0, 0, :2])
    assert torch.equal(out[2, :2], w[0, :2, 0])


@pytest.mark.parametrize("bad", [[5, 6, 0, 8, 2], [5, -1, 0, 7, 2]])
def test_ids_past_the_tables_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"input_ids: expected token ids in \[0, 8\)"):
        _call(ReferenceLoRABackend, bad)


class _NoExtra(ReferenceLoRABackend):
    """Reads every id from the base table, clamped (the extra vocabulary ignored)."""

    capabilities = Capabilities(float32_matmul="ieee", embedding=True)

    def run_lora_a_embedding(self, input_ids, weights, vocab_size, extra_embeddings=None):
        ids = input_ids.clamp(max=vocab_size - 1) if vocab_size else input_ids
        return super().run_lora_a_embedding(ids, weights, vocab_size, extra_embeddings)


class _FirstSlot(ReferenceLoRABackend):
    """Gathers every row from the first segment's slot."""

    capabilities = Capabilities(float32_matmul="ieee", embedding=True)

    def run_lora_a_embedding(self, input_ids, weights, vocab_size, extra_embeddings=None):
        info, _ = self._batch()
        slot = int(info.weight_indices[0]) if info.weight_indices.numel() else 0
        out = super().run_lora_a_embedding(input_ids, weights, vocab_size, extra_embeddings)
        for t, v in enumerate(input_ids.tolist()):
            if v < vocab_size:
                out[t] = weights[slot, :, v]
        return out


class _Unchecked(ReferenceLoRABackend):
    """Takes ids past the tables, clamped into them."""

    capabilities = Capabilities(float32_matmul="ieee", embedding=True)

    def run_lora_a_embedding(self, input_ids, weights, vocab_size, extra_embeddings=None):
        top = vocab_size + (0 if extra_embeddings is None else extra_embeddings.shape[1]) - 1
        if input_ids.dtype in (torch.int32, torch.int64):
            input_ids = input_ids.clamp(0, max(top, 0))
        return super().run_lora_a_embedding(input_ids, weights, vocab_size, extra_embeddings)


class _NoEmbedding(ReferenceLoRABackend):
    capabilities = Capabilities(float32_matmul="ieee")


def _outcomes(backend_cls, tmp_path: Path) -> set[str]:
    kw = dict(profile="ci", failures_dir=tmp_path, checks=("embedding",), dtypes=("float32",),
              shrink=False)  # fmt: skip
    return {r.outcome for r in run_plan(backend_cls, backend_cls.__name__, **kw)}


def test_the_check_passes_the_reference_and_triton(tmp_path: Path):
    assert _outcomes(ReferenceLoRABackend, tmp_path) == {"pass"}
    assert _outcomes(TritonLoRABackend, tmp_path) == {"pass"}


@pytest.mark.parametrize("mutant", [_NoExtra, _FirstSlot, _Unchecked])
def test_the_check_fails_a_wrong_gather(mutant, tmp_path: Path):
    assert _outcomes(mutant, tmp_path) == {"fail"}


def test_a_backend_without_embedding_is_skipped(tmp_path: Path):
    assert _outcomes(_NoEmbedding, tmp_path) == {"skip"}


def test_the_space_report_names_the_extra_table_sizes_and_id_kinds(tmp_path: Path):
    """What `ci` reaches of embedding's own space, counted per example: every extra-table size
    class (none, one row, a few, up to 16), ids at the vocabulary's edges and in the extra
    table, both id dtypes, and ids past 2^15."""
    from conformance import space

    records = run_plan(ReferenceLoRABackend, "reference", profile="ci", failures_dir=tmp_path,
                       checks=("embedding",), dtypes=("float32",), shrink=False)  # fmt: skip
    (rec,) = records
    kinds = space.summary(rec.space)["embedding_ids"]
    assert {"extra rows 0", "extra rows 1", "extra rows 2-4", "extra rows 5-16"} <= set(kinds)
    assert {
        "id 0",
        "id V-1 (last of the vocabulary)",
        "id V (first extra)",
        "id V+E-1 (last extra)",
        "int32 ids",
        "int64 ids",
        "an id past 2^15",
    } <= set(kinds)
    assert sum(rec.space["embedding"].values()) >= 4 * rec.examples  # four kinds per example
