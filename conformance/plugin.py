"""The pytest plugin (entry point ``pytest11``) that points the conformance suite at a backend.

Run the suite on a backend::

    pytest --pyargs conformance.suite --lora-backend triton
    LORA_CONFORMANCE_BACKEND=mypkg.lora:MyBackend pytest --pyargs conformance.suite

The plugin is inert for test runs that do not collect ``conformance.suite``: it only adds
options, a header line when a backend is named, and the ``--skips-file``/``--xfails-file``
handling.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from conformance import profiles
from conformance.replay import save_failure
from lora_ref import BaseLoRABackend, get_backend_from_name

BACKEND_ENV = "LORA_CONFORMANCE_BACKEND"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-conformance", "multi-LoRA backend conformance")
    group.addoption(
        "--lora-backend",
        default=None,
        help="backend under test: a built-in, package.module:Class, or an entry point "
        f"(env {BACKEND_ENV})",
    )
    group.addoption(
        "--lora-device",
        default=None,
        choices=("cpu", "cuda"),
        help="device to test on (default: cuda when available and supported, else cpu)",
    )
    group.addoption(
        "--lora-profile",
        default=None,
        choices=profiles.PROFILES,
        help="size caps and Hypothesis profile: ci, dev or thorough (env LORA_CONFORMANCE_PROFILE)",
    )
    group.addoption(
        "--lora-max-examples",
        type=int,
        default=None,
        help="override the profile's examples per test",
    )
    group.addoption(
        "--lora-stats-file",
        default=None,
        help="append one JSON line per example (test, passed, err/tol): survives an interrupted "
        "campaign; summarise with `lora-conformance stats FILE`",
    )
    group.addoption(
        "--skips-file", default=None, help="file of test ids (globs) to skip, one per line"
    )
    group.addoption("--xfails-file", default=None, help="file of test ids (globs) expected to fail")
    group.addoption(
        "--lora-failures-dir",
        default="conformance-failures",
        help="where minimal failing cases are saved for `lora-conformance replay`",
    )


def _backend_name(config: pytest.Config) -> str | None:
    return config.getoption("--lora-backend") or os.environ.get(BACKEND_ENV)


def _profile(config: pytest.Config) -> str:
    return config.getoption("--lora-profile") or profiles.default_profile()


def pick_device(backend_cls: type[BaseLoRABackend], requested: str | None) -> torch.device:
    """The requested device, else CUDA when present and supported, else the CPU.

    Under pytest-xdist each worker takes its own GPU (``gw3`` takes ``cuda:3 % count``), so a
    campaign with ``-n <number of GPUs>`` runs one worker per visible GPU.
    """
    wants_cuda = requested == "cuda" or (
        requested is None
        and torch.cuda.is_available()
        and "cuda" in backend_cls.capabilities.devices
    )
    if not wants_cuda:
        return torch.device(requested or "cpu")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and torch.cuda.device_count() > 1:
        index = int(worker[2:]) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cuda")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lora_conformance: a test of the conformance suite")
    if _backend_name(config) or config.getoption("--lora-profile"):
        settings.load_profile(_profile(config))
    n = config.getoption("--lora-max-examples")
    if n:
        settings.register_profile(
            "lora-custom", settings.get_profile(_profile(config)), max_examples=n
        )
        settings.load_profile("lora-custom")


def pytest_report_header(config: pytest.Config) -> list[str]:
    name = _backend_name(config)
    if not name:
        return []
    import triton

    try:
        cls = get_backend_from_name(name)
    except ValueError as exc:
        return [f"lora-conformance: backend {name!r} NOT LOADED: {exc}"]
    device = pick_device(cls, config.getoption("--lora-device"))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return [
        f"lora-conformance: backend {name} = {cls.__module__}:{cls.__qualname__}, "
        f"version {cls().version}",
        f"lora-conformance: device {device}{gpu}, torch {torch.__version__}, "
        f"triton {triton.__version__}, "
        f"profile {_profile(config)}",
    ]


def _read_ids(path: str | None) -> list[str]:
    if not path:
        return []
    lines = Path(path).read_text().splitlines()
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


@pytest.fixture(scope="session")
def lora_backend(pytestconfig: pytest.Config) -> type[BaseLoRABackend]:
    """The backend class under test; the suite errors loudly when none is named."""
    name = _backend_name(pytestconfig)
    if not name:
        raise pytest.UsageError(
            f"conformance suite: name the backend with --lora-backend NAME or {BACKEND_ENV}"
        )
    try:
        return get_backend_from_name(name)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


@pytest.fixture(scope="session")
def lora_device(pytestconfig: pytest.Config, lora_backend: type[BaseLoRABackend]) -> torch.device:
    return pick_device(lora_backend, pytestconfig.getoption("--lora-device"))


@pytest.fixture(scope="session")
def lora_limits(pytestconfig: pytest.Config):
    return profiles.limits_for(_profile(pytestconfig))


STATS_KEY = "lora_conformance_stats"


def _stats(config: pytest.Config) -> dict[str, list[float]]:
    if not hasattr(config, "_lora_stats"):
        config._lora_stats = {}  # type: ignore[attr-defined]
    return config._lora_stats  # type: ignore[attr-defined]


def _merge(stats: dict[str, list[float]], key: str, examples: float, worst: float) -> None:
    entry = stats.setdefault(key, [0, 0.0])
    entry[0] += examples
    entry[1] = max(entry[1], worst)


@pytest.fixture
def lora_stats(request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """Call with a CaseResult to count it in the session's per-(op, dtype) summary."""
    key = request.node.name
    stats_file = pytestconfig.getoption("--lora-stats-file")

    def record(result) -> None:
        worst = result.worst_ratio if result.worst_ratio != float("inf") else 0.0
        _merge(_stats(pytestconfig), key, 1, worst)
        if stats_file:
            line = json.dumps({"test": key, "ok": result.ok, "ratio": worst})
            with open(stats_file, "a") as f:  # one short write per line: safe across xdist workers
                f.write(line + "\n")

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[STATS_KEY] = json.dumps(_stats(session.config))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without xdist
def pytest_testnodedown(node, error) -> None:
    data = getattr(node, "workeroutput", {}).get(STATS_KEY)
    if data:
        for key, (examples, worst) in json.loads(data).items():
            _merge(_stats(node.config), key, examples, worst)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    stats = _stats(config)
    if not stats:
        return
    tr = terminalreporter
    tr.section("lora-conformance: examples and worst error/tolerance")
    for key in sorted(stats):
        examples, worst = stats[key]
        tr.write_line(f"{key:<60} {int(examples):>7} examples   worst err/tol {worst:.3f}")
    total = sum(int(v[0]) for v in stats.values())
    tr.write_line(
        f"{'all':<60} {total:>7} examples   worst err/tol {max(v[1] for v in stats.values()):.3f}"
    )


