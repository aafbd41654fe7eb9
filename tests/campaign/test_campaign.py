"""Campaigns over many runners, as processes: a shared example database on a real Redis
server, shards, and merged reports (``conformance/campaign.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conformance import campaign
from conformance.report import SCHEMA_FILE

ROOT = Path(__file__).resolve().parents[2]
RARE = "tests.campaign.rare:RareWindow"
# (a failure's fresh replay, tested in tests/test_cli.py, costs a process start: not here)
ONE_GROUP = [
    "--checks", "bad_input", "--ops", "shrink", "--dtypes", "float32", "--profile", "ci",
    "--no-fresh-replay",
]  # fmt: skip
SMALL = ["--ops", "shrink", "--dtypes", "float32", "--checks", "diff", "metamorphic",
         "bad_input", "--profile", "ci", "--max-examples", "2"]  # fmt: skip
SCHEMA = json.loads(SCHEMA_FILE.read_text())


def cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lora-conformance ARGS`` in a process of its own, in ``cwd`` (its local database)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def report(path: Path) -> dict:
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, SCHEMA)
    return doc


def redis_keys(url: str) -> int:
    import redis

    return len(redis.Redis.from_url(url).keys("*"))


def test_a_failure_one_runner_saves_is_the_first_another_runner_tries(tmp_path, redis_url):
    db = f"{redis_url}/1"
    # runner A draws until it finds the rare bug, and saves the case to the database
    a = cli(tmp_path / "a", "check", RARE, *ONE_GROUP, "--max-examples", "60", "--seed", "2",
            "--example-db", db, "--report-json", "a.json")  # fmt: skip
    assert a.returncode == 1, a.stderr[-2000:]
    found = report(tmp_path / "a" / "a.json")["groups"][0]["failure"]
    assert found["case"]["name"] == ""  # a drawn case: the hand-built ones pass
    saved = redis_keys(db)
    assert saved > 0
    # runner B draws one example: alone it finds nothing ...
    alone = cli(tmp_path / "b0", "check", RARE, *ONE_GROUP, "--max-examples", "1", "--seed",
                "1", "--report-json", "b.json")  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-2000:]
    hand_built = report(tmp_path / "b0" / "b.json")["groups"][0]["examples"] - 1
    # ... on the shared database (read-only here) its first drawn example is A's failure
    b = cli(tmp_path / "b", "check", RARE, *ONE_GROUP, "--max-examples", "1", "--seed", "1",
            "--example-db", f"readonly:{db}", "--report-json", "b.json")  # fmt: skip
    assert b.returncode == 1, b.stderr[-2000:]
    group = report(tmp_path / "b" / "b.json")["groups"][0]
    assert group["failure"]["case"] == found["case"]
    assert group["examples"] == hand_built + 1 and group["shrink_steps"] == 0
    assert Path(group["failure"]["file"]).is_file()  # its failure file, as for any failure
    assert redis_keys(db) == saved  # read-only: B wrote nothing there
    assert report(tmp_path / "b" / "b.json")["settings"]["example_db"] == f"readonly:{db}"


def test_an_unreachable_database_is_an_error_before_the_first_example(tmp_path):
    out = tmp_path / "r.json"
    started = time.monotonic()
    run = cli(tmp_path, "check", "reference", *ONE_GROUP, "--example-db",
              "redis://:secret@127.0.0.1:1/0", "--report-json", str(out))  # fmt: skip
    assert run.returncode == 2
    assert "example_db: cannot reach redis://:***@127.0.0.1:1/0" in run.stderr
    assert "secret" not in run.stderr
    assert not out.exists() and time.monotonic() - started < 30
    bad = cli(tmp_path, "check", "reference", "--example-db", "s3://bucket/x")
    assert bad.returncode == 2 and "scheme 's3'" in bad.stderr


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    """The two shards' reports of one small campaign of the reference backend."""
    folder = tmp_path_factory.mktemp("shards")
    args = ["check", "reference", *SMALL, "--report-json", "r.json", "--failures-dir", "f"]
    runs = [cli(folder / f"s{i}", *args, "--shard", f"{i}/2") for i in (1, 2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    return [folder / f"s{i}" / "r.json" for i in (1, 2)]


def test_shards_split_the_plan_and_merge_into_one_report(tmp_path, shards):
    docs = [report(path) for path in shards]
    plans = [set(d["plan"]) for d in docs]
    assert docs[0]["campaign"]["digest"] == docs[1]["campaign"]["digest"]
    assert plans[0] | plans[1] == set(docs[0]["campaign"]["plan"])
    split = []
    for gid, parts in docs[0]["campaign"]["assignment"].items():
        assert {i + 1 for i, plan in enumerate(plans) if gid in plan} == {p[0] for p in parts}
        if len(parts) > 1:
            split.append(gid)
    assert split == ["diff-shrink-float32"]  # the hand-built cases make it the longest
    out = tmp_path / "merged.json"
    outputs = ["--markdown", str(tmp_path / "m.md"), "--junit-xml", str(tmp_path / "m.xml")]
    merged = cli(tmp_path, "merge", *map(str, shards), "--report-json", str(out), *outputs)
    assert merged.returncode == 0, merged.stderr[-2000:]
    doc = report(out)
    assert doc["verdict"] == "PASS" and doc["status"] == "complete"
    for key in ("examples", "shrink_steps"):
        assert doc["totals"][key] == sum(d["totals"][key] for d in docs), key
    assert doc["totals"]["pass"] == len(doc["plan"]) == 3
    assert [g["id"] for g in doc["groups"]] == docs[0]["campaign"]["plan"]
    whole = next(g for g in doc["groups"] if g["id"] == "diff-shrink-float32")
    assert sorted(whole["parts"]) == ["1/2", "2/2"]
    parts = [g for d in docs for g in d["groups"] if g["id"] == "diff-shrink-float32"]
    assert whole["examples"] == sum(g["examples"] for g in parts)
    assert "PASS" in (tmp_path / "m.md").read_text()


def test_a_killed_shard_leaves_its_groups_not_run(tmp_path, shards):
    # shard 2 is killed once its report shows the plan (SIGKILL: it writes nothing more)
    folder = tmp_path / "s2"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "check", "reference", *SMALL, "--shard",
         "2/2", "--report-json", "r.json"], cwd=folder, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    partial = folder / "r.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and json.loads(partial.read_text()).get("plan"):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = tmp_path / "merged.json"
    merged = cli(tmp_path, "merge", str(shards[0]), str(partial), "--report-json", str(out))
    doc = report(out)
    shard2 = set(report(partial)["plan"])
    assert doc["verdict"] != "PASS" and merged.returncode == doc["exit_code"] == 3
    assert "shard not finished: 2/2 (running)" in doc["error"]
    assert any(g["outcome"] == "not run" for g in doc["groups"] if g["id"] in shard2)
    # without shard 2's report at all
    alone = cli(tmp_path, "merge", str(shards[0]), "--report-json", str(out))
    doc = report(out)
    assert alone.returncode == 3 and "no report from shard 2/2" in doc["error"]
    assert {g["outcome"] for g in doc["groups"] if g["id"] in shard2} == {"not run"}


def test_merge_refuses_reports_of_different_campaigns(tmp_path, shards):
    first = json.loads(shards[0].read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**first, "campaign": {**first["campaign"], "seed": 5,
                                                        "index": 2, "shard": "2/2"}}))  # fmt: skip
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({k: v for k, v in first.items() if k != "campaign"}))
    out = tmp_path / "m.json"
    for reports, message in (
        ([shards[0], other], "the campaign seed differs"),
        ([shards[0], shards[0]], "are both shard 1/2"),
        ([plain], "not a shard's report"),
        ([shards[0], tmp_path / "missing.json"], "cannot read"),
    ):
        run = cli(tmp_path, "merge", *map(str, reports), "--report-json", str(out))
        assert run.returncode == 2 and message in run.stderr, (message, run.stderr)
        assert not out.exists()


