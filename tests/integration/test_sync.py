"""SyncApiKeysOperator against the local OpenRouter: every plan action, the cap, plan/apply, resume, races.

The operator's real code runs over real HTTP; the races run each sync in an OS process of its own against a
local OpenRouter in another process, released together through a barrier, and count what is on the account.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterError, OpenRouterValidationError
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator, SyncRefusedError, plan_table
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter

PREFIX = "t-"


class Vault:
    """A ``deliver_to_callable`` keeping the newest plaintext per name."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.hashes: dict[str, str] = {}

    def __call__(self, created: Any, context: Any) -> None:
        self.keys[created.name] = created.plaintext
        self.hashes[created.name] = created.hash


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


def sync(tenants: list[dict[str, Any]], vault: Any = None, **kwargs: Any) -> dict[str, Any]:
    op = SyncApiKeysOperator(
        task_id="sync", tenants=tenants, name_prefix=PREFIX, deliver_to_callable=vault or Vault(), **kwargs
    )
    return op.execute({})  # type: ignore[arg-type]


def names(fake: LocalOpenRouter) -> list[str]:
    return sorted(k["name"] for k in fake.keys())  # noqa: SIM118


def by_name(fake: LocalOpenRouter) -> dict[str, dict[str, Any]]:
    return {k["name"]: k for k in fake.keys()}  # noqa: SIM118


