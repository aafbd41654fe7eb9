"""Drive Hypothesis over one property of one backend and collect what the reports need.

Used by the CLI (``lora-conformance check``) and the meta-tests; the pytest suite uses the same
check functions through plain ``@given`` tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hypothesis import Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from conformance.case import Case
from conformance.checks import (
    RELATIONS,
    CaseResult,
    check_bad_inputs,
    check_case,
    check_cuda_graph,
    check_metamorphic,
)
from conformance.strategies import Limits, cases
from lora_ref import BaseLoRABackend

PROPERTIES = ("diff", "metamorphic", "bad_input", "cuda_graph")


@dataclass
class GroupStats:
    """Counts of one (property, op, dtype) group.

    ``failed`` counts failing executions, Hypothesis' shrinking steps included; ``failure`` is
    the minimal failing case Hypothesis settled on.
    """

    prop: str
    op: str
    dtype: str
    examples: int = 0
    passed: int = 0
    failed: int = 0
    worst_ratio: float = 0.0
    failure: CaseResult | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.error is None


def unsupported(
    backend_cls: type[BaseLoRABackend], prop: str, dtype: str, device: torch.device
) -> str | None:
    """Why this group cannot run on this backend, or None."""
    caps = backend_cls.capabilities
    if device.type not in caps.devices:
        return f"backend does not run on {device.type}"
    from conformance.case import DTYPES

    if DTYPES[dtype] not in caps.dtypes:
        return f"{dtype} not declared by backend"
    if prop == "cuda_graph":
        if device.type != "cuda":
            return "needs CUDA"
        if not caps.cuda_graph:
            return "not declared by backend"
    return None


def case_strategy(
    backend_cls: type[BaseLoRABackend], prop: str, op: str, dtype: str, limits: Limits
) -> st.SearchStrategy[Case]:
    """Cases of ``op`` in ``dtype`` using only what the backend declares."""
    caps = backend_cls.capabilities
    permutation = caps.permutation and prop != "cuda_graph"
    split = caps.split_layouts and prop != "cuda_graph"
    return cases(op, dtype, limits, permutation=permutation, split_layouts=split)


def _check_fn(
    backend_cls: type[BaseLoRABackend], prop: str, device: torch.device
) -> Callable[[Case, str, int], CaseResult]:
    if prop == "diff":
        return lambda case, _r, _c: check_case(backend_cls, case, device)
    if prop == "metamorphic":
        return lambda case, relation, choice: check_metamorphic(
            backend_cls, case, relation, choice, device
        )
    if prop == "bad_input":
        return lambda case, _r, _c: check_bad_inputs(backend_cls, case, device)
    if prop == "cuda_graph":
        return lambda case, _r, _c: check_cuda_graph(backend_cls, case)
    raise ValueError(f"property: expected one of {PROPERTIES}, got {prop!r}")


def run_group(
    backend_cls: type[BaseLoRABackend],
    prop: str,
    op: str,
    dtype: str,
    device: torch.device,
    limits: Limits,
    hypothesis_settings: settings,
    on_example: Callable[[CaseResult], None] | None = None,
    seed: int | None = None,
) -> GroupStats:
    """Search for a failing case of ``prop`` for ``op`` in ``dtype``; shrink it if found."""
    stats = GroupStats(prop, op, dtype)
    reason = unsupported(backend_cls, prop, dtype, device)
    if reason:
        stats.skipped = reason
        return stats
    check = _check_fn(backend_cls, prop, device)
    strategy = case_strategy(backend_cls, prop, op, dtype, limits)
    if prop == "bad_input":
        # a backend without validation fails every example alike; shrinking each of the ~17
        # mutations' cases buys little and costs minutes under the interpreter
        hypothesis_settings = settings(
            hypothesis_settings, phases=[Phase.explicit, Phase.reuse, Phase.generate]
        )
    if prop == "cuda_graph":
        strategy = strategy.filter(lambda c: c.T > 0)

    @hypothesis_settings
    @given(case=strategy, relation=st.sampled_from(RELATIONS), choice=st.integers(0, 10**6))
    def prop_test(case: Case, relation: str, choice: int) -> None:
        result = check(case, relation, choice)
        stats.examples += 1
        if result.worst_ratio != float("inf"):
            stats.worst_ratio = max(stats.worst_ratio, result.worst_ratio)
        if on_example is not None:
            on_example(result)
        if result.ok:
            stats.passed += 1
            return
        stats.failed += 1
        stats.failure = result
        raise AssertionError("; ".join(result.failures))

    if seed is not None:
        prop_test = hypothesis_seed(seed)(prop_test)
    try:
        prop_test()
    except AssertionError:
        pass
    except HypothesisException as exc:
        stats.error = f"{type(exc).__name__}: {exc}"
    return stats


def find_failure(
    backend_cls: type[BaseLoRABackend],
    ops: tuple[str, ...],
    dtypes: tuple[str, ...],
    props: tuple[str, ...],
    device: torch.device,
    limits: Limits,
    hypothesis_settings: settings,
) -> GroupStats | None:
    """The first group that fails, or None when every group passes."""
    for prop in props:
        for op in ops:
            for dtype in dtypes:
                stats = run_group(backend_cls, prop, op, dtype, device, limits, hypothesis_settings)
                if not stats.ok:
                    return stats
    return None


@dataclass
class Report:
    """Everything one ``check`` run found."""

    backend: str
    version: str
    device: str
    profile: str
    groups: list[GroupStats] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.groups)

    @property
    def worst_ratio(self) -> float:
        return max((g.worst_ratio for g in self.groups), default=0.0)
