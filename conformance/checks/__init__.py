"""The one registry of checks.  The plan (:mod:`conformance.plan`), the engine, the pytest
suite, the command line and replay all read :data:`CHECKS`; nothing else maps names to checks.

Each check is one file of this package, ending with its ``CHECK`` (:class:`Check`): which
groups it makes, what it needs from the backend, how it draws examples, which hand-built
examples it runs first, how it runs one, and the sections of ``docs/contract.md`` it enforces
(whose check table is generated from here, :func:`markdown_table`).
"""

from __future__ import annotations

from conformance.checks import (
    bad_input,
    batch_invariance,
    cuda_graph,
    diff,
    embedding,
    lifecycle,
    metamorphic,
    permutation,
    split_layout,
    token_map,
)
from conformance.checks.base import Check, Example, GroupContext
from conformance.names import CHECK_NAMES, OPS

__all__ = ["CHECKS", "NAMES", "Check", "Example", "GroupContext", "markdown_table"]

_MODULES = (
    diff,
    permutation,
    split_layout,
    token_map,
    metamorphic,
    batch_invariance,
    bad_input,
    lifecycle,
    cuda_graph,
    embedding,
)
CHECKS: dict[str, Check] = {m.CHECK.name: m.CHECK for m in _MODULES}
NAMES = CHECK_NAMES
if tuple(CHECKS) != NAMES:
    raise RuntimeError(f"conformance.names.CHECK_NAMES {NAMES} disagrees with {tuple(CHECKS)}")


def _groups(check: Check) -> str:
    if check.ops == ("mixed",):
        return "one"
    ops = "op" if check.ops == OPS else ", ".join(check.ops)
    return f"{ops} x declared dtype" if check.dtypes == "all" else ops


def markdown_table() -> str:
    """The check table of ``docs/contract.md``: each check, its groups, what it does, its file
    and the rules it enforces (a test holds the document to this)."""
    rows = ["| check | groups | what it does | file | rules |", "| --- | --- | --- | --- | --- |"]
    for c in CHECKS.values():
        rules = ", ".join(f"[{r.split('-', 1)[0]}](#{r})" for r in c.rules)
        rows.append(f"| `{c.name}` | {_groups(c)} | {c.doc} | "
                    f"[{c.name}.py](../conformance/checks/{c.name}.py) | {rules} |")  # fmt: skip
    return "\n".join(rows) + "\n"
