"""SyncApiKeysOperator's guardrails against the local OpenRouter: tiers at scale, drift, prune, rotation, the
cap and the approval. The operator's real code runs over real HTTP; what is checked is what the account holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterValidationError, SyncRefusedError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter

PREFIX = "t-"
BASIC: dict[str, Any] = {
    "name": "t-basic",
    "limit_usd": 1.0,
    "reset_interval": "daily",
    "allowed_models": ["openai/gpt-4o-mini"],
}
PRO: dict[str, Any] = {
    "name": "t-pro",
    "limit_usd": 30.0,
    "reset_interval": "monthly",
    "allowed_models": ["openai/gpt-4o", "anthropic/claude-sonnet-4"],
}


class Vault:
    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}

    def __call__(self, created: Any, context: Any) -> None:
        self.hashes[created.name] = created.hash


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


def sync(
    tenants: list[dict[str, Any]], guardrails: Any = (BASIC, PRO), vault: Any = None, **kwargs: Any
) -> dict[str, Any]:
    op = SyncApiKeysOperator(
        task_id="sync",
        tenants=tenants,
        guardrails=None if guardrails is None else list(guardrails),
        name_prefix=PREFIX,
        deliver_to_callable=vault or Vault(),
        **kwargs,
    )
    return op.execute({})  # type: ignore[arg-type]


def on_account() -> dict[str, str | None]:
    """Each owned key's name: the name of the guardrail it holds, read back through the hook."""
    hook = OpenRouterHook()
    names = {g.id: g.name for g in hook.list_guardrails()}
    held = {a.key_hash: names.get(a.guardrail_id, a.guardrail_id) for a in hook.list_key_assignments()}
    return {
        k.name: held.get(k.hash) for k in hook.list_keys(include_disabled=True) if k.name.startswith(PREFIX)
    }


def assignment_requests(fake: LocalOpenRouter) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/assignments/keys")]


def test_two_tiers_and_a_thousand_tenants(fake: LocalOpenRouter) -> None:
    tiers = ("t-basic", "t-pro")
    tenants: list[dict[str, Any]] = [
        {"name": f"t-{i:04d}", "limit": 5, "guardrail": tiers[i % 2], "limit_reset": "weekly"}
        for i in range(1000)
    ]
    fake.clear_requests()
    result = sync(tenants)
    sent = assignment_requests(fake)
    print(f"\nassignment requests for 1,000 new keys in 2 tiers: {len(sent)}")
    assert result["counts"]["create"] == 1000
    assert result["guardrail_counts"]["create"] == 2
    assert result["guardrail_counts"]["assign"] == 1000
    assert result["applied"]["guardrail_counts"]["assign"] == 1000
    # One request per guardrail per 100 of its new keys, never one per key.
    assert len(sent) == len(tiers) * math.ceil(500 / 100)
    assert all(len(request.body["key_hashes"]) == 100 for request in sent)
    held = on_account()
    assert len(held) == 1000
    assert all(held[t["name"]] == t["guardrail"] for t in tenants)
    guardrails = {g.name: g for g in OpenRouterHook().list_guardrails()}
    assert guardrails["t-pro"].limit_usd == 30.0
    assert guardrails["t-pro"].reset_interval == "monthly"

    # A second run finds every key where it belongs: nothing to assign, no assignment request.
    fake.clear_requests()
    again = sync(tenants)
    assert again["guardrail_counts"]["assign"] == 0
    assert again["guardrail_counts"]["unchanged"] == 2
    assert assignment_requests(fake) == []

    # Moving 250 tenants to the other tier: one request per guardrail per 100 kept keys.
    moved = [
        {**t, "guardrail": "t-pro"} if t["guardrail"] == "t-basic" and i < 500 else t
        for i, t in enumerate(tenants)
    ]
    fake.clear_requests()
    third = sync(moved)
    print(f"assignment requests to move 250 kept keys: {len(assignment_requests(fake))}")
    assert third["guardrail_counts"]["assign"] == 250
    assert len(assignment_requests(fake)) == 3
    held = on_account()
    assert all(held[t["name"]] == t["guardrail"] for t in moved)


