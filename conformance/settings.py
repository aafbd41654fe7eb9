"""The run options of ``check``, declared once.

Each option is one :class:`Setting` in :data:`SETTINGS`.  The command line adds it as
``--name`` (:func:`add_arguments`), the pytest plugin as ``--lora-name`` (:func:`add_options`;
``profile``, ``seed`` and ``jobs`` belong to Hypothesis and pytest-xdist there), the Python API
takes it as the keyword ``name`` and checks it (:func:`validate`), then turns the values into the
child pytest's command line (:func:`pytest_argv`), and the engine takes its defaults from here
(:func:`default`).  A new option is one line of the table; its default is written once.

Nothing here imports torch: the command line builds its parser without loading it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance import profiles
from conformance.names import CHECK_NAMES, DTYPE_NAMES, GROUP_OPS

DEVICES = ("cpu", "cuda")


class UsageError(ValueError):
    """A bad run option, or an output that cannot be written; the message names the option as
    the caller spelled it, what was expected and what came (the command line exits with 2)."""


@dataclass(frozen=True)
class Setting:
    """One run option.

    Attributes:
        name: the command line's spelling without ``--`` (``max-examples``).
        help: one line for ``--help``.
        kind: ``str``, ``int``, ``float``, ``flag`` (on or off), ``choice`` (one of
            ``choices``) or ``subset`` (a non-empty subset of ``choices``; None: all).
        default: the value when the option is not given.
        choices: the values a ``choice`` or ``subset`` takes.
        minimum: the least value an ``int`` or ``float`` takes.
        metavar: the value's name in ``--help``.
        pytest: the child pytest's spelling when another plugin owns the option (Hypothesis,
            pytest-xdist); the conformance plugin then does not add it.
        group: ``run``, or ``campaign`` for the options of a campaign over many runners.
    """

    name: str
    help: str
    kind: str = "str"
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    metavar: str | None = None
    pytest: str | None = None
    group: str = "run"

    def spelled(self, style: str) -> str:
        """The option as ``style`` (``cli``, ``pytest`` or ``api``) spells it."""
        if style == "api":
            return self.name.replace("-", "_")
        if style == "pytest":
            return self.pytest or f"--lora-{self.name}"
        return f"--{self.name}"

    def check(self, value: Any, style: str = "api") -> Any:
        """``value`` if it is one this option takes, else :class:`UsageError`."""
        name = self.spelled(style)
        if value is None or (self.kind == "flag" and value is False):
            return value
        if self.kind == "subset":
            values = tuple(value)
            bad = [v for v in values if v not in self.choices]
            if bad or not values:
                raise UsageError(f"{name}: expected a non-empty subset of "
                                 f"{', '.join(self.choices)}, got {list(values)}")  # fmt: skip
            return values
        if self.kind == "choice" and value not in self.choices:
            raise UsageError(f"{name}: expected one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{name}: expected >= {self.minimum:g}, got {value}")
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("profile", f"example counts and size caps (env {profiles.PROFILE_ENV})",
            kind="choice", default="ci", choices=profiles.NAMES, pytest="--hypothesis-profile"),
    Setting("ops", "ops (default: all)", kind="subset", choices=GROUP_OPS),
    Setting("dtypes", "dtypes (default: all)", kind="subset", choices=DTYPE_NAMES),
    Setting("checks", "checks (default: all)", kind="subset", choices=CHECK_NAMES),
    Setting("device", "device to test on (default: cuda when present and declared, else cpu)",
            kind="choice", choices=DEVICES),
    Setting("max-examples", "drawn examples per diff group, the other checks taking their share "
            "(default: the profile's)", kind="int", minimum=1),
    Setting("seed", "run seed (default: 0 for ci, random otherwise; reported)", kind="int",
            pytest="--hypothesis-seed"),
    Setting("deadline", "seconds one example may take before it is reported as a hang; 0: no "
            "limit", kind="float", default=300.0, minimum=0),
    Setting("isolate", "run the backend in a worker process: a crash or an exit is reported "
            "with its case", kind="flag", default=False),
    Setting("no-fresh-replay", "do not run each group's minimal failing case again in a fresh "
            "process (by default it is, and the report says whether it fails there too or "
            "needs what ran before it)", kind="flag", default=False),
    Setting("jobs", "run groups in this many processes (needs pytest-xdist)", kind="int",
            minimum=1, pytest="-n"),
    Setting("failures-dir", "where minimal failing cases are saved for `lora-conformance replay`",
            default="conformance-failures"),
    Setting("example-db", "a Hypothesis example database the runners share: a folder, "
            "redis://host:port/db, or readonly:<either> (the local .hypothesis/lora-conformance "
            "is kept too)", metavar="URL", group="campaign"),
    Setting("shard", "run shard I of N (1 <= I <= N) of the plan, balanced by group times; every "
            "shard of a campaign takes the same seed", metavar="I/N", group="campaign"),
    Setting("shard-times", "balance the shards by the group times of this earlier report "
            "(default: by example counts)", metavar="REPORT", group="campaign"),
)  # fmt: skip

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
API_NAMES: tuple[str, ...] = tuple(s.spelled("api") for s in SETTINGS)
DEFAULTS: dict[str, Any] = {s.spelled("api"): s.default for s in SETTINGS}  # by the API's names


def renamed(message: str, style: str) -> str:
    """A message that opens with an option's command-line spelling (``--shard: ...``), with
    the option spelled as ``style`` spells it."""
    for s in sorted(SETTINGS, key=lambda s: -len(s.name)):
        cli = s.spelled("cli")
        if message.startswith(cli + ":"):
            return s.spelled(style) + message[len(cli) :]
    return message


# --- the three front ends ---------------------------------------------------------------------

_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                  **overrides: Any) -> None:  # fmt: skip
    """Add the options ``names`` (default: every run option, the campaign ones in their own
    group) to an argparse ``parser``; ``overrides`` (``{"profile": {"default": ...}}``) replace
    fields of one option's ``add_argument`` call."""
    campaign = None
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        target: Any = parser
        if s.group == "campaign" and names is None:
            if campaign is None:
                campaign = parser.add_argument_group("campaigns over many runners (see the README)")
            target = campaign
        kw: dict[str, Any] = {"help": s.help, "default": s.default}
        if s.kind == "flag":
            kw["action"] = "store_true"
        elif s.kind in ("choice", "subset"):
            kw["choices"] = s.choices
            if s.kind == "subset":
                kw["nargs"] = "+"
        else:
            kw["type"] = _TYPES[s.kind]
        if s.metavar:
            kw["metavar"] = s.metavar
        kw.update(overrides.get(s.name.replace("-", "_"), {}))
        flags = [s.spelled("cli")] + (["-j"] if s.name == "jobs" else [])
        target.add_argument(*flags, **kw)


