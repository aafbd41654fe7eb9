"""Campaigns over many runners: a shared Hypothesis example database, shards, merged reports.

* **The example database.**  ``--example-db URL`` names a database every runner of a campaign
  shares (:func:`open_database`): a directory, ``redis://host:port/db`` (Hypothesis'
  ``RedisExampleDatabase``, the ``hypothesis[redis]`` extra), or either behind ``readonly:``
  (Hypothesis' ``ReadOnlyDatabase``).  Every run also keeps the local directory database
  (:data:`LOCAL_DB`); the two are read and written together through Hypothesis'
  ``MultiplexedDatabase``.  Keys are namespaced (:func:`database_key`): harness version, backend
  name and version, profile, group.  So a failure one runner saves is the first drawn example
  every other runner of the same backend tries (after the hand-built cases, which every run
  runs anyway).
* **Shards.**  ``--shard i/n`` (``i`` from 1 to ``n``) runs one share of the plan
  (:func:`assign`): groups are balanced by their time, recorded in an earlier report
  (``--shard-times``) or estimated from their example counts; a group longer than one shard's
  share is split into parts, each running its share of the hand-built cases and drawing its
  share of the examples with a seed of its own.  Every shard computes the same assignment from
  the same plan, and its report carries it, so :func:`merge` can tell a group no shard ran.
* **Merging.**  :func:`merge` makes one report of the shards' reports: a group's parts are
  summed, and the verdict is PASS only when every planned group ran somewhere and passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_DB = Path(".hypothesis") / "lora-conformance"
READONLY = "readonly:"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CAMPAIGN_SCHEMA = "lora-conformance-campaign/1"


class CampaignError(ValueError):
    """A bad ``--example-db``, ``--shard`` or ``--shard-times``, or reports that do not merge;
    the message names the argument as the command line spells it
    (:func:`conformance.settings.renamed` gives the plugin's and the API's spelling), what was
    expected and what came."""


def require_seed(shard: object, seed: object, profile: str, seed_option: str) -> None:
    """Outside ``ci``, the shards of a campaign must share one seed (``seed_option`` names the
    option that gives it)."""
    if shard is not None and seed is None and profile != "ci":
        raise CampaignError(
            f"{seed_option}: the shards of a campaign draw from one seed; pass the same seed to "
            f"every shard (got shard {shard!r} and no seed)"
        )


# --- the example database -----------------------------------------------------------------


def describe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for reports and messages)."""
    body = url[len(READONLY) :] if url.startswith(READONLY) else url
    prefix = url[: len(url) - len(body)]
    if body.startswith(REDIS_SCHEMES) and "@" in body:
        scheme, rest = body.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0] if ":" in cred else ""
        return f"{prefix}{scheme}://{user}:***@{host}"
    return url


def check_url(url: object) -> str:
    """``url`` if it is a well-formed ``--example-db`` value (no connection is made)."""
    if not isinstance(url, str) or not url.strip():
        raise CampaignError(
            f"--example-db: expected a directory, redis://host:port/db or readonly:<either>, "
            f"got {url!r}"
        )
    body = url[len(READONLY) :] if url.startswith(READONLY) else url
    if not body or body.startswith(READONLY):
        raise CampaignError(
            f"--example-db: expected a directory or redis URL after 'readonly:', got {url!r}"
        )
    if "://" in body and not body.startswith(REDIS_SCHEMES):
        scheme = body.split("://", 1)[0]
        raise CampaignError(
            f"--example-db: expected a directory or one of {', '.join(REDIS_SCHEMES)}, got the "
            f"scheme {scheme!r} in {describe_url(url)!r}"
        )
    return url


def open_shared(url: str):
    """The shared database ``url`` names, its reachability checked now: a ``CampaignError``
    naming ``--example-db`` before the first example when it cannot be used."""
    from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

    check_url(url)
    readonly = url.startswith(READONLY)
    body = url[len(READONLY) :] if readonly else url
    shown = describe_url(url)
    if body.startswith(REDIS_SCHEMES):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError as exc:
            raise CampaignError(
                f"--example-db: {shown} needs the redis client "
                "(pip install 'lora-conformance[campaign]' or 'hypothesis[redis]')"
            ) from exc
        client = redis.Redis.from_url(body, socket_connect_timeout=5, socket_timeout=30)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise CampaignError(
                f"--example-db: cannot reach {shown}: {type(exc).__name__}: {exc}"
            ) from exc
        db: Any = RedisExampleDatabase(client)
    else:
        path = Path(body)
        if readonly:
            if not path.is_dir():
                raise CampaignError(f"--example-db: {shown}: expected an existing folder")
        else:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CampaignError(
                    f"--example-db: cannot create the folder {body}: {exc.strerror or exc}"
                ) from exc
            if not os.access(path, os.W_OK):
                raise CampaignError(f"--example-db: the folder {body} is not writable")
        db = DirectoryBasedExampleDatabase(str(path))
    return ReadOnlyDatabase(db) if readonly else db


