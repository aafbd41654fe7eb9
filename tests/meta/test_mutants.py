"""The suite tests itself: it must catch every mutant of the zoo and pass the correct backends."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from conformance.case import OPS
from conformance.profiles import limits_for
from conformance.runner import find_failure
from lora_ref import ReferenceLoRABackend, get_backend_from_name
from tests.meta.mutants import MUTANTS

CPU = torch.device("cpu")
SEARCH = settings(max_examples=40, derandomize=True, deadline=None, database=None, print_blob=False)
PROPS = ("diff", "bad_input", "metamorphic")


def test_zoo_is_large_enough():
    assert len(MUTANTS) >= 15
    assert len({m.__doc__ for m in MUTANTS}) == len(MUTANTS), "each mutant carries its own bug"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.__name__)
def test_suite_catches_mutant(mutant):
    # float32 keeps the reference-based mutants fast; each bug shows in any dtype
    found = find_failure(mutant, OPS, ("float32",), PROPS, CPU, limits_for("ci"), SEARCH)
    assert found is not None, f"{mutant.__name__} ({mutant.__doc__.strip()}) passed the suite"
    assert found.failure is not None and found.failure.failures


def test_reference_passes_every_property():
    found = find_failure(
        ReferenceLoRABackend,
        OPS,
        ("float16", "bfloat16", "float32"),
        PROPS,
        CPU,
        limits_for("ci"),
        SEARCH,
    )
    assert found is None, found and found.failure.failures


@pytest.mark.slow
def test_triton_passes_every_property():
    triton_backend = get_backend_from_name("triton")
    quick = settings(SEARCH, max_examples=6)
    found = find_failure(
        triton_backend, OPS, ("float16", "bfloat16", "float32"), PROPS, CPU, limits_for("ci"), quick
    )
    assert found is None, found and found.failure.failures
