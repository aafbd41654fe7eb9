"""One run of the conformance suite inside pytest: the backend, device, plan and options, the
campaign shard, and the JSON report, written after every group (sealed under the CLI).

:class:`Run` is registered as a plugin by :mod:`conformance.plugin`, so its ``pytest_*``
methods are hooks: collection (this shard's groups), each group's record (from xdist workers
too), the final status, and the terminal summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from conformance import profiles, settings
from conformance.failures import write_atomic
from conformance.process import set_dumpable
from conformance.report import (
    SCHEMA,
    corner_line,
    group_cells,
    group_record,
    now,
    ratio_to_json,
    summarize,
    write_report,
)

BACKEND_ENV = "LORA_CONFORMANCE_BACKEND"


def backend_name(config: pytest.Config) -> str | None:
    """The backend a run names: ``--lora-backend``, else ``LORA_CONFORMANCE_BACKEND``."""
    return config.getoption("--lora-backend") or os.environ.get(BACKEND_ENV)


def _read_seal_key(fd: int | None) -> bytes | None:
    """The secret the CLI wrote into the pipe ``fd`` (closed after), or None."""
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            key = f.read(4096)
    except OSError as exc:
        raise pytest.UsageError(f"--lora-seal-fd: cannot read {fd}: {exc}") from None
    if len(key) < 16:
        raise pytest.UsageError(f"--lora-seal-fd: expected a secret of 16 bytes or more, got "
                                f"{len(key)}")  # fmt: skip
    return key


def record_dict(rec) -> dict[str, Any]:
    """A group record as the report holds it (``worst_ratio`` in its JSON form)."""
    data = asdict(rec)
    data["worst_ratio"] = ratio_to_json(rec.worst_ratio)
    return data


def record_json(rec) -> str:
    return json.dumps(record_dict(rec))


class Run:
    """One run: the backend, device, plan and options, and the report being written.  It is
    registered as a plugin, so its ``pytest_*`` methods are hooks."""

    def __init__(self, config: pytest.Config, seed: int, profile: str) -> None:
        self.config = config
        self.seed = seed
        self.profile = profile
        self.name = backend_name(config)
        self.report_path = config.getoption("--lora-report")
        self.progress_path = config.getoption("--lora-progress")
        self.is_worker = hasattr(config, "workerinput")
        self.session: pytest.Session | None = None
        self.key = None if self.is_worker else _read_seal_key(config.getoption("--lora-seal-fd"))
        if self.key is not None and config.getoption("--lora-isolate"):
            # the backend's worker then cannot read this process's memory (the key) or open
            # its file descriptors
            set_dumpable(False)
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "started": now(),
            "finished": None,
            "harness": None,
            "backend": {"name": self.name},
            "environment": {},
            "settings": {},
            "groups": [],
            "error": None,
        }
        self.loaded = False
        self.load_error: pytest.UsageError | None = None  # raised again by every later load()
        self.backend_cls: Any = None
        self.device: Any = None
        self.plan: list = []
        self.plan_all: list = []
        self.records: dict[str, dict[str, Any]] = {}
        self.runner = None
        self.database: Any = None
        self.database_key: Any = None
        self.example_db: str | None = None
        self.parts: dict[str, Any] = {}  # this shard's part of each group it runs
        self.campaign: dict[str, Any] | None = None

    def load(self) -> None:
        """Resolve the backend and build the plan (once, at collection)."""
        if self.loaded:
            if self.load_error is not None:
                raise self.load_error
            return
        self.loaded = True
        from conformance.checks import CHECKS
        from conformance.engine import draws
        from conformance.machine import describe_backend, environment, pick_device
        from conformance.plan import build_plan
        from conformance.versions import harness_version
        from lora_ref import get_backend_from_name
        from lora_ref.registry import BackendLoadError, BackendNotFoundError

        config = self.config
        self.doc["harness"] = harness_version()
        try:
            cls = get_backend_from_name(self.name)
        except BackendNotFoundError as exc:
            self._stop("usage_error", str(exc), exc)
        except BackendLoadError as exc:
            self._stop("backend_error", str(exc), exc)
        caps = cls.capabilities
        try:
            version = str(cls().version)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._stop(
                "backend_error",
                f"backend {self.name!r}: its constructor or version raised "
                f"{type(exc).__name__}: {str(exc).strip()[:300]}",
                exc,
            )
        from conformance.checks.guards import restore_subnormals

        flushed = restore_subnormals()
        if flushed is not None:
            self._stop("backend_error", f"backend {self.name!r}: its constructor or version: "
                       f"{flushed}", flushed)  # fmt: skip
        self.backend_cls = cls
        self.device = pick_device(cls, config.getoption("--lora-device"))
        self.plan = self.plan_all = build_plan(
            caps,
            self.device.type,
            config.getoption("--lora-ops"),
            config.getoption("--lora-dtypes"),
            config.getoption("--lora-checks"),
        )
        p = profiles.get(self.profile)
        n = config.getoption("--lora-max-examples")
        self._campaign(caps, version)
        self.doc.update(
            backend=describe_backend(cls, self.name, version),
            environment=environment(self.device),
            settings={
                "profile": self.profile,
                "seed": self.seed,
                "max_examples": {k: draws(k, self.profile, n) for k in CHECKS},
                "limits": vars(p.limits),
                "deadline": config.getoption("--lora-deadline") or None,
                "isolate": config.getoption("--lora-isolate"),
                "ops": list(config.getoption("--lora-ops")),
                "dtypes": list(config.getoption("--lora-dtypes")),
                "checks": list(config.getoption("--lora-checks")),
                "example_db": self.example_db,
                "shard": self.campaign["shard"] if self.campaign else None,
                "domain": caps.shapes.describe() or None,
            },
        )
        if self.campaign is not None:
            self.doc["campaign"] = self.campaign
        self.write()

    def _campaign(self, caps, version: str) -> None:
        """Open the example database; with ``--lora-shard``, this shard's part of the plan."""
        from conformance import campaign
        from conformance.checks import CHECKS, GroupContext
        from conformance.engine import draws

        config = self.config
        url = config.getoption("--lora-example-db")
        self.example_db = campaign.describe_url(url) if url is not None else None
        shard_text = config.getoption("--lora-shard")
        try:
            shard = campaign.parse_shard(shard_text) if shard_text is not None else None
            times_path = config.getoption("--lora-shard-times")
            times = campaign.load_times(times_path) if times_path else None
            if url is not None or self.profile != "ci":
                self.database = campaign.open_database(url)
        except campaign.CampaignError as exc:
            self._stop("usage_error", settings.renamed(str(exc), "pytest"), exc)
        harness, name = self.doc["harness"], self.name
        self.database_key = lambda gid: campaign.database_key(
            harness, name, version, self.profile, gid
        )
        if shard is None:
            return
        ops = self.op_dtypes()
        p = profiles.get(self.profile)
        runnable = []
        for g in self.plan_all:
            if g.skip is not None:
                continue
            ctx = GroupContext(g.op, g.dtype, ops.get(g.op) or [g.dtype], p, caps,
                               self.device.type)  # fmt: skip
            explicit = len(CHECKS[g.check].hand_built(ctx)[0])
            runnable.append(
                (
                    g.id,
                    explicit,
                    draws(g.check, self.profile, config.getoption("--lora-max-examples")),
                )
            )
        assignment = campaign.assign(runnable, shard.count, times)
        self.parts = {
            gid: part for gid, parts in assignment.items() for part in parts
            if part.shard == shard.index
        }  # fmt: skip
        self.campaign = campaign.campaign_record(
            shard, self.seed, [g.id for g in self.plan_all], assignment, url
        )

    def mine(self, gid: str) -> bool:
        """Whether this shard runs group ``gid`` (every group, without ``--lora-shard``; a
        skipped group is reported by shard 1 only)."""
        if self.campaign is None:
            return True
        if gid in self.parts:
            return True
        return gid not in self.campaign["assignment"] and self.campaign["index"] == 1

    def _stop(self, status: str, message: str, exc: BaseException) -> None:
        self.doc.update(status=status, error=message, finished=now())
        self.doc["traceback"] = "".join(traceback.format_exception(exc))
        self.write()
        self.load_error = pytest.UsageError(message)
        raise self.load_error from None

    def write(self) -> None:
        if self.report_path and not self.is_worker:
            self.doc["plan"] = [g.id for g in self.plan]
            self.doc["groups"] = [self.records[g.id] for g in self.plan if g.id in self.records]
            write_report(self.report_path, self.doc, self.key)

    def progress(self, rec, phase: str, example) -> None:
        """The CLI's view of the example in flight (its case is saved if the process dies)."""
        if not self.progress_path:
            return
        doc = {
            "group": rec.id,
            "phase": phase,
            "examples": rec.examples,
            "shrink_steps": rec.shrink_steps,
            "time": time.time(),
            "pid": os.getpid(),
            "check": rec.check,
            "op": rec.op,
            "dtype": rec.dtype,
            "case": example.case.to_json() if example is not None else None,
            "params": example.params if example is not None else None,
        }
        write_atomic(Path(self.progress_path), json.dumps(doc))

    def op_dtypes(self) -> dict[str, list[str]]:
        from conformance.plan import op_dtypes

        dtypes = self.config.getoption("--lora-dtypes")
        return op_dtypes(self.plan_all, self.backend_cls.capabilities, dtypes)

    # --- hooks ------------------------------------------------------------------------------

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list) -> None:
        """Deselect the groups other shards run."""
        if not self.loaded or self.campaign is None:
            return
        drop = [i for i in items if hasattr(i, "callspec") and not self.mine(i.callspec.id)]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = [i for i in items if i not in drop]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.loaded:
            return
        kept = {item.callspec.id for item in session.items if hasattr(item, "callspec")}
        self.plan = [g for g in self.plan_all if g.id in kept]
        self.write()

    def record(self, rec: dict[str, Any]) -> None:
        """Put one group's record (``record_dict``) in the report and write it."""
        self.records[rec["id"]] = rec
        self.write()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each group's record (from workers too, under xdist) into the report."""
        for key, value in report.user_properties:
            if key == "lora_group":
                self.record(json.loads(value))
                return
        if report.skipped and report.when == "setup" and report.nodeid.endswith("]"):
            gid = report.nodeid.rsplit("[", 1)[1][:-1]
            group = next((g for g in self.plan_all if g.id == gid), None)
            if group is not None:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
                self.records[gid] = group_record(gid, "skip", skip_reason=str(reason))
                self.write()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Under the CLI, the report is final here: run the exit handlers (a crash in one is
        the process's crash, which the CLI sees), then exit with pytest's exit status, so no
        thread a backend left running can hold the process open."""
        if self.key is None or self.session is None:
            return
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(self.session.exitstatus))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.runner is not None:
            self.runner.close()
        if self.is_worker or not self.loaded or self.doc["status"] != "running":
            return
        for g in self.plan:
            if g.id not in self.records:
                self.records[g.id] = group_record(
                    g.id, "skip" if g.skip else "not run", skip_reason=g.skip
                )
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        self.doc["status"] = "interrupted" if interrupted else "complete"
        self.doc["finished"] = now()
        self.write()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.records:
            return
        tr = terminalreporter
        tr.section("lora-conformance")
        for g in self.plan:
            r = self.records.get(g.id)
            if r is not None:
                gid, outcome, examples, steps, worst, _ = group_cells(r)
                tr.write_line(f"{gid:<32} {outcome:<36.36} {examples:>6} examples "
                              f"{steps:>5} shrink steps  worst err/tol {worst}")  # fmt: skip
        doc = {**self.doc, "groups": list(self.records.values())}
        summarize(doc)
        for op, entry in doc["coverage"].items():
            tr.write_line(corner_line(op, entry))
        total = sum(r["examples"] for r in self.records.values())
        tr.write_line(
            f"profile {self.profile}, seed {self.seed} (--hypothesis-seed {self.seed} repeats "
            f"this run); {total} examples in all"
        )