def test_every_plan_action(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-same", limit=5)
    fake.add_key(name="t-drift", limit=5, limit_reset="daily")
    fake.add_key(name="t-gone")
    fake.add_key(name="t-rot")
    fake.add_key(name="other-untouched")
    tenants = [
        {"name": "t-new", "limit": 3},
        {"name": "t-same", "limit": 5},
        {"name": "t-drift", "limit": 7, "limit_reset": "daily"},
        {"name": "t-rot", "rotate": True},
    ]
    plan = sync(tenants, prune="disable", dry_run=True)
    assert plan["counts"] == {
        "create": 1,
        "update": 1,
        "unchanged": 1,
        "rotate": 1,
        "keep": 0,
        "disable": 1,
        "delete": 0,
    }
    update = next(a for a in plan["actions"] if a["action"] == "update")
    assert update["changes"] == {"limit": [5.0, 7]}  # only the drifted field
    assert len(names(fake)) == 5  # dry run: nothing changed
    vault = Vault()
    result = sync(tenants, vault, prune="disable")
    keys = by_name(fake)
    assert keys["t-new"]["limit"] == 3
    assert "t-new" in vault.keys
    assert keys["t-drift"]["limit"] == 7
    assert keys["t-gone"]["disabled"] is True
    assert "other-untouched" in keys
    assert not keys["other-untouched"]["disabled"]
    assert vault.hashes["t-rot"] == keys["t-rot"]["hash"]
    retired = [n for n in keys if n.startswith("t-rot [retired ")]
    assert len(retired) == 1
    assert not keys[retired[0]]["disabled"]
    assert result["applied"]["counts"]["create"] == 1
    assert "sk-or-" not in json.dumps(result)
    # Converged: a second run changes nothing.
    again = sync(
        [{k: v for k, v in t.items() if k != "rotate"} for t in tenants], prune="disable", dry_run=True
    )
    assert again["counts"]["create"] == again["counts"]["update"] == again["counts"]["rotate"] == 0
    assert again["counts"]["unchanged"] == 4


def test_prune_delete_and_duplicates_are_explicit(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-dup")
    fake.advance_clock(-120)
    fake.add_key(name="t-dup")
    fake.advance_clock(240)
    newest = fake.add_key(name="t-dup")
    fake.set_clock(dt.datetime.now(dt.timezone.utc))
    fake.add_key(name="t-old")
    plan = sync([{"name": "t-dup"}], prune="delete", dry_run=True)
    table = plan_table(plan)
    assert "duplicate of " + newest.hash in table
    assert plan["counts"]["delete"] == 3
    sync([{"name": "t-dup"}], prune="delete")
    assert names(fake) == ["t-dup"]
    assert by_name(fake)["t-dup"]["hash"] == newest.hash


def test_a_plan_sends_one_list_request_per_page_and_nothing_else(fake: LocalOpenRouter) -> None:
    for i in range(250):
        fake.add_key(name=f"t-{i:03d}", limit=i)
    fake.add_key(name="t-dup", limit=1)
    fake.add_key(name="t-dup", limit=1)  # the newest, listed first: needs nothing until its twin comes by
    fake.clear_requests()
    tenants = [{"name": f"t-{i:03d}", "limit": i} for i in range(250)]
    plan = sync(tenants, dry_run=True)
    assert plan["counts"]["unchanged"] == 250
    assert {(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests} == {("GET", "keys")}
    assert len(fake.requests) == 3  # 252 keys: pages at offsets 0, 99 and 198
    # A duplicate of a key that needed nothing is read back (one request) and settled like any other.
    fake.clear_requests()
    plan = sync([*tenants, {"name": "t-dup", "limit": 1}], dry_run=True)
    assert plan["counts"]["unchanged"] == 251
    assert [a["action"] for a in plan["actions"]] == ["keep"]
    assert [r.method for r in fake.requests].count("GET") == 4


def test_prune_keep_is_default(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-old")
    plan = sync([], dry_run=True)
    assert plan["counts"]["keep"] == 1
    assert plan["counts"]["delete"] == plan["counts"]["disable"] == 0


def test_bad_rows_are_refused_before_anything_is_sent(fake: LocalOpenRouter) -> None:
    with pytest.raises(OpenRouterValidationError) as err:
        sync([{"name": "x-wrong"}, {"name": "t-a", "limit": -1}, {"name": "t-a", "limit_reset": "hourly"}])
    text = str(err.value)
    assert "tenants[0] ('x-wrong').name: must start with name_prefix" in text
    assert "tenants[1] ('t-a').limit" in text
    assert "tenants[2] ('t-a').limit_reset" in text
    assert "the same name as tenants[1]" in text
    assert fake.keys() == []


def test_cap_refuses_mass_destruction(fake: LocalOpenRouter) -> None:
    for i in range(20):
        fake.add_key(name=f"t-{i}")
    with pytest.raises(SyncRefusedError, match="max_destructive"):
        sync([], prune="delete")
    assert len(fake.keys()) == 20
    with pytest.raises(SyncRefusedError):
        sync([], prune="delete", max_destructive=0.25)
    sync([{"name": f"t-{i}"} for i in range(16)], prune="delete", max_destructive=0.25)
    assert len(fake.keys()) == 16


def test_plan_then_apply_refuses_when_the_account_changed(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-a", limit=1)
    tenants = [{"name": "t-a", "limit": 2}, {"name": "t-b"}]
    plan = sync(tenants, mode="plan")
    assert plan["counts"]["create"] == 1
    assert plan["counts"]["update"] == 1
    # Someone adds an owned key that the approved plan did not prune.
    fake.add_key(name="t-stray")
    with pytest.raises(SyncRefusedError, match="t-stray"):
        sync(tenants, mode="apply", plan=plan, prune="delete")
    assert "t-b" not in names(fake)
    # The same change without prune does not matter: apply goes ahead.
    sync(tenants, mode="apply", plan=plan)
    assert by_name(fake)["t-a"]["limit"] == 2
    assert "t-b" in names(fake)


def test_apply_resumes_after_a_failure_midway(fake: LocalOpenRouter) -> None:
    tenants = [{"name": f"t-{i:02d}", "limit": 1} for i in range(30)]
    plan = sync(tenants, mode="plan")
    vault = Vault()

    def flaky(created: Any, context: Any) -> None:
        if int(created.name[2:]) % 3 == 0:
            raise OSError("the secret store is down")
        vault(created, context)

    with pytest.raises(OpenRouterError, match="10 of 30 changes failed"):
        sync(tenants, flaky, mode="apply", plan=plan, max_workers=4)  # type: ignore[arg-type]
    assert len(names(fake)) == 20  # undelivered keys were deleted again, not left behind
    sync(tenants, vault, mode="apply", plan=plan, max_workers=4)  # the approved plan, resumed
    keys = by_name(fake)
    assert sorted(n for n in keys if n.startswith("t-")) == [t["name"] for t in tenants]
    for tenant in tenants:  # every key under a tenant name was delivered, and is the one delivered
        assert vault.hashes[tenant["name"]] == keys[tenant["name"]]["hash"]


def test_rotation_overlap_then_disable_then_delete(fake: LocalOpenRouter) -> None:
    old = fake.add_key(name="t-r")
    vault = Vault()
    sync([{"name": "t-r", "rotate": True}], vault, rotation_overlap=2, rotation_grace=2)
    keys = by_name(fake)
    assert vault.hashes["t-r"] == keys["t-r"]["hash"] != old.hash
    retired = next(n for n in keys if n.startswith("t-r [retired"))
    assert keys[retired]["hash"] == old.hash
    assert not keys[retired]["disabled"]
    sync([{"name": "t-r"}], rotation_overlap=2, rotation_grace=2)
    assert not by_name(fake)[retired]["disabled"]  # still inside the overlap
    time.sleep(2.2)
    sync([{"name": "t-r"}], rotation_overlap=2, rotation_grace=2)
    assert by_name(fake)[retired]["disabled"] is True
    time.sleep(2.2)
    sync([{"name": "t-r"}], rotation_overlap=2, rotation_grace=2)
    assert names(fake) == ["t-r"]


def test_rotate_by_age(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-young")
    fake.set_clock(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    fake.add_key(name="t-aged")
    fake.set_clock(dt.datetime.now(dt.timezone.utc))
    plan = sync([{"name": "t-young"}, {"name": "t-aged"}], rotate_older_than=86400, dry_run=True)
    rotated = [a["tenant"] for a in plan["actions"] if a["action"] == "rotate"]
    assert rotated == ["t-aged"]


# ------------------------------------------------------------------------------------ races ---

FORK = multiprocessing.get_context("fork")


def _race_run(conn: str, workdir: str, barrier: Any, count: int, reverse: bool = False) -> None:
    os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"] = conn
    log = Path(workdir, "deliveries.log")

    def deliver(created: Any, context: Any) -> None:
        with log.open("a") as fh:
            fh.write(json.dumps({"name": created.name, "hash": created.hash}) + "\n")

    op = SyncApiKeysOperator(
        task_id="race",
        tenants=[{"name": f"t-{i:03d}"} for i in (reversed(range(count)) if reverse else range(count))],
        name_prefix=PREFIX,
        deliver_to_callable=deliver,
        claim_lease=20,
        max_workers=4,
    )
    barrier.wait(timeout=30)
    try:
        op.execute({})  # type: ignore[arg-type]
    except Exception as exc:
        Path(workdir, f"error.{os.getpid()}").write_text(repr(exc))


# With other keys on the account, each run's check reads only the keys created since its plan (or its last
# chunk's check). With 250 tenants taken in opposite orders, one run's first chunk claims names of the other's
# last chunk, which that run's earlier checks must have noticed.
@pytest.mark.parametrize(
    ("kill_one", "other_keys", "count"), [(False, 0, 60), (True, 0, 60), (False, 250, 60), (False, 250, 250)]
)
def test_two_sync_runs_racing_leave_one_delivered_key_per_tenant(
    tmp_path: Path, kill_one: bool, other_keys: int, count: int
) -> None:
    with LocalOpenRouterProcess() as fake:
        for i in range(other_keys):
            fake.control.add_key(name=f"other-{i:03d}")
        # Calls of at most 10 s (3 attempts of 3 s, two waits of 0.5 s): the grace after a lease of 20 s
        # stays 10 s, as it must cover one call.
        conn = fake.connection_json(timeout=3, max_retries=2, max_retry_wait=0.5)
        barrier = FORK.Barrier(3)
        procs = [
            FORK.Process(target=_race_run, args=(conn, str(tmp_path), barrier, count, run == 1), daemon=True)
            for run in range(2)
        ]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=30)
        if kill_one:
            time.sleep(0.3)
            os.kill(procs[0].pid, 9)  # type: ignore[arg-type]
        for proc in procs:
            proc.join(timeout=120)
        # A rerun (Airflow's retry) converges; a SIGKILLed run's claims are collected after lease and grace.
        if kill_one:
            time.sleep(31)
        barrier = FORK.Barrier(2)
        rerun = FORK.Process(target=_race_run, args=(conn, str(tmp_path), barrier, count), daemon=True)
        rerun.start()
        barrier.wait(timeout=30)
        rerun.join(timeout=120)
        keys = fake.control.keys()
        delivered = {}
        for line in Path(tmp_path, "deliveries.log").read_text().splitlines():
            entry = json.loads(line)
            delivered.setdefault(entry["name"], set()).add(entry["hash"])
    finals = [k for k in keys if "[" not in k["name"] and k["name"].startswith(PREFIX)]
    assert sorted(k["name"] for k in finals) == [f"t-{i:03d}" for i in range(count)]  # no duplicate
    assert not [k for k in keys if "[" in k["name"]]  # nothing left undelivered
    for key in finals:
        assert key["hash"] in delivered[key["name"]]  # no lost delivery


def test_a_rerun_deletes_dead_claims_even_where_nothing_is_created(fake: LocalOpenRouter) -> None:
    from airflow_provider_openrouter._claims import claim_name

    fake.add_key(name="t-kept", limit=1)
    # A killed run's claims: on a tenant that has its key already, and on a name no longer in the table.
    dead = [
        fake.add_key(name=claim_name("t-kept", "dead000000", time.time() - 600)),
        fake.add_key(name=claim_name("t-gone", "dead000001", time.time() - 600)),
    ]
    live = fake.add_key(name=claim_name("t-kept", "live000000", time.time() + 600))  # a run still at work
    plan = sync([{"name": "t-kept", "limit": 1}])
    assert plan["counts"]["unchanged"] == 1
    assert not any(fake.has_key(key.hash) for key in dead)
    assert fake.has_key(live.hash)
    assert names(fake) == ["t-kept", live.name]
