"""Bad arguments to the key operators: caught when the DAG is parsed (literal values) or, for templates, when
the rendered values are checked in ``execute`` before any request; every error names the field."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.operators.api_key import (
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)

if TYPE_CHECKING:
    from airflow_provider_openrouter.models import CreatedApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter

HASH = "a" * 64


def deliver(created: CreatedApiKey, context: Any) -> None:
    """A destination that accepts anything."""


CREATE_OK: dict[str, Any] = {"task_id": "create", "name": "tenant-acme", "deliver_to_callable": deliver}
# Deliberately without a timezone.
NAIVE = dt.datetime(2040, 1, 1)

CREATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("name-empty", {"name": " "}, "name"),
    ("name-not-text", {"name": 5}, "name"),
    ("limit-negative", {"limit": -1}, "limit"),
    ("limit-text", {"limit": "ten"}, "limit"),
    ("limit-bool", {"limit": True}, "limit"),
    ("limit-nan", {"limit": float("nan")}, "limit"),
    ("limit-reset-unknown", {"limit_reset": "yearly"}, "limit_reset"),
    ("byok-not-bool", {"include_byok_in_limit": "yes"}, "include_byok_in_limit"),
    ("expires-naive-text", {"expires_at": "2040-01-01T00:00:00"}, "expires_at"),
    ("expires-naive-datetime", {"expires_at": NAIVE}, "expires_at"),
    ("expires-garbage", {"expires_at": "next tuesday"}, "expires_at"),
    ("expires-number", {"expires_at": 1234567890}, "expires_at"),
    ("workspace-not-uuid", {"workspace_id": "default"}, "workspace_id"),
    ("creator-not-text", {"creator_user_id": 7}, "creator_user_id"),
    ("if-exists-unknown", {"if_exists": "overwrite"}, "if_exists"),
    ("variable-empty", {"deliver_to_variable": ""}, "deliver_to_variable"),
    ("variable-too-long", {"deliver_to_variable": "v" * 251}, "deliver_to_variable"),
    ("variable-not-text", {"deliver_to_variable": 3}, "deliver_to_variable"),
    ("callable-not-callable", {"deliver_to_callable": "vault"}, "deliver_to_callable"),
    (
        "xcom-not-bool",
        {"push_plaintext_to_xcom": "yes", "deliver_to_callable": None},
        "push_plaintext_to_xcom",
    ),
    (
        "no-destination",
        {"deliver_to_callable": None},
        "deliver_to_variable, deliver_to_callable, push_plaintext_to_xcom",
    ),
    ("conn-id-empty", {"openrouter_conn_id": ""}, "openrouter_conn_id"),
]


@pytest.mark.parametrize(("kwargs", "field"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_rejects_bad_literals_at_parse_time(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        CreateApiKeyOperator(**{**CREATE_OK, **kwargs})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_the_no_destination_error_says_why() -> None:
    with pytest.raises(OpenRouterValidationError, match="shows only once"):
        CreateApiKeyOperator(task_id="create", name="k")


def test_a_literal_expiry_in_the_past_is_left_for_execute() -> None:
    # A DAG file must not stop importing the day its literal date passes: the task fails instead.
    op = CreateApiKeyOperator(**CREATE_OK, expires_at="2001-01-01T00:00:00Z")
    with pytest.raises(OpenRouterValidationError, match="must be in the future") as raised:
        op.execute({})
    assert raised.value.field == "expires_at"


@pytest.mark.parametrize(
    "field",
    [
        "name",
        "limit",
        "limit_reset",
        "include_byok_in_limit",
        "expires_at",
        "workspace_id",
        "creator_user_id",
    ],
)
def test_templates_are_not_checked_at_parse_time(field: str) -> None:
    CreateApiKeyOperator(**{**CREATE_OK, field: "{{ params.value }}"})


def test_a_templated_variable_name_counts_as_a_destination() -> None:
    CreateApiKeyOperator(task_id="c", name="k", deliver_to_variable="openrouter_api_key_{{ params.tenant }}")


RENDERED_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("name", {"name": ""}, "name"),
    ("limit", {"limit": -5}, "limit"),
    ("limit-text", {"limit": "lots"}, "limit"),
    ("limit_reset", {"limit_reset": "hourly"}, "limit_reset"),
    ("byok", {"include_byok_in_limit": "maybe"}, "include_byok_in_limit"),
    ("expires_at", {"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ("workspace_id", {"workspace_id": "nope"}, "workspace_id"),
    ("variable", {"deliver_to_variable": "  "}, "deliver_to_variable"),
]


@pytest.mark.parametrize(
    ("values", "field"), [c[1:] for c in RENDERED_CASES], ids=[c[0] for c in RENDERED_CASES]
)
def test_create_checks_rendered_values_before_any_request(
    openrouter_conn_env: LocalOpenRouter, values: dict[str, Any], field: str
) -> None:
    fake = openrouter_conn_env
    templated = {name: "{{ params.%s }}" % name for name in values}  # noqa: UP031 - Jinja braces
    op = CreateApiKeyOperator(**{**CREATE_OK, **templated})
    context: dict[str, Any] = {"params": values}
    op.render_template_fields(context)
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute(context)
    assert raised.value.field == field
    assert fake.requests == []


UPDATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no-target", {"limit": 1}, "key_hash, key_name"),
    ("both-targets", {"key_hash": HASH, "key_name": "k", "limit": 1}, "key_hash, key_name"),
    ("hash-malformed", {"key_hash": "abc", "limit": 1}, "key_hash"),
    ("hash-uppercase", {"key_hash": "A" * 64, "limit": 1}, "key_hash"),
    ("key-name-empty", {"key_name": "", "limit": 1}, "key_name"),
    (
        "nothing-to-update",
        {"key_hash": HASH},
        "name, disabled, limit, limit_reset, include_byok_in_limit, workspace_id",
    ),
    ("name-empty", {"key_hash": HASH, "name": ""}, "name"),
    ("disabled-not-bool", {"key_hash": HASH, "disabled": "maybe"}, "disabled"),
    ("limit-negative", {"key_hash": HASH, "limit": -2}, "limit"),
    ("limit-reset-unknown", {"key_hash": HASH, "limit_reset": "hourly"}, "limit_reset"),
    ("byok-none", {"key_hash": HASH, "include_byok_in_limit": None}, "include_byok_in_limit"),
    ("workspace-none", {"key_hash": HASH, "workspace_id": None}, "workspace_id"),
    ("workspace-not-uuid", {"key_hash": HASH, "workspace_id": "w1"}, "workspace_id"),
    ("missing-ok-not-bool", {"key_hash": HASH, "disabled": True, "missing_ok": "yes"}, "missing_ok"),
]


@pytest.mark.parametrize(("kwargs", "field"), [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
def test_update_rejects_bad_literals_at_parse_time(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        UpdateApiKeyOperator(task_id="update", **kwargs)
    assert raised.value.field == field


def test_update_checks_rendered_values_before_any_request(openrouter_conn_env: LocalOpenRouter) -> None:
    fake = openrouter_conn_env
    op = UpdateApiKeyOperator(task_id="update", key_hash="{{ params.hash }}", limit="{{ params.limit }}")
    context: dict[str, Any] = {"params": {"hash": HASH, "limit": -1}}
    op.render_template_fields(context)
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute(context)
    assert raised.value.field == "limit"
    op = UpdateApiKeyOperator(task_id="update", key_hash="{{ params.hash }}", limit=3)
    context = {"params": {"hash": "not-a-hash"}}
    op.render_template_fields(context)
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute(context)
    assert raised.value.field == "key_hash"
    assert fake.requests == []


DELETE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no-target", {}, "key_hash, key_name"),
    ("both-targets", {"key_hash": HASH, "key_name": "k"}, "key_hash, key_name"),
    ("hash-malformed", {"key_hash": "xyz"}, "key_hash"),
    ("missing-ok-not-bool", {"key_hash": HASH, "missing_ok": "yes"}, "missing_ok"),
]


@pytest.mark.parametrize(("kwargs", "field"), [c[1:] for c in DELETE_CASES], ids=[c[0] for c in DELETE_CASES])
def test_delete_rejects_bad_literals_at_parse_time(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        DeleteApiKeyOperator(task_id="delete", **kwargs)
    assert raised.value.field == field


def test_delete_checks_the_rendered_target_before_any_request(openrouter_conn_env: LocalOpenRouter) -> None:
    op = DeleteApiKeyOperator(task_id="delete", key_name="{{ params.name }}")
    context: dict[str, Any] = {"params": {"name": "   "}}
    op.render_template_fields(context)
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute(context)
    assert raised.value.field == "key_name"
    assert openrouter_conn_env.requests == []


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CreateApiKeyOperator("create", "name")  # type: ignore[misc]
