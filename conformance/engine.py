"""Run one group under Hypothesis and say what happened: the one engine behind pytest and the CLI.

:func:`run_group` runs the group's hand-built examples, then the profile's random draws,
shrinks a failure to a minimal case, saves it, and returns a :class:`GroupRecord`:

* a group cut by a ``KeyboardInterrupt`` (Ctrl-C, a time limit's SIGINT) gets the outcome
  ``interrupted`` with what it ran, on the exception's ``lora_group``, and the exception goes on;
* examples and shrink steps are counted apart (explicit examples, draws and database replays are
  examples; every execution after the first failure, but the final replay, is a shrink step);
* every example's corner classes are counted and emitted as Hypothesis ``event``\\ s, and its
  error/tolerance ratio is a Hypothesis ``target``, so the search leans toward large errors;
* a crash (the backend tried to end the process) or a timeout stops the group at once, without
  shrinking, and its case is saved like any failure;
* a failure that does not fail again when Hypothesis replays it is reported as a flaky failure,
  not as an error of the harness;
* with ``RunOptions.fresh_replay``, the minimal failing case is run once more in a fresh process,
  and the record says whether it fails there too (``alone``): a case that passes alone needs
  what ran before it in the process (a cache keyed too coarsely, a pool, a stale buffer);
* in process, an example after which the CUDA context is broken (a sticky error) is a crash.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, event, given, seed, settings, target
from hypothesis import example as explicit_example
from hypothesis.control import current_build_context
from hypothesis.errors import Flaky, HypothesisException

from conformance import corners, profiles, space
from conformance.campaign import Part, part_seed
from conformance.checks import CHECKS, Example, GroupContext
from conformance.checks.guards import CaseResult, ExampleTimeout, broken_context, deadline, worse
from conformance.failures import save_failure
from conformance.plan import Group
from conformance.settings import DEFAULTS
from lora_ref import BaseLoRABackend

OUTCOMES = ("pass", "fail", "crash", "timeout", "skip", "error", "interrupted", "not run")


@dataclass
class GroupRecord:
    """What one group did (one row of the report).

    Attributes:
        outcome: one of :data:`OUTCOMES`.
        examples: distinct examples run (hand-built, replayed from the database, drawn).
        shrink_steps: executions spent shrinking a failure.
        seconds: wall time.
        worst_ratio: the largest error/tolerance seen (``nan`` when a result held NaN), None
            when the check measures none.
        corners: examples per corner class.
        space: what the examples reached of the input space (:func:`conformance.space.count`:
            per dimension its log2 bins and boundaries, per argument its layouts, the data
            modes, and for the lifecycle check the step kinds).
        failure: the minimal failing case: ``kind``, ``messages``, ``case``, ``params``,
            ``file`` (its replay file), ``flaky`` and ``alone`` (one of ``failures.ALONE``, or
            None when it was not run again in a fresh process).
        part: ``"p/k"`` when this run ran part ``p`` of ``k`` of a group split over shards
            (:func:`conformance.campaign.assign`), else None.
        outside_domain: hand-built examples left out because they lie outside the backend's
            declared domain (``Capabilities.domain``; drawn ones are moved into it).
        below_signal_floor: examples that passed but would have passed with every LoRA term
            dropped (``checks.diff.below_signal_floor``): counted in ``examples``, not as
            evidence.
    """

    id: str
    check: str
    op: str
    dtype: str
    outcome: str = "not run"
    examples: int = 0
    shrink_steps: int = 0
    seconds: float = 0.0
    worst_ratio: float | None = None
    corners: dict[str, int] = field(default_factory=dict)
    space: dict[str, dict[str, int]] = field(default_factory=dict)
    skip_reason: str | None = None
    error: str | None = None
    failure: dict[str, Any] | None = None
    part: str | None = None
    outside_domain: int = 0
    below_signal_floor: int = 0

    @classmethod
    def of(cls, group: Group) -> GroupRecord:
        return cls(group.id, group.check, group.op, group.dtype)


class GroupAborted(BaseException):
    """A crash or timeout: stop the group now, without shrinking (a BaseException, so
    Hypothesis lets it through)."""


@dataclass
class RunOptions:
    """Settings of one run, shared by all its groups.

    Attributes:
        backend_name: the name the backend was given by (saved in failure files).
        profile: the profile's name.
        run_seed: mixed with each group's id into the group's own seed.
        max_examples: drawn examples per diff group (the profile's when None).
        deadline: seconds one example may take (None: no limit).
        failures_dir: where minimal failing cases are saved.
        op_dtypes: per op, the dtypes its diff groups run in.
        runner: runs one example in place of the check's own ``run`` (``--isolate``).
        progress: called with ``(record, phase, example)`` before each execution.
        shrink: shrink failures to a minimal case (meta-tests that only ask "caught?" skip it).
        database: the Hypothesis example database (None: none, whatever the profile says;
            :func:`conformance.campaign.open_database`).
        database_key: the key of a group's examples in it, from the group id.
        parts: per group id, the part of it this run runs (a shard of a campaign); a group
            absent here runs whole.
        fresh_replay: runs a minimal failing case in a fresh process and says what it did there
            (one of ``failures.ALONE``; :func:`conformance.isolate.replay_alone`); None: not run.
    """

    backend_name: str
    profile: str = "ci"
    run_seed: int = 0
    max_examples: int | None = None
    deadline: float | None = None
    failures_dir: Path = Path(DEFAULTS["failures_dir"])
    op_dtypes: dict[str, list[str]] = field(default_factory=dict)
    runner: Callable[[str, Example], CaseResult] | None = None
    progress: Callable[[GroupRecord, str, Example | None], None] | None = None
    shrink: bool = True
    database: Any = None
    database_key: Callable[[str], bytes] | None = None
    parts: dict[str, Part] = field(default_factory=dict)
    fresh_replay: Callable[[str, Example], str] | None = None


def reached(example: Example) -> dict[str, dict[str, int]]:
    """What one example reached of the space: its case's, or every step's of a lifecycle
    example, with the step kinds under ``lifecycle``."""
    steps = example.params.get("steps")
    if not steps:
        return space.count([example.case])
    from conformance.checks.lifecycle import steps_from_params

    pairs = steps_from_params(example.params)
    counts = space.count(c for _, c in pairs)
    kinds: dict[str, int] = {}
    for kind, _ in pairs:
        kinds[kind] = kinds.get(kind, 0) + 1
    counts["lifecycle"] = kinds
    return counts


def draws(check: str, profile: str, max_examples: int | None) -> int:
    """The examples a group of ``check`` draws: its share of ``max_examples`` (default: the
    profile's)."""
    n = max_examples if max_examples is not None else profiles.get(profile).examples
    return max(1, math.ceil(n * CHECKS[check].scale))


def group_settings(
    group: Group,
    profile: str,
    max_examples: int | None,
    shrink: bool = True,
    database: Any = None,
    part: Part | None = None,
) -> settings:
    """The Hypothesis settings of one group (or of one part of it): the profile's, with the
    check's share of examples (the part's draws), and ``database``."""
    profiles.register()
    check = CHECKS[group.check]
    base = settings.get_profile(profile)
    keep = check.shrink and shrink
    phases = tuple(p for p in base.phases if keep or p != Phase.shrink)
    n = part.draws if part is not None and part.draws is not None else None
    return settings(
        base,
        max_examples=n or draws(group.check, profile, max_examples),
        phases=phases,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        database=database,
    )


def _size(case) -> int:
    """How large a case is, to pick the simplest of several failing hand-built ones."""
    return case.T * (case.in_dim + case.out_dim) + case.L * case.R + case.bs


class _Attempt:
    """One Hypothesis run of a group's test, and what it saw."""

    def __init__(self) -> None:
        self.generated = False
        self.failed = False
        self.explicit_failure: CaseResult | None = None
        self.last: CaseResult | None = None
        self.flaky = False
        self.error: str | None = None
        self.passed = False


def run_group(
    group: Group,
    backend_cls: type[BaseLoRABackend],
    device: torch.device,
    options: RunOptions,
) -> GroupRecord:
    """Run ``group`` and return its record (see the module docstring).

    Hand-built corner cases run first and are not shrunk (Hypothesis shrinks only what it
    drew).  So when one of them fails and the check shrinks, the group's random draws run once
    more without them: a drawn failure is shrunk and reported; if none fails, the simplest
    failing corner case is.
    """
    rec = GroupRecord.of(group)
    part = options.parts.get(group.id)
    if part is not None and part.parts > 1:
        rec.part = f"{part.part}/{part.parts}"
    if group.skip is not None:
        rec.outcome, rec.skip_reason = "skip", group.skip
        return rec
    check = CHECKS[group.check]
    ctx = GroupContext(
        group.op,
        group.dtype,
        options.op_dtypes.get(group.op) or [group.dtype],
        profiles.get(options.profile),
        backend_cls.capabilities,
        device.type,
    )
    counts: Counter[str] = Counter()

    def run_one(example: Example) -> CaseResult:
        if options.runner is not None:
            return options.runner(group.check, example)
        try:
            with deadline(options.deadline):
                result = check.run(backend_cls, example, device)
        except ExampleTimeout as exc:
            result = CaseResult(example.case, check=group.check, params=example.params)
            result.fail(f"timed out: {exc}", "timeout")
            return result
        except Exception:
            # the harness's own CUDA calls raise once a kernel broke the context: that is the
            # example's crash, not the harness's
            broken = broken_context(device)
            if broken is None:
                raise
            result = CaseResult(example.case, check=group.check, params=example.params)
        else:
            broken = broken_context(device)
        if broken is not None:
            result.fail(f"the CUDA context is broken after this example ({broken}): nothing "
                        "after it can run on the GPU in this process (--isolate replaces "
                        "the worker)", "crash")  # fmt: skip
        return result

    def attempt(explicit: list[Example]) -> _Attempt:
        state = _Attempt()

        def body(example: Example) -> None:
            final = current_build_context().is_final
            if not final:
                state.generated = True
            replaying = final and state.generated
            if state.failed and not final:
                rec.shrink_steps += 1
                phase = "shrinking"
            elif not replaying:
                rec.examples += 1
                phase = "generating"
                for name in corners.classify(example.case):
                    counts[name] += 1
                    event(name)
                space.merge(rec.space, (check.reach or reached)(example))
            else:
                phase = "replaying"
            if options.progress is not None:
                options.progress(rec, phase, example)
            result = run_one(example)
            if result.ok and result.below_signal_floor and phase == "generating":
                rec.below_signal_floor += 1
            rec.worst_ratio = worse(rec.worst_ratio, result.worst_ratio)
            ratio = result.worst_ratio
            if ratio is not None and math.isfinite(ratio) and ratio > 0 and not replaying:
                target(min(ratio, 1e9), label="error/tolerance")
            if result.ok:
                return
            if result.kind in ("crash", "timeout"):
                state.last = result
                raise GroupAborted
            if not state.generated:  # a hand-built case: keep the simplest that fails
                best = state.explicit_failure
                if best is None or _size(result.case) < _size(best.case):
                    state.explicit_failure = result
            else:
                state.failed = True
                state.last = result
            raise AssertionError("; ".join(result.failures))

        test = given(example=check.strategy(ctx))(body)
        for e in reversed(explicit):
            test = explicit_example(example=e)(test)
        test = seed(part_seed(options.run_seed, group.id, part.part if part else 1))(test)
        test = group_settings(
            group, options.profile, options.max_examples, options.shrink, options.database, part
        )(test)
        if options.database is not None and options.database_key is not None:
            # Hypothesis keys a test's examples by its function, the same for every group
            test._hypothesis_internal_database_key = options.database_key(group.id)
        try:
            test()
            state.passed = True
        except (GroupAborted, AssertionError):
            pass
        except Flaky:
            state.flaky = True
        except HypothesisException as exc:
            state.error = f"{type(exc).__name__}: {exc}"
        return state

    started = time.monotonic()
    try:
        explicit, rec.outside_domain = check.hand_built(ctx)
        first = attempt(explicit if part is None else part.share(explicit))
        chosen = first.last or first.explicit_failure
        if (
            first.last is None
            and first.explicit_failure is not None
            and check.shrink
            and options.shrink
        ):
            second = attempt([])
            if second.last is not None:
                chosen, first.flaky = second.last, second.flaky
    except KeyboardInterrupt as exc:
        # the run stops here; the caller may still report what this group ran
        rec.outcome = "interrupted"
        exc.lora_group = rec  # type: ignore[attr-defined]
        raise
    finally:
        rec.seconds = time.monotonic() - started
        rec.corners = dict(counts)
    if first.error is not None and chosen is None:
        rec.outcome, rec.error = "error", first.error
    elif chosen is None:
        rec.outcome = "pass" if first.passed else "error"
        if not first.passed:
            rec.error = "the group ended without a verdict"
    else:
        rec.outcome = chosen.kind if chosen.kind in ("crash", "timeout") else "fail"
        alone = None
        if options.fresh_replay is not None and chosen.kind == "fail" and not first.flaky:
            alone = options.fresh_replay(group.check, Example(chosen.case, chosen.params))
        path = save_failure(options.failures_dir, chosen, options.backend_name, group, alone)
        rec.failure = {
            "kind": chosen.kind,
            "messages": chosen.failures,
            "case": chosen.case.to_json(),
            "params": chosen.params,
            "file": str(path) if path is not None else None,
            "flaky": first.flaky,
            "alone": alone,
        }
    return rec


def run_plan(
    backend_cls: type[BaseLoRABackend],
    backend_name: str,
    *,
    profile: str = "ci",
    device: torch.device | None = None,
    ops: tuple[str, ...] | None = None,
    dtypes: tuple[str, ...] | None = None,
    checks: tuple[str, ...] | None = None,
    stop_on_failure: bool = False,
    failures_dir: Path = Path(DEFAULTS["failures_dir"]),
    runner: Callable[[str, Example], CaseResult] | None = None,
    run_seed: int = 0,
    shrink: bool = True,
    max_examples: int | None = None,
) -> list[GroupRecord]:
    """The whole plan in this process, group after group (the meta-tests use it; the CLI and
    pytest run the same groups through the plugin).  Stops at the first failing group when
    ``stop_on_failure``."""
    from conformance.names import CHECK_NAMES, DTYPE_NAMES, GROUP_OPS
    from conformance.plan import build_plan, op_dtypes

    device = device or torch.device("cpu")
    dtypes = dtypes or DTYPE_NAMES
    caps = backend_cls.capabilities
    plan = build_plan(caps, device.type, ops or GROUP_OPS, dtypes, checks or CHECK_NAMES)
    options = RunOptions(
        backend_name=backend_name,
        profile=profile,
        run_seed=run_seed,
        failures_dir=failures_dir,
        op_dtypes=op_dtypes(plan, caps, dtypes),
        runner=runner,
        shrink=shrink,
        max_examples=max_examples,
    )
    records = []
    for group in plan:
        rec = run_group(group, backend_cls, device, options)
        records.append(rec)
        if stop_on_failure and rec.outcome not in ("pass", "skip"):
            break
    return records