def open_database(url: str | None, local: Path | None = LOCAL_DB):
    """The database of one run: the local directory one (``local``; None: none), multiplexed
    with the shared one ``url`` names (None: none).  None when both are None."""
    from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase

    parts = []
    if local is not None:
        parts.append(DirectoryBasedExampleDatabase(str(local)))
    if url is not None:
        parts.append(open_shared(url))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiplexedDatabase(*parts)


def database_key(
    harness: str, backend: str, backend_version: str, profile: str, group_id: str
) -> bytes:
    """The key of one group's examples: what they were drawn for (the strategies of another
    harness version, backend or profile read the same choices as other cases)."""
    text = json.dumps(["lora-conformance", harness, backend, backend_version, profile, group_id])
    return hashlib.sha256(text.encode()).hexdigest().encode()


# --- shards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1 to ``count``) of a campaign."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: object) -> Shard:
    """``i/n`` with ``1 <= i <= n``."""
    if isinstance(text, Shard):
        return text
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise CampaignError(f"--shard: expected i/n (e.g. 1/4), got {text!r}") from None
    if count < 1 or not 1 <= index <= count:
        raise CampaignError(f"--shard: expected i/n with 1 <= i <= n, got {text!r}")
    return Shard(index, count)


@dataclass(frozen=True)
class Part:
    """Part ``part`` of ``parts`` of a group, on shard ``shard``: it runs every ``parts``-th
    hand-built case from the ``part``-th on, and draws ``draws`` examples (None: the group's own
    count)."""

    group: str
    shard: int
    part: int = 1
    parts: int = 1
    draws: int | None = None

    def share(self, explicit: list) -> list:
        """This part's share of the group's hand-built examples."""
        return explicit[self.part - 1 :: self.parts]

    def to_json(self) -> list[Any]:
        return [self.shard, self.part, self.parts, self.draws]


def part_seed(run_seed: int, group_id: str, part: int) -> int:
    """The seed of one group (``part`` 1) or of a later part of it: distinct per group and
    part, the same for the same run seed.  So a sharded campaign draws, in each whole group
    and in each group's first part, what one runner with the same seed draws."""
    text = f"{run_seed}/{group_id}" if part == 1 else f"{run_seed}/{group_id}/part{part}"
    return zlib.crc32(text.encode())