def test_update_only_drift_and_prune(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    basic = hook.create_guardrail("t-basic", limit_usd=2, reset_interval="daily", description="kept as is")
    old = hook.create_guardrail("t-old")
    other = hook.create_guardrail("other-team")
    a = fake.add_key(name="t-a")
    b = fake.add_key(name="t-b")
    outsider = fake.add_key(name="x-outsider")
    hook.assign_keys_to_guardrail(old.id, [a.hash])
    hook.assign_keys_to_guardrail(basic.id, [b.hash, outsider.hash])
    tenants = [{"name": "t-a", "guardrail": "t-basic"}, {"name": "t-b"}]

    planned = sync(tenants, guardrails=[{**BASIC, "limit_usd": 1.0}], prune="delete", dry_run=True)
    update = next(g for g in planned["guardrail_actions"] if g["action"] == "update")
    # Only the settings declared and drifted: the description is not declared, so it is left alone.
    assert update["changes"] == {"limit_usd": [2.0, 1.0], "allowed_models": [None, ["openai/gpt-4o-mini"]]}
    assert planned["guardrail_counts"] == {
        "create": 0,
        "update": 1,
        "unchanged": 0,
        "keep": 0,
        "delete": 1,
        "assign": 1,
        "unassign": 1,
    }
    with pytest.raises(SyncRefusedError, match="deletes 1 of 2 owned guardrails and unassigns 1"):
        sync(tenants, guardrails=[{**BASIC, "limit_usd": 1.0}], prune="delete", max_destructive=1)

    sync(tenants, guardrails=[{**BASIC, "limit_usd": 1.0}], prune="delete", max_destructive=2)
    after = {g.name: g for g in hook.list_guardrails()}
    assert set(after) == {"t-basic", "other-team"}
    assert after["t-basic"].description == "kept as is"
    assert after["t-basic"].limit_usd == 1.0
    held = {x.key_hash: x.guardrail_id for x in hook.list_key_assignments()}
    assert held == {a.hash: basic.id, outsider.hash: basic.id}  # keys outside the prefix are not touched
    assert old.id not in {g.id for g in hook.list_guardrails()}
    assert other.id in after["other-team"].id


def test_rotation_keeps_the_guardrail(fake: LocalOpenRouter) -> None:
    vault = Vault()
    sync([{"name": "t-a", "guardrail": "t-pro"}], vault=vault)
    first = vault.hashes["t-a"]
    result = sync([{"name": "t-a", "guardrail": "t-pro", "rotate": True}], vault=vault)
    assert result["counts"]["rotate"] == 1
    assert vault.hashes["t-a"] != first
    hook = OpenRouterHook()
    pro = next(g.id for g in hook.list_guardrails() if g.name == "t-pro")
    held = {x.key_hash: x.guardrail_id for x in hook.list_key_assignments()}
    assert held[vault.hashes["t-a"]] == pro  # the new key
    assert held[first] == pro  # the old one, working until the overlap ends


def test_approval_covers_guardrail_actions(fake: LocalOpenRouter) -> None:
    tenants = [{"name": "t-a", "guardrail": "t-basic"}]
    approved = sync(tenants, mode="plan")
    assert [g["action"] for g in approved["guardrail_actions"]] == ["create", "create", "assign"]
    OpenRouterHook().create_guardrail("t-stray")
    with pytest.raises(SyncRefusedError, match="t-stray"):
        sync(tenants, mode="apply", plan=approved, prune="delete")
    fresh = sync(tenants, mode="plan")
    applied = sync(tenants, mode="apply", plan=fresh)
    assert applied["applied"]["guardrail_counts"]["assign"] == 1
    assert on_account() == {"t-a": "t-basic"}


def test_guardrails_not_managed_reads_none(fake: LocalOpenRouter) -> None:
    fake.clear_requests()
    result = sync([{"name": "t-a"}], guardrails=None)
    assert "guardrail_actions" not in result
    assert not [r for r in fake.requests if "/guardrails" in r.path]


@pytest.mark.parametrize(
    ("tenants", "guardrails", "problem"),
    [
        ([{"name": "t-a", "guardrail": "t-gold"}], [BASIC], "'t-gold' is not a declared guardrail"),
        ([{"name": "t-a", "guardrail": "t-basic"}], None, "none are declared"),
        ([{"name": "t-a", "guardrail": 3}], [BASIC], "must be a guardrail's name"),
        ([], [{"name": "basic"}], "must start with name_prefix"),
        ([], [{"name": "t-x", "limit_usd": 1}], "reset_interval"),
        ([], [{"name": "t-x", "colour": "red"}], "unknown field"),
        ([], [BASIC, BASIC], "declared twice"),
        (
            [{"name": "t-a", "guardrail": "t-basic", "workspace_id": "0df9e665-d932-5740-b2c7-b52af166bc11"}],
            [BASIC],
            "a key takes a guardrail of its own workspace only",
        ),
    ],
)
def test_bad_guardrail_input_sends_nothing(
    fake: LocalOpenRouter, tenants: list[dict[str, Any]], guardrails: Any, problem: str
) -> None:
    fake.clear_requests()
    with pytest.raises(OpenRouterValidationError, match=problem):
        sync(tenants, guardrails=guardrails)
    assert fake.requests == []
