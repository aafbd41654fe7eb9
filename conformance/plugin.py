"""The pytest plugin (entry point ``pytest11``): points the conformance suite at a backend and
reports what the run found.

Run the suite on a backend::

    pytest --pyargs conformance.suite --lora-backend triton
    LORA_CONFORMANCE_BACKEND=mypkg.lora:MyBackend pytest --pyargs conformance.suite \\
        --hypothesis-profile dev --hypothesis-seed 7 --junitxml out.xml -n 4

The suite is one test, ``test_conformance[<check>-<op>-<dtype>]``, per group of the plan
(:mod:`conformance.plan`); ``lora-conformance check`` runs exactly this.  For test runs that do
not name a backend the plugin is inert: it adds options, registers the profiles ``ci``, ``dev``
and ``thorough`` with Hypothesis, and handles ``--skips-file``/``--xfails-file``.
"""

from __future__ import annotations

import fnmatch
import secrets
from pathlib import Path

import pytest

from conformance import profiles, settings
from conformance.session import BACKEND_ENV, Run, backend_name, record_dict, record_json
from lora_ref.runtime import use_interpreter_without_gpu

# Triton reads TRITON_INTERPRET once, when it is first imported, and any test module may import
# it (torch._inductor does): so the choice is made when pytest loads this plugin, first
use_interpreter_without_gpu()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-conformance", "multi-LoRA backend conformance")
    group.addoption(
        "--lora-backend",
        default=None,
        help=f"backend under test: a built-in, package.module:Class or an entry point "
        f"(env {BACKEND_ENV})",
    )
    settings.add_options(group)
    group.addoption(
        "--lora-report", default=None, help="write the JSON report here, updated after each group"
    )
    group.addoption("--lora-progress", default=None, help="(internal) the CLI's progress file")
    group.addoption(
        "--lora-seal-fd", type=int, default=None,
        help="(internal) a pipe holding the CLI's secret: the report is sealed with it, and the "
        "process exits as soon as the report is final",
    )  # fmt: skip
    group.addoption(
        "--skips-file", default=None, help="file of test ids (globs) to skip, one per line"
    )
    group.addoption("--xfails-file", default=None, help="file of test ids (globs) expected to fail")