def load_times(path: str | Path) -> dict[str, float]:
    """Per group id, the seconds an earlier report (of any run, merged or not) recorded."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CampaignError(f"--shard-times: cannot read a report from {path}: {exc}") from None
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list):
        raise CampaignError(f"--shard-times: {path} is not a lora-conformance report (no groups)")
    times: dict[str, float] = {}
    for g in groups:
        if isinstance(g, dict) and isinstance(g.get("id"), str):
            s = g.get("seconds")
            if isinstance(s, (int, float)) and math.isfinite(s) and s >= 0:
                times[g["id"]] = times.get(g["id"], 0.0) + float(s)
    return times


def assign(
    groups: list[tuple[str, int, int]], count: int, times: dict[str, float] | None = None
) -> dict[str, list[Part]]:
    """Split a plan over ``count`` shards.

    ``groups``: per runnable group, ``(id, explicit, draws)``: its hand-built cases and drawn
    examples.  A group's cost is its recorded seconds (``times``) or, where none is recorded,
    its example count scaled by the recorded groups' seconds per example (1 when none is).
    A group costing more than one shard's share is split into ``k`` parts (at most ``count``)
    that run ``explicit / k`` hand-built cases and draw ``draws / k`` examples each (at least
    one); then parts go, costliest first,
    to the shard with the least cost so far (ties: the lowest index), never two parts of one
    group on one shard.  Deterministic: the same plan, count and times give the same result.
    """
    times = times or {}
    sizes = {gid: explicit + draws for gid, explicit, draws in groups}
    known = [(times[g], sizes[g]) for g in sizes if g in times and sizes[g] > 0]
    per_example = (sum(t for t, _ in known) / sum(n for _, n in known)) if known else 1.0
    per_example = per_example if per_example > 0 else 1.0
    cost = {gid: times.get(gid, per_example * sizes[gid]) for gid in sizes}
    share = sum(cost.values()) / count if count else 0.0
    pieces: list[tuple[float, str, int, int, int | None]] = []
    for gid, explicit, draws in groups:
        k = 1
        if count > 1 and share > 0 and cost[gid] > share:
            k = max(1, min(count, sizes[gid], math.ceil(cost[gid] / share)))
        if k == 1:
            pieces.append((cost[gid], gid, 1, 1, None))
            continue
        unit = cost[gid] / max(sizes[gid], 1)
        for p in range(1, k + 1):
            n = max(1, draws // k + (1 if p - 1 < draws % k else 0))
            mine = len(range(p - 1, explicit, k))
            pieces.append((unit * (n + mine), gid, p, k, n))
    pieces.sort(key=lambda x: (-x[0], x[1], x[2]))
    load = [0.0] * count
    used: dict[str, set[int]] = {}
    out: dict[str, list[Part]] = {gid: [] for gid, _, _ in groups}
    for c, gid, p, k, n in pieces:
        taken = used.setdefault(gid, set())
        free = [s for s in range(count) if s not in taken] or list(range(count))
        s = min(free, key=lambda i: (load[i], i))
        load[s] += c
        taken.add(s)
        out[gid].append(Part(gid, s + 1, p, k, n))
    for parts in out.values():
        parts.sort(key=lambda q: q.part)
    return out


def assignment_digest(assignment: dict[str, list[Part]]) -> str:
    """A short digest of an assignment: shards of one campaign must agree on it."""
    text = json.dumps({g: [p.to_json() for p in ps] for g, ps in sorted(assignment.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def campaign_record(
    shard: Shard,
    seed: int,
    plan: list[str],
    assignment: dict[str, list[Part]],
    example_db: str | None,
) -> dict[str, Any]:
    """What a shard's report says of its campaign (``merge`` reads it)."""
    return {
        "schema": CAMPAIGN_SCHEMA,
        "seed": seed,
        "shard": str(shard),
        "index": shard.index,
        "count": shard.count,
        "plan": list(plan),
        "assignment": {g: [p.to_json() for p in ps] for g, ps in assignment.items()},
        "digest": assignment_digest(assignment),
        "example_db": describe_url(example_db) if example_db else None,
    }


# --- merging --------------------------------------------------------------------------------

# the outcome of a group from its parts' outcomes: the first of these that any part has
_PRECEDENCE = ("crash", "timeout", "fail", "error", "interrupted", "not run", "pass", "skip")


