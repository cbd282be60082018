"""OpenRouterHook's guardrail methods against the local OpenRouter over real HTTP: the documented semantics,
paging, validation before any request, error mapping, retries and secrets.

No Airflow database: the connection comes from ``AIRFLOW_CONN_OPENROUTER_DEFAULT``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter._guardrail_endpoints import ASSIGN_CHUNK
from airflow_provider_openrouter.exceptions import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    OpenRouterValidationError,
    ServerError,
)
from airflow_provider_openrouter.guardrails import (
    ContentFilter,
    ContentFilterBuiltin,
    Guardrail,
    KeyAssignment,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.testing import DropAfterCommit, Status
from airflow_provider_openrouter.testing._guardrails import GuardrailChoices, guardrails_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter

OTHER_WORKSPACE = "7d7e2f0c-5b1a-4c39-9a53-2f0a3c1e9b11"
MISSING_ID = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    """The local OpenRouter as the default connection; retries fast and without jitter."""
    return openrouter_connection(max_retries=2, max_retry_wait=0.01)


@pytest.fixture
def hook(fake: LocalOpenRouter) -> OpenRouterHook:
    return OpenRouterHook(retry_jitter=lambda delay: delay)


def sent(fake: LocalOpenRouter, method: str | None = None) -> list[Any]:
    return [r for r in fake.requests if "/guardrails" in r.path and (method is None or r.method == method)]


def assigned(hook: OpenRouterHook) -> dict[str, str]:
    return {a.key_hash: a.guardrail_id for a in hook.list_key_assignments()}


# -------------------------------------------------------------------------------------- lifecycle ---


def test_create_get_update_delete(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    created = hook.create_guardrail(
        "tier-gold",
        description="Gold tenants",
        limit_usd=30,
        reset_interval="monthly",
        allowed_models=["openai/gpt-4o", "anthropic/claude-sonnet-4"],
        allowed_providers=("openai", "anthropic"),
        enforce_zdr_openai=True,
        content_filter_builtins=[
            ContentFilterBuiltin("email", "redact"),
            {"slug": "regex-prompt-injection", "action": "block"},
        ],
        content_filters=[ContentFilter(r"\bACME-[0-9]{6}\b", "redact", "[ACME_ID]")],
    )
    assert isinstance(created, Guardrail)
    assert (created.name, created.limit_usd, created.reset_interval) == ("tier-gold", 30.0, "monthly")
    assert created.allowed_models == ("openai/gpt-4o", "anthropic/claude-sonnet-4")
    assert created.workspace_id == fake.default_workspace_id
    assert created.content_filter_builtins is not None
    assert created.content_filter_builtins[0].label == "[EMAIL]"
    assert created.content_filter_builtins[1].scan_scope == "all_messages"
    assert created.enforce_zdr_openai is True
    assert created.enforce_zdr_google is None
    # Only the settings given go on the wire; None and omitted ones stay out of a create.
    body = sent(fake, "POST")[0].body
    assert "enforce_zdr_google" not in body
    assert "ignored_models" not in body
    assert "workspace_id" not in body  # the connection names no workspace: OpenRouter's default
    assert json.loads(json.dumps(created.to_dict()))["allowed_providers"] == ["openai", "anthropic"]

    assert hook.get_guardrail(created.id) == created
    assert hook.get_guardrail(created.id.upper()) == created  # any UUID spelling, sent canonical

    updated = hook.update_guardrail(created.id, name="tier-gold-2", allowed_models=["openai/gpt-4o-mini"])
    assert updated.name == "tier-gold-2"
    assert updated.allowed_models == ("openai/gpt-4o-mini",)  # a collection replaces, it does not merge
    assert updated.allowed_providers == ("openai", "anthropic")  # untouched
    assert updated.updated_at is not None
    assert sent(fake, "PATCH")[0].body == {"name": "tier-gold-2", "allowed_models": ["openai/gpt-4o-mini"]}

    cleared = hook.update_guardrail(created.id, limit_usd=None, reset_interval=None, allowed_providers=None)
    assert (cleared.limit_usd, cleared.reset_interval, cleared.allowed_providers) == (None, None, None)

    assert hook.delete_guardrail(created.id) is True
    with pytest.raises(NotFoundError):
        hook.get_guardrail(created.id)
    assert hook.delete_guardrail(created.id, missing_ok=True) is False
    with pytest.raises(NotFoundError):
        hook.delete_guardrail(created.id)


def test_create_in_another_workspace_and_list_by_workspace(hook: OpenRouterHook) -> None:
    here = hook.create_guardrail("here")
    there = hook.create_guardrail("there", workspace_id=OTHER_WORKSPACE.upper())
    assert there.workspace_id == OTHER_WORKSPACE
    assert [g.id for g in hook.list_guardrails()] == [here.id]
    assert [g.id for g in hook.list_guardrails(workspace_id=OTHER_WORKSPACE)] == [there.id]


def test_list_pages_by_offset_and_limit(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    made = [hook.create_guardrail(f"g-{i:03d}").id for i in range(230)]
    fake.clear_requests()
    listed = hook.list_guardrails()
    assert not sent(fake)  # nothing is asked before the iteration
    assert [g.id for g in listed] == made
    queries = [r.query for r in sent(fake, "GET")]
    assert [q["offset"] for q in queries] == ["0", "100", "200"]
    assert {q["limit"] for q in queries} == {"100"}


def test_list_reads_again_when_the_list_changes_under_it(hook: OpenRouterHook) -> None:
    made = [hook.create_guardrail(f"g-{i:03d}").id for i in range(150)]
    walk = hook.list_guardrails()
    first = [next(walk).id for _ in range(100)]
    hook.delete_guardrail(made[0])  # everything after it moves one place up
    rest = [g.id for g in walk]
    # The item that moved onto page one is not lost (the walk reads again), and none comes twice.
    assert sorted(first + rest) == sorted(made)


# -------------------------------------------------------------------------------------- assignments ---


def test_assign_replaces_unassign_and_lists(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    keys = [fake.add_key(f"tenant-{i}").hash for i in range(3)]
    daily = hook.create_guardrail("daily", limit_usd=1, reset_interval="daily")
    monthly = hook.create_guardrail("monthly", limit_usd=30, reset_interval="monthly")

    assert hook.assign_keys_to_guardrail(daily.id, keys) == 3
    assert hook.assign_keys_to_guardrail(daily.id, keys) == 0  # already there: nothing changes
    # One guardrail per key: assigning another replaces it.
    assert hook.assign_keys_to_guardrail(monthly.id, keys[:1]) == 1
    assert assigned(hook) == {keys[0]: monthly.id, keys[1]: daily.id, keys[2]: daily.id}

    of_daily = list(hook.list_guardrail_key_assignments(daily.id))
    assert all(isinstance(a, KeyAssignment) for a in of_daily)
    assert {a.key_hash for a in of_daily} == set(keys[1:])
    assert {a.key_name for a in of_daily} == {"tenant-1", "tenant-2"}
    assert all(a.key_label.startswith("sk-or-v1-") and "..." in a.key_label for a in of_daily)

    assert hook.unassign_keys_from_guardrail(daily.id, keys) == 2  # the key on "monthly" is not touched
    assert assigned(hook) == {keys[0]: monthly.id}


def test_deletes_take_the_assignments_with_them(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    keys = [fake.add_key(f"tenant-{i}").hash for i in range(3)]
    tier = hook.create_guardrail("tier")
    other = hook.create_guardrail("other")
    hook.assign_keys_to_guardrail(tier.id, keys[:2])
    hook.assign_keys_to_guardrail(other.id, keys[2:])
    hook.delete_key(keys[0])
    assert assigned(hook) == {keys[1]: tier.id, keys[2]: other.id}
    hook.delete_guardrail(tier.id)
    assert assigned(hook) == {keys[2]: other.id}
    with pytest.raises(NotFoundError):
        list(hook.list_guardrail_key_assignments(tier.id))


def test_assign_goes_in_chunks_and_pages_back(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.seed_keys(ASSIGN_CHUNK * 2 + 50)
    account = fake.keys()
    hashes = [k["hash"] for k in account]
    tier = hook.create_guardrail("tier")
    fake.clear_requests()
    assert hook.assign_keys_to_guardrail(tier.id, hashes + hashes[:10]) == len(hashes)  # duplicates dropped
    bodies = [r.body["key_hashes"] for r in sent(fake, "POST")]
    assert [len(b) for b in bodies] == [ASSIGN_CHUNK, ASSIGN_CHUNK, 50]
    assert {a.key_hash for a in hook.list_guardrail_key_assignments(tier.id)} == set(hashes)
    assert len(list(hook.list_key_assignments())) == len(hashes)


def test_assignment_is_repeated_after_a_lost_answer(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant").hash
    tier = hook.create_guardrail("tier")
    fake.inject(DropAfterCommit(), method="POST", path=f"/guardrails/{tier.id}/assignments/keys")
    # The first attempt assigned the key and its answer got lost; the repeat finds the work done.
    assert hook.assign_keys_to_guardrail(tier.id, [key]) == 0
    assert assigned(hook) == {key: tier.id}
    fake.inject(Status(502), method="POST", path="/guardrails/*")
    assert hook.unassign_keys_from_guardrail(tier.id, [key]) == 1
    assert len(sent(fake, "POST")) == 5  # create, assign twice, unassign twice


def test_create_is_not_repeated_after_a_lost_answer(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.inject(Status(502), method="POST", path="/guardrails")
    with pytest.raises(ServerError):
        hook.create_guardrail("once")
    assert len(sent(fake, "POST")) == 1  # a repeat could make a second guardrail


def test_assignment_repeats_stop_at_max_retries(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant").hash
    tier = hook.create_guardrail("tier")
    fake.inject(Status(500), method="POST", path="/guardrails/*", times=None)
    with pytest.raises(ServerError):
        hook.assign_keys_to_guardrail(tier.id, [key])
    assert len(sent(fake, "POST")) == 1 + 3  # the create, then one attempt and max_retries=2 repeats


# ------------------------------------------------------------------------------------ API errors ---


def test_api_refusals_map_to_typed_errors(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    with pytest.raises(NotFoundError) as missing:
        hook.get_guardrail(MISSING_ID)
    assert missing.value.status == 404
    assert MISSING_ID in str(missing.value)
    with pytest.raises(NotFoundError):
        hook.update_guardrail(MISSING_ID, name="x")
    with pytest.raises(NotFoundError):
        hook.assign_keys_to_guardrail(MISSING_ID, ["a" * 64])
    tier = hook.create_guardrail("tier")
    with pytest.raises(BadRequestError, match="Keys not found"):
        hook.assign_keys_to_guardrail(tier.id, ["a" * 64])  # no such key: refused whole
    elsewhere = fake.add_key("elsewhere", workspace_id=OTHER_WORKSPACE).hash
    with pytest.raises(BadRequestError):
        hook.assign_keys_to_guardrail(tier.id, [elsewhere])  # a key of another workspace
    budgeted = hook.create_guardrail("budgeted", limit_usd=5, reset_interval="daily")
    with pytest.raises(BadRequestError, match="reset_interval"):
        hook.update_guardrail(budgeted.id, reset_interval=None)  # would leave a budget without window
    fake.inject(Status(409, message="Guardrail was changed concurrently"), method="PATCH")
    with pytest.raises(ConflictError, match="changed concurrently"):
        hook.update_guardrail(tier.id, description="x")


def test_duplicate_names_can_be_refused(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    store = guardrails_of(fake._state)
    store.choices = dataclasses.replace(store.choices, duplicate_name_status=400)
    hook.create_guardrail("same")
    other = hook.create_guardrail("other")
    with pytest.raises(BadRequestError):
        hook.create_guardrail("same")
    with pytest.raises(ConflictError):
        hook.update_guardrail(other.id, name="same")
    assert GuardrailChoices().duplicate_name_status is None  # the default: names need not be unique


# ------------------------------------------------------------------------- bad input, no request ---

BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("", {}, "name"),
    ("x" * 201, {}, "name"),
    ("line\nbreak", {}, "name"),
    ("sk-or-v1-" + "a" * 64, {}, "name"),
    ("ok", {"limit_usd": 5}, "reset_interval"),
    ("ok", {"reset_interval": "daily"}, "limit_usd"),
    ("ok", {"limit_usd": -1, "reset_interval": "daily"}, "limit_usd"),
    ("ok", {"limit_usd": 5, "reset_interval": "yearly"}, "reset_interval"),
    ("ok", {"allowed_models": []}, "allowed_models"),
    ("ok", {"allowed_models": "openai/gpt-4o"}, "allowed_models"),
    ("ok", {"allowed_providers": ["openai", ""]}, "allowed_providers[1]"),
    ("ok", {"allowed_data_regions": ["mars"]}, "allowed_data_regions[0]"),
    ("ok", {"enforce_zdr_openai": "yes"}, "enforce_zdr_openai"),
    ("ok", {"description": "d" * 1001}, "description"),
    (
        "ok",
        {"content_filter_builtins": [{"slug": "email", "action": "shred"}]},
        "content_filter_builtins[0].action",
    ),
    (
        "ok",
        {"content_filter_builtins": [{"slug": "email", "action": "block", "scan_scope": "user_only"}]},
        "content_filter_builtins[0].scan_scope",
    ),
    ("ok", {"content_filters": [{"pattern": "(?<=a)b", "action": "block"}]}, "content_filters[0].pattern"),
    ("ok", {"content_filters": [{"pattern": "(a+)+", "action": "block"}]}, "content_filters[0].pattern"),
    ("ok", {"content_filters": [{"pattern": "(", "action": "block"}]}, "content_filters[0].pattern"),
    ("ok", {"workspace_id": "not-a-uuid"}, "workspace_id"),
]


@pytest.mark.parametrize(("name", "settings", "field"), BAD_CREATES)
def test_bad_create_fails_before_any_request(
    hook: OpenRouterHook, fake: LocalOpenRouter, name: str, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(OpenRouterValidationError) as caught:
        hook.create_guardrail(name, **settings)
    assert caught.value.field.startswith(field.split(".", maxsplit=1)[0])
    assert field in str(caught.value)
    assert "sk-or-v1-" + "a" * 64 not in str(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.get_guardrail("nope"),
        lambda h: h.get_guardrail(""),
        lambda h: h.update_guardrail(MISSING_ID),
        lambda h: h.update_guardrail(MISSING_ID, include_byok_in_budgets=None),
        lambda h: h.update_guardrail(MISSING_ID, limit_usd=5, reset_interval=None),
        lambda h: h.delete_guardrail(MISSING_ID, missing_ok="yes"),
        lambda h: h.assign_keys_to_guardrail(MISSING_ID, []),
        lambda h: h.assign_keys_to_guardrail(MISSING_ID, "a" * 64),
        lambda h: h.assign_keys_to_guardrail(MISSING_ID, ["A" * 64]),
        lambda h: h.unassign_keys_from_guardrail(MISSING_ID, ["sk-or-v1-" + "b" * 64]),
        lambda h: h.list_guardrail_key_assignments("nope"),
        lambda h: h.list_guardrails(workspace_id="nope"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    hook: OpenRouterHook, fake: LocalOpenRouter, call: Callable[[OpenRouterHook], object]
) -> None:
    with pytest.raises(OpenRouterValidationError) as caught:
        call(hook)
    assert "sk-or-v1-" + "b" * 64 not in str(caught.value)
    assert fake.requests == []


def test_unknown_setting_is_a_type_error(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    with pytest.raises(TypeError, match="limit_reset"):
        hook.create_guardrail("x", limit_reset="daily")  # type: ignore[call-arg]
    assert fake.requests == []


def test_secrets_stay_out_of_the_logs(
    hook: OpenRouterHook, fake: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    key = fake.add_key("tenant")
    tier = hook.create_guardrail("tier")
    fake.inject(Status(503), method="POST", path="/guardrails/*")
    with caplog.at_level(logging.DEBUG):
        hook.assign_keys_to_guardrail(tier.id, [key.hash])
        list(hook.list_key_assignments())
    assert "HTTP 503; retry 1 of" in caplog.text  # assigning is repeated after a 5xx
    assert key.plaintext not in caplog.text
    assert fake.management_key not in caplog.text
