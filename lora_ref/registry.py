"""Backend lookup by one name: a built-in, ``package.module:Class``, or an installed entry point.

Third-party packages register a backend under the entry-point group ``lora_conformance.backends``::

    [project.entry-points."lora_conformance.backends"]
    mykernel = "mypkg.lora:MyBackend"

An explicit request never falls back to another backend: an unknown or broken name is an error.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from lora_ref.backend import BaseLoRABackend

ENTRY_POINT_GROUP = "lora_conformance.backends"

# Built-ins resolve lazily, so naming one never imports another backend's dependencies.
BUILTIN_BACKENDS: dict[str, str] = {
    "reference": "lora_ref.reference:ReferenceLoRABackend",
    "triton": "lora_triton:TritonLoRABackend",
    "triton-invariant": "lora_triton:TritonBatchInvariantBackend",
}


class BackendNotFoundError(ValueError):
    """No backend of that name, or its module or a dependency is not installed; the message
    lists the known names or names what is missing."""


class BackendLoadError(RuntimeError):
    """The backend's own code raised while it was imported: its module is broken, not missing.

    The message is one line naming the backend and the exception; the original exception is
    chained (``__cause__``) for a traceback.
    """


def _raised(name: str, what: str, exc: BaseException) -> BackendLoadError:
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return BackendLoadError(f"backend {name!r}: {what} raised {type(exc).__name__}{detail}")


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_target(name: str) -> str | None:
    """The ``package.module:Class`` a backend name stands for, without importing it: a
    built-in's, an installed entry point's, or ``name`` itself when it has that form; None for
    a name that is none of these."""
    if name in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[name]
    if ":" in name:
        return name
    ep = _entry_points().get(name)
    return ep.value if ep is not None else None  # type: ignore[attr-defined]


def known_backend_names() -> list[str]:
    """Built-in names followed by installed entry-point names."""
    return [*BUILTIN_BACKENDS, *sorted(set(_entry_points()) - set(BUILTIN_BACKENDS))]


def _load_target(target: str, name: str) -> type[BaseLoRABackend]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise BackendNotFoundError(
            f"backend {name!r}: expected 'package.module:Class', got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendNotFoundError(
            f"backend {name!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a module must not end the process
        raise _raised(name, f"importing module {module_name!r}", exc) from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise BackendNotFoundError(
                f"backend {name!r}: module {module_name!r} has no {attr!r}"
            ) from exc
    return _as_backend(obj, name)


def _as_backend(obj: object, name: str) -> type[BaseLoRABackend]:
    if not (isinstance(obj, type) and issubclass(obj, BaseLoRABackend)):
        raise BackendNotFoundError(
            f"backend {name!r}: expected a BaseLoRABackend subclass, got {obj!r}"
        )
    return obj


def get_backend_from_name(name: str) -> type[BaseLoRABackend]:
    """Resolve ``name`` to a backend class.

    Args:
        name: a built-in (``reference``, ``triton``), ``package.module:Class``, or the name of an
            entry point in the ``lora_conformance.backends`` group.

    Raises:
        BackendNotFoundError: (a ``ValueError``) for an unknown name, listing the known ones, or
            for a target that cannot be imported or is not a backend class.
        BackendLoadError: (a ``RuntimeError``) when importing the backend's module raised
            anything but ``ImportError``.
    """
    if not isinstance(name, str) or not name:
        raise BackendNotFoundError(f"backend name: expected a non-empty str, got {name!r}")
    if name in BUILTIN_BACKENDS:
        return _load_target(BUILTIN_BACKENDS[name], name)
    if ":" in name:
        return _load_target(name, name)
    eps = _entry_points()
    if name in eps:
        try:
            obj = eps[name].load()
        except ImportError as exc:
            raise BackendNotFoundError(
                f"backend {name!r}: its entry point failed to import: {exc}"
            ) from exc
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise _raised(name, f"entry point {eps[name].value!r}", exc) from exc
        return _as_backend(obj, name)
    raise BackendNotFoundError(
        f"unknown backend {name!r}; known: {', '.join(known_backend_names())} "
        "(or give 'package.module:Class')"
    )