def test_a_sharded_campaign_outside_ci_needs_one_seed(tmp_path):
    run = cli(tmp_path, "check", "reference", "--profile", "dev", "--shard", "1/2")
    assert run.returncode == 2 and "seed: the shards of a campaign draw from one seed" in run.stderr
    for text in ("0/2", "3/2", "1-2", "a/b"):
        bad = cli(tmp_path, "check", "reference", "--shard", text)
        assert bad.returncode == 2 and "shard: expected i/n" in bad.stderr, text


# --- the assignment, in process -----------------------------------------------------------


def test_the_assignment_covers_every_group_once_and_balances():
    groups = [(f"diff-op{i}-float32", 30, 4) for i in range(6)] + [
        (f"bad_input-op{i}-float32", 1, 4) for i in range(6)
    ]
    for count in (1, 2, 3, 5, 8):
        parts = campaign.assign(groups, count)
        assert parts == campaign.assign(list(reversed(groups)), count)  # order-free
        load = [0.0] * count
        for gid, explicit, draws in groups:
            ps = parts[gid]
            assert [p.part for p in ps] == list(range(1, len(ps) + 1))
            assert len({p.shard for p in ps}) == len(ps)  # parts on distinct shards
            shares = [p.share(list(range(explicit))) for p in ps]
            ran = sorted(i for share in shares for i in share)
            assert ran == list(range(explicit))  # each hand-built case exactly once
            assert len(ps) == 1 or sum(p.draws for p in ps) >= draws
            for p, share in zip(ps, shares, strict=True):
                load[p.shard - 1] += len(share) + (p.draws or draws)
        assert max(load) <= 1.35 * sum(load) / count + 5, (count, load)


def test_recorded_times_move_groups_between_shards():
    groups = [("diff-a-float32", 10, 4), ("diff-b-float32", 10, 4), ("diff-c-float32", 10, 4)]
    even = campaign.assign(groups, 2)
    slow = campaign.assign(groups, 2, {"diff-a-float32": 100.0, "diff-b-float32": 1.0,
                                       "diff-c-float32": 1.0})  # fmt: skip
    assert campaign.assignment_digest(even) != campaign.assignment_digest(slow)
    # the slow group is split over both shards; the fast ones share what is left
    assert [p.shard for p in slow["diff-a-float32"]] == [1, 2]


def test_database_keys_are_namespaced():
    base = ("0.2.0", "triton", "v1", "thorough", "diff-qkv-float16")
    keys = {campaign.database_key(*base)}
    for i, other in enumerate(("0.3.0", "reference", "v2", "dev", "diff-qkv-bfloat16")):
        changed = list(base)
        changed[i] = other
        keys.add(campaign.database_key(*changed))
    assert len(keys) == 6


def test_urls_are_checked_and_passwords_hidden(tmp_path):
    assert campaign.describe_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert campaign.describe_url("readonly:redis://:pw@h:1/0") == "readonly:redis://:***@h:1/0"
    for bad in ("", "readonly:", "readonly:readonly:x", "http://x/y"):
        with pytest.raises(campaign.CampaignError, match="--example-db"):
            campaign.check_url(bad)
    with pytest.raises(campaign.CampaignError, match="expected an existing folder"):
        campaign.open_shared(f"readonly:{tmp_path / 'none'}")
    db = campaign.open_shared(str(tmp_path / "db"))
    db.save(b"k", b"v")
    assert list(campaign.open_shared(f"readonly:{tmp_path / 'db'}").fetch(b"k")) == [b"v"]
