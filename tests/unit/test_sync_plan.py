"""The tenant sync's plan as a pure function: rows and a walk of ``ApiKey`` objects in, a plan out, no HTTP.

The operator's own suites (``test_sync*.py``) drive it against the local OpenRouter; here the planner is
handed keys made in memory, so tables of thousands of rows are planned in a blink and every branch is
reachable without arranging an account.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter._claims import claim_name, replaced_name, retired_name
from airflow_provider_openrouter._sync_plan import (
    DRIFT_FIELDS,
    ROW_FIELDS,
    Planner,
    PlanPolicy,
    tenants_digest,
    validate_tenants,
)
from airflow_provider_openrouter._sync_report import plan_markdown, plan_table
from airflow_provider_openrouter.exceptions import OpenRouterValidationError, SyncRefusedError
from airflow_provider_openrouter.models import KEY_FIELDS, ApiKey
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_provider_openrouter.testing import LocalOpenRouter

PREFIX = "t-"
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc).timestamp()
DAY = 86400.0


def stamp(seconds_ago: float) -> str:
    return dt.datetime.fromtimestamp(NOW - seconds_ago, dt.timezone.utc).isoformat()


def key(name: str, number: int, *, age: float = 3600.0, **settings: Any) -> ApiKey:
    return ApiKey.from_api(
        {
            "hash": f"{number:064x}",
            "name": name,
            "label": f"sk-or-v1-...{number:03d}",
            "created_at": stamp(age),
            **settings,
        }
    )


class Account:
    """The keys of each workspace, newest first as OpenRouter lists them, and the reads the plan asked for."""

    def __init__(self, keys: Iterable[ApiKey] = (), **by_workspace: list[ApiKey]) -> None:
        self.keys: dict[str | None, list[ApiKey]] = {None: list(keys)}
        self.keys.update(by_workspace)
        self.walked: list[str | None] = []
        self.read: list[str] = []

    def walk(self, workspace: str | None) -> Iterable[ApiKey]:
        self.walked.append(workspace)
        return iter(self.keys.get(workspace, []))

    def read_back(self, key_hash: str) -> ApiKey | None:
        self.read.append(key_hash)
        return next((k for keys in self.keys.values() for k in keys if k.hash == key_hash), None)


def plan(rows: list[dict[str, Any]], account: Account, **policy: Any) -> tuple[dict[str, Any], Planner]:
    planner = Planner(validate_tenants(rows, PREFIX), PlanPolicy(name_prefix=PREFIX, now=NOW, **policy))
    return dict(planner.plan(account.walk, read_back=account.read_back)), planner


def actions(planned: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [a for a in planned["actions"] if a["action"] == action]


# ---------------------------------------------------------------------------------------- the columns ---


def test_the_columns_follow_the_key_fields_declaration() -> None:
    synced = {name for name, f in KEY_FIELDS.items() if f.synced}
    assert set(ROW_FIELDS) == synced | {"deliver_to_variable", "rotate", "guardrail"}
    assert "creator_user_id" not in ROW_FIELDS
    assert set(DRIFT_FIELDS) == {n for n in synced if KEY_FIELDS[n].update} - {"name", "workspace_id"}
    # The settings a new key is created with come first: a plan lists changes in this order.
    assert DRIFT_FIELDS == ("limit", "limit_reset", "include_byok_in_limit", "disabled")


def test_a_column_outside_the_declaration_is_refused() -> None:
    with pytest.raises(
        OpenRouterValidationError, match=r"unknown field\(s\) creator_user_id; known: name, limit"
    ):
        validate_tenants([{"name": "t-a", "creator_user_id": "user-1"}], PREFIX)


def test_rows_are_checked_by_each_fields_own_check() -> None:
    [tenant] = validate_tenants(
        [
            {
                "name": "t-a",
                "limit": "5",
                "include_byok_in_limit": "True",
                "rotate": "false",
                "disabled": "None",
            }
        ],
        PREFIX,
    )
    assert tenant["limit"] == 5.0
    assert tenant["include_byok_in_limit"] is True
    assert tenant["rotate"] is False
    assert tenant["disabled"] is False  # a row without it: the key works
    assert tenant["_given"] == ("name", "limit", "include_byok_in_limit", "disabled", "rotate")
    with pytest.raises(OpenRouterValidationError) as err:
        validate_tenants(
            [{"name": "t-a", "workspace_id": "nope", "expires_at": "2020-01-01T00:00:00Z"}], PREFIX
        )
    assert "tenants[0] ('t-a').workspace_id: must be a UUID" in str(err.value)
    assert "tenants[0] ('t-a').expires_at: must be in the future" in str(err.value)
    with pytest.raises(OpenRouterValidationError, match="bracketed marker"):
        validate_tenants([{"name": retired_name("t-a", NOW)}], PREFIX)


# ------------------------------------------------------------------------------------------ the plan ---


def test_thousands_of_rows_are_planned_from_one_walk_without_a_single_read() -> None:
    rows: list[dict[str, Any]] = [{"name": f"t-{i:05d}", "limit": 10} for i in range(4000)]
    keys = [key(f"t-{i:05d}", i, limit=10.0) for i in range(3000)]  # the first 3,000 already match
    keys[:500] = [key(f"t-{i:05d}", i, limit=5.0) for i in range(500)]  # 500 of them have drifted
    keys += [key(f"t-gone-{i}", 10_000 + i) for i in range(200)]  # owned, no tenant
    keys += [key(f"other-{i}", 20_000 + i) for i in range(300)]  # not ours
    account = Account(keys)

    planned, planner = plan(rows, account, prune="disable")

    assert planned["counts"] == {
        "create": 1000,
        "update": 500,
        "unchanged": 2500,
        "rotate": 0,
        "keep": 0,
        "disable": 200,
        "delete": 0,
    }
    assert planned["owned_keys"] == 3200
    assert len(planned["actions"]) == 1700  # unchanged tenants are counted, not listed
    assert account.walked == [None]
    assert account.read == []
    update = actions(planned, "update")[0]
    assert update == {
        "tenant": "t-00000",
        "workspace_id": None,
        "action": "update",
        "key_hash": f"{0:064x}",
        "changes": {"limit": [5.0, 10.0]},
        "reason": "",
    }
    assert actions(planned, "create")[0]["changes"] == {"limit": [None, 10.0]}
    assert {a["key_name"] for a in actions(planned, "disable")} == {f"t-gone-{i}" for i in range(200)}
    json.dumps(planned)  # XCom-safe as it is
    assert "sk-or-" not in json.dumps(planned)
    # Names with nothing on the account start from an empty view: only names with keys or claims are kept.
    assert planner.views == {None: {}}
    assert planner.leftovers == {None: []}


def test_a_second_key_under_a_quiet_name_reads_the_first_back_and_keeps_the_newest() -> None:
    newest = key("t-dup", 1, age=60)
    older = key("t-dup", 2, age=7200)
    account = Account([newest, key("t-other", 3), older])

    planned, _ = plan([{"name": "t-dup"}, {"name": "t-other"}], account, prune="delete")

    assert account.read == [newest.hash]  # let go as the walk passed it, read again for the duplicate
    assert planned["counts"]["unchanged"] == 2
    [delete] = actions(planned, "delete")
    assert delete["key_hash"] == older.hash
    assert delete["reason"] == f"duplicate of {newest.hash} (the newest is kept)"
    assert "duplicate of " + newest.hash in plan_table(planned)


def test_a_key_read_back_gone_leaves_the_other_one() -> None:
    first, second = key("t-dup", 1, age=60), key("t-dup", 2, age=120)
    account = Account([first, second])
    account.read_back = lambda key_hash: None  # type: ignore[method-assign]

    planned, _ = plan([{"name": "t-dup"}], account, prune="delete")

    assert planned["counts"]["unchanged"] == 1
    assert actions(planned, "delete") == []


def test_prune_disable_keeps_a_key_already_disabled() -> None:
    planned, _ = plan([], Account([key("t-off", 1, disabled=True), key("t-on", 2)]), prune="disable")
    assert [(a["action"], a["key_name"]) for a in planned["actions"]] == [
        ("keep", "t-off"),
        ("disable", "t-on"),
    ]


def test_a_row_without_disabled_enables_the_key_and_byok_left_out_is_left_alone() -> None:
    account = Account([key("t-a", 1, disabled=True, include_byok_in_limit=True)])
    planned, _ = plan([{"name": "t-a"}], account)
    assert actions(planned, "update")[0]["changes"] == {"disabled": [True, False]}


def test_rotation_by_row_and_by_age() -> None:
    account = Account([key("t-young", 1, age=DAY / 2), key("t-aged", 2, age=3 * DAY), key("t-asked", 3)])
    rows = [{"name": "t-young"}, {"name": "t-aged"}, {"name": "t-asked", "rotate": True}]

    planned, _ = plan(rows, account, rotate_older_than=DAY)

    assert [(a["tenant"], a["reason"]) for a in actions(planned, "rotate")] == [
        ("t-aged", "older than 86400 s"),
        ("t-asked", "asked for"),
    ]
    assert planned["counts"]["unchanged"] == 1


@pytest.mark.parametrize(
    ("retired_ago", "disabled", "expected"),
    [
        pytest.param(DAY / 2, False, None, id="inside-the-overlap"),
        pytest.param(2 * DAY, False, "disable", id="overlap-over"),
        pytest.param(2 * DAY, True, None, id="overlap-over-already-disabled"),
        pytest.param(9 * DAY, True, "delete", id="grace-over"),
    ],
)
def test_a_retired_key_is_disabled_after_the_overlap_and_deleted_after_the_grace(
    retired_ago: float, disabled: bool, expected: str | None
) -> None:
    retired = key(retired_name("t-r", NOW - retired_ago), 2, disabled=disabled)
    planned, _ = plan([{"name": "t-r"}], Account([key("t-r", 1), retired]))
    assert [a["action"] for a in planned["actions"]] == ([expected] if expected else [])
    assert planned["owned_keys"] == 2


def test_claims_go_with_the_names_to_create_and_the_others_are_left_over() -> None:
    token = "0123456789"
    on_new = key(claim_name("t-new", token, NOW + 60), 1)
    on_quiet = key(claim_name("t-same", token, NOW - 600), 2)
    on_nobody = key(claim_name("t-dead", token, NOW - 600), 3)
    account = Account([on_new, on_quiet, on_nobody, key("t-same", 4)])

    planned, planner = plan([{"name": "t-new"}, {"name": "t-same"}], account)

    assert planned["owned_keys"] == 1  # claims are the provisioning sequence's, not owned keys
    assert planned["counts"]["create"] == 1
    [view] = planner.views[None].values()
    assert (view.name, [c.key.hash for c in view.claims], view.finals) == ("t-new", [on_new.hash], [])
    leftovers = {v.name: [c.key.hash for c in v.claims] for v in planner.leftovers[None]}
    assert leftovers == {"t-same": [on_quiet.hash], "t-dead": [on_nobody.hash]}


def test_each_workspace_is_walked_once_and_planned_on_its_own() -> None:
    workspace = "0df9e665-d932-5740-b2c7-b52af166bc11"
    account = Account([key("t-a", 1)], **{workspace: [key("t-b", 2, limit=1.0)]})

    planned, _ = plan([{"name": "t-a"}, {"name": "t-b", "workspace_id": workspace, "limit": 2}], account)

    assert account.walked == [None, workspace]
    [update] = actions(planned, "update")
    assert (update["tenant"], update["workspace_id"]) == ("t-b", workspace)


def test_an_empty_table_walks_the_default_workspace() -> None:
    account = Account([key("t-old", 1)])
    planned, _ = plan([], account)
    assert account.walked == [None]
    assert planned["counts"]["keep"] == 1


def test_the_digest_names_the_table() -> None:
    rows = [{"name": f"t-{i}", "limit": i} for i in range(2500)]
    tenants = validate_tenants(rows, PREFIX)
    same = validate_tenants([dict(reversed(list(r.items()))) for r in rows], PREFIX)
    assert tenants_digest(tenants) == tenants_digest(same)
    assert tenants_digest(tenants) != tenants_digest(validate_tenants([*rows[:-1], {"name": "t-x"}], PREFIX))
    planner = Planner(tenants, PlanPolicy(name_prefix=PREFIX, now=NOW))
    account = Account()
    assert planner.plan(account.walk, read_back=account.read_back)["tenants_digest"] == tenants_digest(
        tenants
    )
    given = planner.plan(account.walk, read_back=account.read_back, digest=lambda: "from-the-caller")
    assert given["tenants_digest"] == "from-the-caller"
    assert given["planned_at"] == "2030-06-01T00:00:00+00:00"


def test_the_markdown_escapes_and_says_when_there_is_nothing() -> None:
    planned, _ = plan([], Account())
    assert "| (nothing to change) | | | |" in plan_markdown(planned)
    planned, _ = plan([{"name": "t-a|b", "limit": 1}], Account())
    assert "| create | t-a\\|b | (new) | limit: None → 1.0 |" in plan_markdown(planned)


# ------------------------------------------------------------------------------------- plan only ---


@pytest.fixture
def account(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


class _TaskInstance:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("how", [{"mode": "plan"}, {"dry_run": True}], ids=["mode-plan", "dry-run"])
def test_plan_only_means_one_thing_however_it_is_asked_for(
    account: LocalOpenRouter, how: dict[str, Any]
) -> None:
    account.add_key(name="t-a", limit=1)
    op = SyncApiKeysOperator(
        task_id="sync", tenants=[{"name": "t-a", "limit": 2}, {"name": "t-b"}], name_prefix=PREFIX, **how
    )
    ti = _TaskInstance()
    planned = op.execute({"ti": ti})  # type: ignore[arg-type]
    assert planned["counts"]["update"] == planned["counts"]["create"] == 1
    assert "applied" not in planned
    assert "| update | t-a |" in ti.pushed["plan_markdown"]
    assert sorted(k["name"] for k in account.keys()) == ["t-a"]  # noqa: SIM118
    # Over the cap, both refuse: an approver is never asked for a plan the apply would refuse.
    for i in range(3):
        account.add_key(name=f"t-stray-{i}")
    op = SyncApiKeysOperator(
        task_id="sync", tenants=[], name_prefix=PREFIX, prune="delete", max_destructive=2, **how
    )
    with pytest.raises(SyncRefusedError, match="max_destructive"):
        op.execute({})  # type: ignore[arg-type]


def test_old_keys_a_replace_took_out_go_to_the_provisioning_sequence_not_the_prune() -> None:
    # A replace stopped between its two renames (or a delete that failed) leaves the old key marked; the
    # provisioning sequence settles it (deleted beside a key under the name, given the name back if none),
    # so the plan neither counts it as owned nor prunes it.
    kept = key("t-a", 1)
    out_a = key(replaced_name("t-a", NOW - 60), 2)
    out_b = key(replaced_name("t-b", NOW - 60), 3)
    out_gone = key(replaced_name("t-gone", NOW - 60), 4)
    planned, planner = plan(
        [{"name": "t-a"}, {"name": "t-b"}], Account([kept, out_a, out_b, out_gone]), prune="delete"
    )
    assert planned["owned_keys"] == 1
    assert actions(planned, "delete") == []
    assert [a["tenant"] for a in actions(planned, "create")] == ["t-b"]
    assert {v.name: [k.hash for k in v.replaced] for v in planner.leftovers[None]} == {
        "t-a": [out_a.hash],
        "t-gone": [out_gone.hash],
    }
    assert [k.hash for k in planner.views[None]["t-b"].replaced] == [out_b.hash]