@pytest.fixture
def lora_report(request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """Call with a failing CaseResult: saves the case and returns the assertion message."""

    backend_name = _backend_name(pytestconfig) or "?"

    def report(result) -> str:
        folder = Path(pytestconfig.getoption("--lora-failures-dir"))
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request.node.name)
        path = save_failure(folder / f"{safe}.json", result, backend_name)
        lines = [
            *result.failures,
            f"case: {result.case.describe()}",
            f"replay: lora-conformance replay {path}",
        ]
        return "\n".join(lines)

    return report


# --- pytest-benchmark -----------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the GPU (or its absence), driver, CUDA, torch and Triton with every benchmark run."""
    from importlib.metadata import version

    machine_info["torch"] = torch.__version__
    machine_info["triton"] = version("triton")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine_info["gpu"] = props.name
        machine_info["gpu_sms"] = props.multi_processor_count
        machine_info["cuda"] = torch.version.cuda
        try:
            import subprocess

            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
            )
            machine_info["driver"] = out.stdout.split("\n")[0].strip()
        except OSError:
            machine_info["driver"] = "?"
    else:
        machine_info["gpu"] = "none (CPU smoke mode)"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_compare_machine_info(
    config, benchmarksession, machine_info, compared_benchmark
):
    """Timings from different GPUs say nothing about a regression: refuse to compare them."""
    theirs = compared_benchmark.get("machine_info", {}).get("gpu")
    ours = machine_info.get("gpu")
    if theirs is not None and theirs != ours:
        raise pytest.UsageError(
            f"--benchmark-compare: the baseline was taken on {theirs!r}, this run is on {ours!r}; "
            "keep one baseline folder per card (--benchmark-storage=.benchmarks/<card>)"
        )