def _profile(config: pytest.Config) -> str:
    """The run's profile: ``--hypothesis-profile``, else ``LORA_CONFORMANCE_PROFILE``, else ci."""
    try:
        name = config.getoption("hypothesis_profile", None) or profiles.profile_from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    if name not in profiles.PROFILES:
        raise pytest.UsageError(
            f"--hypothesis-profile: the conformance suite runs under one of "
            f"{', '.join(profiles.NAMES)}, got {name!r}"
        )
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the profiles before Hypothesis' own plugin loads ``--hypothesis-profile``; with
    a backend named and no profile asked for, load ``LORA_CONFORMANCE_PROFILE`` (or ``ci``)."""
    config.addinivalue_line("markers", "lora_conformance: a test of the conformance suite")
    profiles.register()
    if not backend_name(config):
        return
    import hypothesis

    from lora_ref.runtime import use_interpreter_without_gpu

    profile = _profile(config)
    for option in settings.SETTINGS:
        if option.pytest is None:
            try:
                option.check(config.getoption(option.spelled("pytest")), "pytest")
            except settings.UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
    if not config.getoption("hypothesis_profile", None):
        hypothesis.settings.load_profile(profile)
    use_interpreter_without_gpu(config.getoption("--lora-device"))
    seed = config.getoption("hypothesis_seed", None)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "lora_seed" in workerinput:
        seed = workerinput["lora_seed"]
    from conformance import campaign

    try:
        campaign.require_seed(config.getoption("--lora-shard"), seed, profile, "--hypothesis-seed")
    except campaign.CampaignError as exc:
        raise pytest.UsageError(settings.renamed(str(exc), "pytest")) from None
    if seed is None:
        seed = 0 if profile == "ci" else secrets.randbelow(2**32)
    try:
        seed = int(str(seed), 0)
    except ValueError as exc:
        raise pytest.UsageError(f"--hypothesis-seed: expected an int, got {seed!r}") from exc
    run = Run(config, seed, profile)
    config._lora = run  # type: ignore[attr-defined]
    config.pluginmanager.register(run, "lora-conformance-run")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without xdist
def pytest_configure_node(node) -> None:
    run = getattr(node.config, "_lora", None)
    if run is not None:
        node.workerinput["lora_seed"] = run.seed


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = getattr(config, "_lora", None)
    if run is None:
        return []
    try:
        run.load()
    except pytest.UsageError as exc:
        return [f"lora-conformance: backend {run.name!r} NOT LOADED: {exc}"]
    b, env = run.doc["backend"], run.doc["environment"]
    gpu = f" ({env['gpu']})" if env.get("gpu") else ""
    return [
        f"lora-conformance: backend {b['name']} = {b['target']}, version {b['version']}",
        f"lora-conformance: device {env['device']}{gpu}, torch {env['torch']}, "
        f"triton {env['triton']}, profile {run.profile}, seed {run.seed}",
    ]


def _run_of(config: pytest.Config) -> Run:
    run = getattr(config, "_lora", None)
    if run is None:
        raise pytest.UsageError(
            f"conformance suite: name the backend with --lora-backend NAME or {BACKEND_ENV}"
        )
    return run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lora_group" not in metafunc.fixturenames:
        return
    run = _run_of(metafunc.config)
    run.load()
    metafunc.parametrize("lora_group", run.plan_all, ids=[g.id for g in run.plan_all])


def _read_ids(path: str | None) -> list[str]:
    if not path:
        return []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise pytest.UsageError(f"{path}: cannot read it: {exc}") from exc
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def _listed(nodeid: str, patterns: list[str]) -> bool:
    """A pattern matches as a substring of the test id, or as a glob where ``*`` and ``?`` are
    wildcards and brackets are literal (test ids carry ``[params]``)."""
    return any(p in nodeid or fnmatch.fnmatchcase(nodeid, p.replace("[", "[[]")) for p in patterns)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = _read_ids(config.getoption("--skips-file"))
    xfails = _read_ids(config.getoption("--xfails-file"))
    for item in items:
        if _listed(item.nodeid, skips):
            item.add_marker(pytest.mark.skip(reason="listed in --skips-file"))
        elif _listed(item.nodeid, xfails):
            item.add_marker(pytest.mark.xfail(reason="listed in --xfails-file", strict=False))


@pytest.fixture
def lora_run(pytestconfig: pytest.Config, request: pytest.FixtureRequest):
    """Run one group of the plan through the engine; returns its record."""
    from conformance.engine import RunOptions, run_group

    run = _run_of(pytestconfig)
    run.load()

    def go(group):
        deadline = pytestconfig.getoption("--lora-deadline") or None
        if pytestconfig.getoption("--lora-isolate") and run.runner is None:
            from conformance.isolate import IsolatedBackend

            run.runner = IsolatedBackend(run.name, str(run.device), deadline)
        fresh = None
        if not pytestconfig.getoption("--lora-no-fresh-replay"):
            from conformance.isolate import replay_alone

            fresh = replay_alone(run.name, str(run.device), deadline)
        options = RunOptions(
            backend_name=run.name,
            profile=run.profile,
            run_seed=run.seed,
            max_examples=pytestconfig.getoption("--lora-max-examples"),
            deadline=deadline,
            failures_dir=Path(pytestconfig.getoption("--lora-failures-dir")),
            op_dtypes=run.op_dtypes(),
            runner=run.runner.run if run.runner is not None else None,
            progress=run.progress,
            database=run.database,
            database_key=run.database_key,
            parts=run.parts,
            fresh_replay=fresh,
        )
        try:
            rec = run_group(group, run.backend_cls, run.device, options)
        except KeyboardInterrupt as exc:
            # pytest reports no item of an interrupted session: keep the group's partial record
            # (on the controller; an xdist worker's is lost with the worker)
            partial = getattr(exc, "lora_group", None)
            if partial is not None:
                run.record(record_dict(partial))
            raise
        request.node.user_properties.append(("lora_group", record_json(rec)))
        return rec

    return go
