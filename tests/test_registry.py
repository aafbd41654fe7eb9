"""Backend lookup: built-ins, ``module:Class``, an installed entry point, unknown names."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from lora_ref import (
    ENTRY_POINT_GROUP,
    BackendNotFoundError,
    ReferenceLoRABackend,
    get_backend_from_name,
    known_backend_names,
)


def test_builtin_names():
    assert get_backend_from_name("reference") is ReferenceLoRABackend
    triton_cls = get_backend_from_name("triton")
    assert triton_cls.__name__ == "TritonLoRABackend" and triton_cls.name == "triton"


def test_module_colon_class():
    assert get_backend_from_name("lora_ref.reference:ReferenceLoRABackend") is ReferenceLoRABackend


def test_module_colon_class_errors():
    with pytest.raises(BackendNotFoundError, match="cannot import module 'no_such_pkg'"):
        get_backend_from_name("no_such_pkg:Backend")
    with pytest.raises(BackendNotFoundError, match="has no 'Nope'"):
        get_backend_from_name("lora_ref.reference:Nope")
    with pytest.raises(BackendNotFoundError, match="expected a BaseLoRABackend subclass"):
        get_backend_from_name("lora_ref.batch_info:LoRABatchInfo")


def test_unknown_name_lists_known_ones():
    with pytest.raises(BackendNotFoundError) as exc:
        get_backend_from_name("nonexistent")
    msg = str(exc.value)
    assert "unknown backend 'nonexistent'" in msg and "reference" in msg and "triton" in msg
    assert isinstance(exc.value, ValueError)


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A third-party distribution on sys.path registering ``toy`` in the entry-point group."""
    pkg = tmp_path / "toy_lora"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from lora_ref import ReferenceLoRABackend

            class ToyBackend(ReferenceLoRABackend):
                name = "toy"
            """
        )
    )
    dist = tmp_path / "toy_lora-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-lora\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntoy = toy_lora:ToyBackend\nbroken = toy_lora_missing:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("toy_lora", None)


def test_entry_point_found_by_short_name(installed_plugin):
    cls = get_backend_from_name("toy")
    assert cls.__name__ == "ToyBackend" and issubclass(cls, ReferenceLoRABackend)
    assert "toy" in known_backend_names()


def test_broken_entry_point_is_an_error_not_a_fallback(installed_plugin):
    with pytest.raises(BackendNotFoundError, match="'broken': its entry point failed to import"):
        get_backend_from_name("broken")


def test_empty_name():
    with pytest.raises(BackendNotFoundError, match="expected a non-empty str"):
        get_backend_from_name("")