def _combine(gid: str, records: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """One group's record from the records of its parts (``expected``: how many parts it has;
    a part no report holds counts as not run)."""
    from conformance import space
    from conformance.report import group_record, ratio_from_json, ratio_to_json

    if not records:
        return group_record(gid, "not run", error="no shard's report holds this group")
    outcomes = [r.get("outcome", "not run") for r in records]
    if len(records) < expected:
        outcomes.append("not run")
    outcome = next(o for o in _PRECEDENCE if o in outcomes)
    out = dict(records[0])
    worst: float | None = None
    corners: dict[str, int] = {}
    reached: dict[str, dict[str, int]] = {}
    for r in records:
        x = ratio_from_json(r.get("worst_ratio"))
        if x is not None:
            worst = x if worst is None or math.isnan(x) else (
                worst if math.isnan(worst) else max(worst, x))  # fmt: skip
        for name, n in (r.get("corners") or {}).items():
            corners[name] = corners.get(name, 0) + n
        space.merge(reached, r.get("space") or {})
    failing = [r for r in records if r.get("failure")]
    out.update(
        outcome=outcome,
        examples=sum(r.get("examples", 0) for r in records),
        shrink_steps=sum(r.get("shrink_steps", 0) for r in records),
        outside_domain=sum(r.get("outside_domain", 0) for r in records),
        below_signal_floor=sum(r.get("below_signal_floor", 0) for r in records),
        seconds=round(sum(r.get("seconds", 0.0) for r in records), 3),
        worst_ratio=ratio_to_json(worst),
        corners=corners,
        space=reached,
        failure=failing[0]["failure"] if failing else None,
        error=next((r["error"] for r in records if r.get("error")), None),
        parts=[r.get("part") for r in records if r.get("part")] or None,
    )
    if len(records) < expected and outcome == "not run":
        out["error"] = f"{expected - len(records)} of its {expected} parts ran on no shard"
    return out


def _read_report(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CampaignError(f"REPORT: cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("campaign"), dict):
        raise CampaignError(
            f"REPORT: {path} is not a shard's report (it has no 'campaign' record: run each "
            "shard with --shard i/n)"
        )
    return doc


def merge(paths: list[str | Path], shards: int | None = None) -> dict[str, Any]:
    """One report from the reports of a campaign's shards (see the module docstring).

    Every report must come from one campaign: the same backend, harness, profile, seed and
    assignment.  ``shards``: how many shards the campaign had (default: the reports' own
    count).  A shard whose report is missing, or did not finish, leaves its groups "not run"
    (and the merged status is not ``complete``), so its verdict is never PASS.
    """
    from conformance.report import SCHEMA, now

    if not paths:
        raise CampaignError("REPORT: expected one or more shard reports, got none")
    docs = [(str(p), _read_report(p)) for p in paths]
    first_path, first = docs[0]
    camp = first["campaign"]
    same = {
        "the backend": lambda d: (d.get("backend", {}).get("name"),
                                  d.get("backend", {}).get("version")),
        "the harness version": lambda d: d.get("harness"),
        "the profile": lambda d: d.get("settings", {}).get("profile"),
        "the campaign seed": lambda d: d["campaign"].get("seed"),
        "the shard count": lambda d: d["campaign"].get("count"),
        "the assignment of groups to shards": lambda d: d["campaign"].get("digest"),
    }  # fmt: skip
    for path, doc in docs[1:]:
        for what, get in same.items():
            if get(doc) != get(first):
                raise CampaignError(
                    f"REPORT: {path} is not of the same campaign as {first_path}: {what} "
                    f"differs ({get(doc)!r}, expected {get(first)!r})"
                )
    count = camp["count"]
    if shards is not None and shards != count:
        raise CampaignError(f"--shards: the reports say {count} shards, got {shards}")
    seen: dict[int, str] = {}
    for path, doc in docs:
        i = doc["campaign"]["index"]
        if i in seen:
            raise CampaignError(f"REPORT: {path} and {seen[i]} are both shard {i}/{count}")
        seen[i] = path
    assignment = camp["assignment"]
    records: dict[str, list[dict[str, Any]]] = {g: [] for g in camp["plan"]}
    for _, doc in docs:
        for g in doc.get("groups", []):
            if g.get("id") in records and g.get("outcome") != "not run":
                records[g["id"]].append(g)
    groups = []
    for gid in camp["plan"]:
        parts = assignment.get(gid)
        if parts is None:  # a group no shard runs: a skip, with its reason from any report
            skipped = next(
                (g for _, d in docs for g in d.get("groups", []) if g.get("id") == gid), None
            )
            groups.append(skipped or _combine(gid, [], 1))
            continue
        groups.append(_combine(gid, records[gid], len(parts)))
    missing = sorted(set(range(1, count + 1)) - set(seen))
    unfinished = [f"{d['campaign']['shard']} ({d.get('status')})" for _, d in docs
                  if d.get("status") != "complete"]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"no report from shard{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(f'{i}/{count}' for i in missing)}")  # fmt: skip
    if unfinished:
        problems.append(f"shard{'s' if len(unfinished) > 1 else ''} not finished: "
                        f"{', '.join(unfinished)}")  # fmt: skip
    status = "complete" if not problems else "aborted"
    if not missing and unfinished and all(d.get("status") == "interrupted" for _, d in docs
                                          if d.get("status") != "complete"):  # fmt: skip
        status = "interrupted"
    starts = [d.get("started") for _, d in docs if d.get("started")]
    ends = [d.get("finished") for _, d in docs if d.get("finished")]
    settings = dict(first.get("settings", {}))
    settings["seed"] = camp["seed"]
    return {
        "schema": SCHEMA,
        "status": status,
        "started": min(starts) if starts else now(),
        "finished": max(ends) if ends and status == "complete" else None,
        "harness": first.get("harness"),
        "backend": first.get("backend", {}),
        "environment": first.get("environment", {}),
        "settings": settings,
        "campaign": {
            "schema": CAMPAIGN_SCHEMA,
            "seed": camp["seed"],
            "count": count,
            "merged": [seen[i] for i in sorted(seen)],
            "environments": {d["campaign"]["shard"]: d.get("environment", {}) for _, d in docs},
            "digest": camp["digest"],
            "example_db": camp.get("example_db"),
        },
        "plan": list(camp["plan"]),
        "groups": groups,
        "error": "; ".join(problems) or None,
    }