def _csv(setting: Setting) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in setting.choices]
        if bad or not items:
            raise ValueError(f"expected a comma-separated subset of {', '.join(setting.choices)}")
        return items

    parse.__name__ = setting.name  # pytest names the option's type in its error
    return parse


def add_options(group: Any) -> None:
    """Add the options the conformance plugin owns to a pytest option ``group``, each as
    ``--lora-name``."""
    for s in SETTINGS:
        if s.pytest is not None:
            continue
        kw: dict[str, Any] = {"help": s.help, "default": s.default}
        if s.kind == "flag":
            kw["action"] = "store_true"
        elif s.kind == "subset":
            kw.update(type=_csv(s), default=s.choices)
        elif s.kind == "choice":
            kw["choices"] = s.choices
        else:
            kw["type"] = _TYPES[s.kind]
        if s.metavar:
            kw["metavar"] = s.metavar
        group.addoption(s.spelled("pytest"), **kw)


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """The API's keyword values, each checked (:class:`UsageError` names the keyword); a
    ``subset`` left out becomes every choice."""
    out = {}
    for s in SETTINGS:
        value = s.check(values.get(s.spelled("api"), s.default))
        out[s.spelled("api")] = s.choices if s.kind == "subset" and value is None else value
    return out


def pytest_argv(values: Mapping[str, Any]) -> list[str]:
    """The child pytest's options for the API's checked ``values`` (:func:`validate`); an option
    at None (or a flag off) is left out, so the child takes its own default."""
    argv: list[str] = []
    for s in SETTINGS:
        value = values.get(s.spelled("api"))
        if value is None or value is False:
            continue
        if s.name == "jobs":
            argv += ["-p", "xdist.plugin"]
        if s.kind == "flag":
            argv.append(s.spelled("pytest"))
        elif s.kind == "subset":
            argv += [s.spelled("pytest"), ",".join(value)]
        else:
            argv += [s.spelled("pytest"), str(value)]
    return argv


def markdown_table() -> str:
    """The option table of ``docs/running.md``: each option in its three spellings, its
    default and what it does (a test holds the document to this)."""
    rows = ["| command line | pytest | Python API | default | what it does |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for s in SETTINGS:
        shown = "all" if s.kind == "subset" else "off" if s.kind == "flag" else s.default
        text = s.help.replace("|", "\\|")
        rows.append(f"| `{s.spelled('cli')}` | `{s.spelled('pytest')}` | `{s.spelled('api')}` "
                    f"| {'' if shown is None else f'`{shown}`'} | {text} |")  # fmt: skip
    return "\n".join(rows) + "\n"
