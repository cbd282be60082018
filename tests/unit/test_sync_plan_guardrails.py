"""The tenant sync's guardrail plan as a pure function: rows, keys, guardrails and assignments in memory.

What is planned for guardrails (create, update only the drifted settings, prune) and for the tenants' keys
(assign, unassign), what the cap counts, and what a rotation plans, without HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openrouter._sync_guardrails import same_setting, validate_guardrails
from airflow_provider_openrouter._sync_plan import Planner, PlanPolicy, validate_tenants
from airflow_provider_openrouter._sync_report import plan_markdown, plan_table
from airflow_provider_openrouter.exceptions import SyncRefusedError
from airflow_provider_openrouter.guardrails import ContentFilterBuiltin, Guardrail, KeyAssignment
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator
from tests.unit.test_sync_plan import NOW, PREFIX, Account, key

GOLD = "00000000-0000-4000-8000-00000000000a"
OLD = "00000000-0000-4000-8000-00000000000b"
OTHER = "00000000-0000-4000-8000-00000000000c"
DUP = "00000000-0000-4000-8000-00000000000d"


def guardrail(gid: str, name: str, created: str = "2030-01-01T00:00:00Z", **settings: Any) -> Guardrail:
    return Guardrail.from_api(
        {
            "id": gid,
            "name": name,
            "include_byok_in_budgets": False,
            "created_at": created,
            "workspace_id": "ws",
            **settings,
        }
    )


def held(key_hash: str, gid: str) -> KeyAssignment:
    return KeyAssignment.from_api(
        {
            "id": f"as-{key_hash[-4:]}",
            "key_hash": key_hash,
            "guardrail_id": gid,
            "key_name": "",
            "key_label": "",
            "assigned_by": None,
            "created_at": "2030-01-01T00:00:00Z",
        }
    )


def plan(
    rows: list[dict[str, Any]],
    declared: list[dict[str, Any]],
    account: Account,
    guardrails: list[Guardrail] = (),  # type: ignore[assignment]
    assignments: list[KeyAssignment] = (),  # type: ignore[assignment]
    **policy: Any,
) -> dict[str, Any]:
    desired = validate_guardrails(declared, PREFIX)
    planner = Planner(
        validate_tenants(rows, PREFIX, desired), PlanPolicy(name_prefix=PREFIX, now=NOW, **policy), desired
    )
    return dict(
        planner.plan(
            account.walk,
            read_back=account.read_back,
            guardrail_walk=lambda workspace: iter(guardrails),
            assignments=lambda: iter(assignments),
        )
    )


def of(planned: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [g for g in planned["guardrail_actions"] if g["action"] == action]


GOLD_DECLARED = {
    "name": "t-gold",
    "limit_usd": 30,
    "reset_interval": "monthly",
    "allowed_models": ["b/m", "a/m"],
    "content_filter_builtins": [{"slug": "regex-prompt-injection", "action": "block"}],
}


def test_create_missing_guardrails_and_assign_new_keys() -> None:
    planned = plan([{"name": "t-a", "guardrail": "t-gold"}, {"name": "t-b"}], [GOLD_DECLARED], Account())
    (create,) = of(planned, "create")
    assert create["guardrail_id"] is None
    assert create["changes"]["limit_usd"] == [None, 30.0]
    (assign,) = of(planned, "assign")
    assert assign["tenants"] == ["t-a"]
    assert assign["key_hashes"] == [None]  # the key the apply makes
    assert planned["guardrail_counts"]["assign"] == 1
    assert planned["owned_guardrails"] == 0


def test_update_only_the_drifted_declared_settings() -> None:
    same = guardrail(
        GOLD,
        "t-gold",
        limit_usd=30.0,
        reset_interval="monthly",
        allowed_models=["a/m", "b/m"],  # another order is the same set
        description="not declared, left alone",
        content_filter_builtins=[
            {"slug": "regex-prompt-injection", "action": "block", "scan_scope": "all_messages", "label": "X"}
        ],
    )
    planned = plan([], [GOLD_DECLARED], Account(), [same])
    assert planned["guardrail_counts"]["unchanged"] == 1
    assert planned["guardrail_actions"] == []
    drifted = guardrail(GOLD, "t-gold", limit_usd=10.0, reset_interval="monthly", allowed_models=["a/m"])
    planned = plan([], [{**GOLD_DECLARED, "description": None}], Account(), [drifted])
    (update,) = of(planned, "update")
    assert update["changes"] == {
        "limit_usd": [10.0, 30.0],
        "allowed_models": [["a/m"], ["b/m", "a/m"]],
        "content_filter_builtins": [None, [{"slug": "regex-prompt-injection", "action": "block"}]],
    }


def test_prune_follows_the_policy_and_never_touches_others() -> None:
    found = [
        guardrail(GOLD, "t-gold", limit_usd=30.0, reset_interval="monthly", allowed_models=["a/m", "b/m"]),
        guardrail(DUP, "t-gold", created="2030-02-01T00:00:00Z"),
        guardrail(OLD, "t-old"),
        guardrail(OTHER, "other"),
    ]
    declared = [{k: v for k, v in GOLD_DECLARED.items() if k != "content_filter_builtins"}]
    kept = plan([], declared, Account(), found)
    assert {(g["guardrail_id"], g["action"]) for g in kept["guardrail_actions"]} == {
        (DUP, "keep"),
        (OLD, "keep"),
    }
    assert kept["owned_guardrails"] == 3
    # A guardrail cannot be disabled: "disable" keeps it.
    assert plan([], declared, Account(), found, prune="disable")["guardrail_counts"]["delete"] == 0
    deleted = plan([], declared, Account(), found, prune="delete")
    assert {g["guardrail_id"] for g in of(deleted, "delete")} == {DUP, OLD}  # the oldest t-gold is kept


def test_assign_and_unassign_kept_keys() -> None:
    keys = [key("t-a", 1), key("t-b", 2), key("t-c", 3), key("t-d", 4), key("x-out", 5)]
    found = [guardrail(GOLD, "t-gold"), guardrail(OLD, "t-old"), guardrail(OTHER, "other")]
    assignments = [
        held(keys[0].hash, GOLD),  # t-a: already where its row says
        held(keys[1].hash, OTHER),  # t-b: on a guardrail not ours; its row names t-gold
        held(keys[2].hash, OLD),  # t-c: on an owned guardrail its row does not name
        held(keys[3].hash, OTHER),  # t-d: not ours, its row names none: left alone
        held(keys[4].hash, OLD),  # outside the prefix
    ]
    rows = [
        {"name": "t-a", "guardrail": "t-gold"},
        {"name": "t-b", "guardrail": "t-gold"},
        {"name": "t-c"},
        {"name": "t-d"},
    ]
    planned = plan(rows, [{"name": "t-gold"}], Account(keys), found, assignments)
    (assign,) = of(planned, "assign")
    assert (assign["tenants"], assign["key_hashes"]) == (["t-b"], [keys[1].hash])
    (unassign,) = of(planned, "unassign")
    assert (unassign["guardrail_id"], unassign["tenants"]) == (OLD, ["t-c"])
    # Deleting the guardrail takes its assignments with it: no unassign is planned for it.
    deleting = plan(rows, [{"name": "t-gold"}], Account(keys), found, assignments, prune="delete")
    assert of(deleting, "unassign") == []


def test_max_destructive_counts_unassigns_and_guardrail_deletes() -> None:
    keys = [key(f"t-{i}", i) for i in range(1, 4)]
    found = [guardrail(GOLD, "t-gold"), guardrail(OLD, "t-old")]
    assignments = [held(k.hash, GOLD) for k in keys]
    planned = plan([{"name": k.name} for k in keys], [], Account(keys), found, assignments, prune="delete")
    assert planned["guardrail_counts"]["delete"] == 2
    planned = plan([{"name": k.name} for k in keys], [{"name": "t-gold"}], Account(keys), found, assignments)
    assert planned["guardrail_counts"]["unassign"] == 3
    op = SyncApiKeysOperator(task_id="s", tenants=[], name_prefix=PREFIX, max_destructive=2)
    with pytest.raises(SyncRefusedError, match="unassigns 3 keys"):
        op.check_cap(planned)
    SyncApiKeysOperator(task_id="s", tenants=[], name_prefix=PREFIX, max_destructive=3).check_cap(planned)


def test_a_rotated_key_keeps_its_tenants_guardrail() -> None:
    old = key("t-a", 1)
    planned = plan(
        [{"name": "t-a", "guardrail": "t-gold", "rotate": True}],
        [{"name": "t-gold"}],
        Account([old]),
        [guardrail(GOLD, "t-gold")],
        [held(old.hash, GOLD)],
    )
    assert planned["counts"]["rotate"] == 1
    (assign,) = of(planned, "assign")
    assert (assign["guardrail_id"], assign["key_hashes"]) == (GOLD, [None])


def test_the_tables_show_guardrail_changes() -> None:
    planned = plan([{"name": f"t-{i}", "guardrail": "t-gold"} for i in range(8)], [GOLD_DECLARED], Account())
    table = plan_table(planned)
    assert "guardrail t-gold" in table
    assert "8 key(s), 8 made by this run; t-0, t-1, t-2, t-3, t-4, … (3 more)" in table
    assert "guardrails: create 1, update 0" in table
    assert "| create | guardrail t-gold | (new) | limit_usd: None → 30.0" in plan_markdown(planned)


def test_same_setting_reads_back_like_openrouter() -> None:
    builtin = (ContentFilterBuiltin("email", "redact", label="[EMAIL]"),)
    assert same_setting("content_filter_builtins", builtin, [{"slug": "email", "action": "redact"}])
    assert not same_setting("content_filter_builtins", builtin, [{"slug": "email", "action": "block"}])
    assert same_setting("limit_usd", 1.0, 1)
    assert not same_setting("description", "x", None)
    assert same_setting("allowed_providers", None, None)
