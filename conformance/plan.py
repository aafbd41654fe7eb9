"""The plan: which groups a run has, built once from the check registry.

A *group* is one (check, op, dtype) and becomes one pytest test (``test_conformance[<id>]``)
and one row of the CLI's table.  The pytest suite and the command line both call
:func:`build_plan`, so they run the same groups, with the same dtypes and skip reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.checks import CHECKS, NAMES
from conformance.names import DTYPE_NAMES, GROUP_OPS, OPS, dtype_name
from lora_ref import Capabilities


@dataclass(frozen=True)
class Group:
    """One (check, op, dtype) of a run; ``skip`` says why it cannot run here (None: it runs)."""

    check: str
    op: str
    dtype: str
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.check}-{self.op}-{self.dtype}"


def declared_dtypes(caps: Capabilities, dtypes: tuple[str, ...]) -> list[str]:
    """The selected dtypes the backend declares, in the selection's order."""
    names = {dtype_name(d) for d in caps.dtypes}
    return [d for d in dtypes if d in names]


def cannot_run(check: str, caps: Capabilities, device_type: str) -> str | None:
    """Why the backend cannot run ``check`` on ``device_type`` (None: it can)."""
    if device_type not in caps.devices:
        return f"the backend does not run on {device_type} (it declares {sorted(caps.devices)})"
    return CHECKS[check].needs(caps, device_type)


def build_plan(
    caps: Capabilities,
    device_type: str,
    ops: tuple[str, ...] = GROUP_OPS,
    dtypes: tuple[str, ...] = DTYPE_NAMES,
    checks: tuple[str, ...] = NAMES,
) -> list[Group]:
    """Every group of a run of ``checks`` over ``ops`` and ``dtypes`` on ``device_type``.

    Groups the backend cannot run are kept, with the reason, so they report as skipped: an
    undeclared dtype, device or feature is never a pass.
    """
    declared = declared_dtypes(caps, dtypes)
    primary = declared[0] if declared else dtypes[0]
    groups: list[Group] = []
    for name in NAMES:
        if name not in checks:
            continue
        check = CHECKS[name]
        reason = cannot_run(name, caps, device_type)
        if check.ops == ("mixed",):
            if not declared:
                reason = reason or "no selected dtype is declared by the backend"
            groups.append(Group(name, "mixed", "mixed", reason))
            continue
        for op in check.ops:
            if op not in ops:
                continue
            if check.dtypes == "all":
                for d in dtypes:
                    why = reason or (None if d in declared else f"{d} not declared by backend")
                    groups.append(Group(name, op, d, why))
            else:
                why = reason or (None if declared else "no selected dtype is declared by backend")
                groups.append(Group(name, op, primary, why))
    return groups


def op_dtypes(
    plan: list[Group], caps: Capabilities, dtypes: tuple[str, ...]
) -> dict[str, list[str]]:
    """Per op, the dtypes its diff groups run in (the hand-built corner cases are spread over
    them); ``mixed`` (the lifecycle check): every selected dtype the backend declares."""
    declared = declared_dtypes(caps, dtypes) or list(dtypes[:1])
    out: dict[str, list[str]] = {"mixed": declared}
    for op in OPS:
        ran = [g.dtype for g in plan if g.check == "diff" and g.op == op and g.skip is None]
        out[op] = ran or declared[:1]
    return out
