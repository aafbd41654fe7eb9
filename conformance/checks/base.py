"""What every check is made of: :class:`Check` (one entry of the registry), the
:class:`Example` it runs, the :class:`GroupContext` it draws in, and the draws the checks share.

Each check's file ends with its ``CHECK``; :mod:`conformance.checks` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st

from conformance import corners
from conformance.case import Case
from conformance.checks.guards import CaseResult
from conformance.domain import inside, within
from conformance.profiles import Profile
from conformance.strategies import cases
from lora_ref import BaseLoRABackend, Capabilities


class Example(NamedTuple):
    """One example of a check: a case and the check's own parameters (JSON values)."""

    case: Case
    params: dict[str, Any]


@dataclass(frozen=True)
class GroupContext:
    """What a check needs to draw the examples of one group."""

    op: str
    dtype: str
    op_dtypes: list[str]  # the dtypes this op's diff groups run in (corner cases spread there)
    profile: Profile
    caps: Capabilities
    device: str = "cpu"  # the device type the group runs on


def nothing_needed(caps: Capabilities, device: str) -> str | None:
    """The ``needs`` of a check every backend runs."""
    return None


@dataclass(frozen=True)
class Check:
    """A check of the registry.

    Attributes:
        name: its name in group ids, reports and failure files (its file is
            ``conformance/checks/<name>.py``).
        doc: what it does, for the check table of ``docs/contract.md``.
        rules: the sections of ``docs/contract.md`` it enforces, as their anchors.
        ops: the ops it makes groups for (``("mixed",)``: one group over every op).
        dtypes: ``all`` (a group per declared dtype), ``primary`` (the first declared dtype) or
            ``mixed`` (one group over every declared dtype).
        scale: its share of the profile's examples per group.
        shrink: whether Hypothesis shrinks its failures.
        strategy: the examples it draws.
        explicit: the hand-built examples it runs first.
        run: one example on a backend class.
        needs: why the backend or device cannot run it, or None.
        reach: what one example reached of the input space (``conformance.space.count``
            counts, and the check's own kinds), where the case alone does not say it.
    """

    name: str
    doc: str
    rules: tuple[str, ...]
    ops: tuple[str, ...]
    dtypes: str
    scale: float
    shrink: bool
    strategy: Callable[[GroupContext], st.SearchStrategy[Example]]
    explicit: Callable[[GroupContext], list[Example]]
    run: Callable[[type[BaseLoRABackend], Example, torch.device], CaseResult]
    needs: Callable[[Capabilities, str], str | None] = nothing_needed
    reach: Callable[[Example], dict[str, dict[str, int]]] | None = None

    def hand_built(self, ctx: GroupContext) -> tuple[list[Example], int]:
        """The hand-built examples inside the backend's declared domain, and how many of them
        were left out for lying outside it."""
        return inside(self.explicit(ctx), ctx.caps.shapes)


def requires(flag: str, text: str) -> Callable[[Capabilities, str], str | None]:
    """The ``needs`` of a check that runs only where the backend declares ``flag``."""
    return lambda caps, device: None if getattr(caps, flag) else f"{text} not declared by backend"


def drawn(ctx: GroupContext, **forced: Any) -> st.SearchStrategy[Case]:
    """The group's random cases, with the fields ``forced`` set on each."""
    caps = ctx.caps
    strategy = cases(
        ctx.op,
        ctx.dtype,
        ctx.profile,
        # a token map carries any row order itself, whether or not permutations are declared
        permutation=(caps.permutation or forced.get("token_map", False))
        and forced.get("permute", True),
        split_layouts=caps.split_layouts,
        n_slices=caps.n_slices and not forced.get("split_b", False),
    )
    strategy = within(strategy, caps.shapes)  # drawn over the whole space, moved into the domain
    return strategy.map(lambda c: c.replace(**forced)) if forced else strategy


def plain(strategy: st.SearchStrategy[Case]) -> st.SearchStrategy[Example]:
    """Examples that are a case and nothing else."""
    return strategy.map(lambda c: Example(c, {}))


def primary_corners(ctx: GroupContext, count: int, **forced: Any) -> list[Example]:
    """``count`` shared corner cases with rows in them, in the group's dtype."""
    sliced = ctx.caps.n_slices and not forced.get("split_b", False)
    shared, _ = corners.corner_cases(ctx.op, ctx.profile.name, sliced)
    chosen = [c for c in shared if c.T >= 2][:count]
    return [Example(c.replace(dtype=ctx.dtype, **forced), {}) for c in chosen]
