"""Bad input, tried at every public entry point as a new user would: literal arguments, templates that render
to bad values (plain and native Jinja), wrongly typed trigger arguments, broken connections and extras.

For every bad input the tests assert the same four things:

1. a typed error naming the field (:class:`OpenRouterValidationError`, or
   :class:`OpenRouterConnectionConfigError` for the connection) whose message says what is allowed;
2. zero requests reached the local OpenRouter (it records every request it serves);
3. the local OpenRouter's keys are exactly as before;
4. no secret in the message, the exception's attributes or the log: not the connection's management key, not
   a key pasted into a field, not credentials inside a URL.

``test_bad_input_counts`` prints how many bad inputs each entry point is tried with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import (
    OpenRouterConnectionConfigError,
    OpenRouterError,
    OpenRouterValidationError,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators.api_key import (
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor
from airflow_provider_openrouter.testing import LocalOpenRouter
from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CONN_ENV = "AIRFLOW_CONN_OPENROUTER_DEFAULT"
# Keys pasted where they do not belong: a regular key and a management key in the form the dashboard makes.
PASTED = "sk-or-v1-" + "7f" * 32
PASTED_MGMT = "sk-or-mgmt-" + "c0ffee" * 8
URL_PASSWORD = "hunter2pass"
HASH = "a" * 64
WORKSPACE = "0df9e665-d932-5740-b2c7-b52af166bc11"


class _Mgmt:
    """Stands for the local OpenRouter's management key (the connection's key), known once it runs."""

    def __repr__(self) -> str:
        return "MGMT"


MGMT: Any = _Mgmt()


def deliver(created: Any, context: Any) -> None:
    """A destination that accepts anything."""


def _resolve(value: Any, fake: LocalOpenRouter) -> Any:
    if value is MGMT:
        return fake.management_key
    if isinstance(value, dict):
        return {name: _resolve(item, fake) for name, item in value.items()}
    return value


# ------------------------------------------------------------------------------------------- fixtures ---


@pytest.fixture(scope="module")
def fake() -> Iterator[LocalOpenRouter]:
    with LocalOpenRouter() as server:
        # Keys to aim at: a limited key whose limit a bad update must not remove, and a second one.
        server.add_key("tenant-acme", limit=10.0, limit_reset="monthly")
        server.add_key("tenant-globex", limit=2.0)
        yield server


@pytest.fixture
def conn_env(fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> LocalOpenRouter:
    for name, value in fake.airflow_env().items():
        monkeypatch.setenv(name, value)
    return fake


def _secrets(fake: LocalOpenRouter) -> list[str]:
    return [fake.management_key, *fake.issued_plaintexts, PASTED, PASTED_MGMT, URL_PASSWORD]


def _texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), *(str(arg) for arg in exc.args)]
    texts += [str(value) for value in vars(exc).values()]
    return texts


def refused(
    fake: LocalOpenRouter,
    caplog: pytest.LogCaptureFixture,
    action: Callable[[], Any],
    *,
    field: str,
    error: type[OpenRouterError] = OpenRouterValidationError,
) -> OpenRouterError:
    """Run ``action`` and assert the four properties of a refusal of bad input."""
    before = fake.keys(include_management=True)
    fake.clear_requests()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OpenRouterError) as raised:
        action()
    exc = raised.value
    assert type(exc) is error, f"{type(exc).__name__}: {exc}"
    assert getattr(exc, "field", None) == field, str(exc)
    assert getattr(exc, "problem", ""), "the error says what is wrong"
    assert fake.requests == [], [f"{r.method} {r.path}" for r in fake.requests]
    assert fake.keys(include_management=True) == before
    for secret in _secrets(fake):
        for text in [*_texts(exc), caplog.text]:
            assert secret not in text, f"a secret in {text!r}"
    return exc


# ----------------------------------------------------------------------------------------- the hook ---

# (id, method, args, kwargs, field). Async methods are awaited; async iterators iterated.
HOOK_CASES: list[tuple[str, str, tuple[Any, ...], dict[str, Any], str]] = [
    # get_key
    ("get-empty", "get_key", ("",), {}, "key_hash"),
    ("get-short", "get_key", ("abc",), {}, "key_hash"),
    ("get-upper", "get_key", ("A" * 64,), {}, "key_hash"),
    ("get-pasted-key", "get_key", (PASTED,), {}, "key_hash"),
    ("get-pasted-mgmt", "get_key", (MGMT,), {}, "key_hash"),
    ("get-int", "get_key", (5,), {}, "key_hash"),
    ("get-none", "get_key", (None,), {}, "key_hash"),
    ("get-path", "get_key", ("../credits" + "a" * 54,), {}, "key_hash"),
    ("aget-pasted-key", "aget_key", (PASTED_MGMT,), {}, "key_hash"),
    # list_keys and find_key_by_name
    ("list-disabled-text", "list_keys", (), {"include_disabled": "yes"}, "include_disabled"),
    ("list-expired-int", "list_keys", (), {"include_expired": 1}, "include_expired"),
    ("list-workspace-empty", "list_keys", (), {"workspace_id": ""}, "workspace_id"),
    ("list-workspace-text", "list_keys", (), {"workspace_id": "default"}, "workspace_id"),
    ("list-workspace-int", "list_keys", (), {"workspace_id": 5}, "workspace_id"),
    ("alist-workspace-empty", "alist_keys", (), {"workspace_id": " "}, "workspace_id"),
    ("find-empty", "find_key_by_name", ("",), {}, "name"),
    ("find-newline", "find_key_by_name", ("a\nb",), {}, "name"),
    ("find-too-long", "find_key_by_name", ("x" * 256,), {}, "name"),
    ("find-pasted-key", "find_key_by_name", (PASTED,), {}, "name"),
    ("find-none", "find_key_by_name", (None,), {}, "name"),
    ("find-workspace-bad", "find_key_by_name", ("k",), {"workspace_id": "w"}, "workspace_id"),
    # create_key: the name
    ("create-name-empty", "create_key", ("",), {}, "name"),
    ("create-name-blank", "create_key", ("   ",), {}, "name"),
    ("create-name-newline", "create_key", ("tenant\nacme",), {}, "name"),
    ("create-name-nul", "create_key", ("tenant\x00acme",), {}, "name"),
    ("create-name-tab", "create_key", ("tenant\tacme",), {}, "name"),
    ("create-name-line-separator", "create_key", ("tenant\u2028acme",), {}, "name"),
    ("create-name-10000", "create_key", ("x" * 10_000,), {}, "name"),
    ("create-name-256", "create_key", ("x" * 256,), {}, "name"),
    ("create-name-pasted-key", "create_key", (PASTED,), {}, "name"),
    ("create-name-pasted-mgmt", "create_key", (f"key {MGMT}",), {}, "name"),
    ("create-name-int", "create_key", (5,), {}, "name"),
    ("create-name-none", "create_key", (None,), {}, "name"),
    # create_key: the limit
    ("create-limit-empty", "create_key", ("k",), {"limit": ""}, "limit"),
    ("create-limit-negative", "create_key", ("k",), {"limit": -1}, "limit"),
    ("create-limit-text", "create_key", ("k",), {"limit": "ten"}, "limit"),
    ("create-limit-bool", "create_key", ("k",), {"limit": True}, "limit"),
    ("create-limit-nan", "create_key", ("k",), {"limit": float("nan")}, "limit"),
    ("create-limit-inf", "create_key", ("k",), {"limit": float("inf")}, "limit"),
    ("create-limit-huge-int", "create_key", ("k",), {"limit": 10**400}, "limit"),
    ("create-limit-huge-text", "create_key", ("k",), {"limit": "1e999"}, "limit"),
    ("create-limit-above-max", "create_key", ("k",), {"limit": 1e10}, "limit"),
    ("create-limit-list", "create_key", ("k",), {"limit": [1]}, "limit"),
    # create_key: the rest
    ("create-reset-empty", "create_key", ("k",), {"limit_reset": ""}, "limit_reset"),
    ("create-reset-unknown", "create_key", ("k",), {"limit_reset": "yearly"}, "limit_reset"),
    ("create-reset-case", "create_key", ("k",), {"limit_reset": "Daily"}, "limit_reset"),
    ("create-reset-int", "create_key", ("k",), {"limit_reset": 1}, "limit_reset"),
    ("create-byok-text", "create_key", ("k",), {"include_byok_in_limit": "yes"}, "include_byok_in_limit"),
    ("create-byok-int", "create_key", ("k",), {"include_byok_in_limit": 1}, "include_byok_in_limit"),
    ("create-expires-empty", "create_key", ("k",), {"expires_at": ""}, "expires_at"),
    ("create-expires-words", "create_key", ("k",), {"expires_at": "next tuesday"}, "expires_at"),
    ("create-expires-naive", "create_key", ("k",), {"expires_at": "2040-01-01T00:00:00"}, "expires_at"),
    ("create-expires-naive-dt", "create_key", ("k",), {"expires_at": dt.datetime(2040, 1, 1)}, "expires_at"),
    ("create-expires-past", "create_key", ("k",), {"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    (
        "create-expires-overflow",
        "create_key",
        ("k",),
        {"expires_at": "9999-12-31T23:59:59-05:00"},
        "expires_at",
    ),
    ("create-expires-date", "create_key", ("k",), {"expires_at": dt.date(2040, 1, 1)}, "expires_at"),
    ("create-expires-epoch", "create_key", ("k",), {"expires_at": 2_000_000_000}, "expires_at"),
    ("create-workspace-empty", "create_key", ("k",), {"workspace_id": ""}, "workspace_id"),
    ("create-workspace-text", "create_key", ("k",), {"workspace_id": "default"}, "workspace_id"),
    ("create-workspace-int", "create_key", ("k",), {"workspace_id": 5}, "workspace_id"),
    ("create-creator-empty", "create_key", ("k",), {"creator_user_id": ""}, "creator_user_id"),
    ("create-creator-int", "create_key", ("k",), {"creator_user_id": 7}, "creator_user_id"),
    ("create-creator-newline", "create_key", ("k",), {"creator_user_id": "u\n1"}, "creator_user_id"),
    ("create-creator-pasted-key", "create_key", ("k",), {"creator_user_id": PASTED}, "creator_user_id"),
    ("acreate-name-empty", "acreate_key", ("",), {}, "name"),
    ("acreate-limit-empty", "acreate_key", ("k",), {"limit": ""}, "limit"),
    # update_key
    ("update-hash-bad", "update_key", ("abc",), {"limit": 1}, "key_hash"),
    ("update-hash-pasted-key", "update_key", (PASTED,), {"limit": 1}, "key_hash"),
    ("update-nothing", "update_key", (HASH,), {}, "fields"),
    ("update-name-empty", "update_key", (HASH,), {"name": ""}, "name"),
    ("update-name-newline", "update_key", (HASH,), {"name": "a\nb"}, "name"),
    ("update-name-10000", "update_key", (HASH,), {"name": "x" * 10_000}, "name"),
    ("update-name-pasted-key", "update_key", (HASH,), {"name": PASTED_MGMT}, "name"),
    ("update-name-none", "update_key", (HASH,), {"name": None}, "name"),
    ("update-disabled-text", "update_key", (HASH,), {"disabled": "yes"}, "disabled"),
    ("update-disabled-none", "update_key", (HASH,), {"disabled": None}, "disabled"),
    ("update-limit-empty", "update_key", (HASH,), {"limit": ""}, "limit"),
    ("update-limit-negative", "update_key", (HASH,), {"limit": -1}, "limit"),
    ("update-limit-huge", "update_key", (HASH,), {"limit": 10**400}, "limit"),
    ("update-limit-nan", "update_key", (HASH,), {"limit": float("nan")}, "limit"),
    ("update-reset-empty", "update_key", (HASH,), {"limit_reset": ""}, "limit_reset"),
    ("update-reset-unknown", "update_key", (HASH,), {"limit_reset": "hourly"}, "limit_reset"),
    ("update-byok-none", "update_key", (HASH,), {"include_byok_in_limit": None}, "include_byok_in_limit"),
    ("update-workspace-none", "update_key", (HASH,), {"workspace_id": None}, "workspace_id"),
    ("update-workspace-empty", "update_key", (HASH,), {"workspace_id": ""}, "workspace_id"),
    ("update-workspace-text", "update_key", (HASH,), {"workspace_id": "nope"}, "workspace_id"),
    ("aupdate-limit-empty", "aupdate_key", (HASH,), {"limit": ""}, "limit"),
    # delete_key
    ("delete-hash-empty", "delete_key", ("",), {}, "key_hash"),
    ("delete-hash-pasted-key", "delete_key", (PASTED,), {}, "key_hash"),
    ("delete-hash-short", "delete_key", ("abc",), {}, "key_hash"),
    ("delete-missing-ok-text", "delete_key", (HASH,), {"missing_ok": "yes"}, "missing_ok"),
    ("adelete-hash-pasted-mgmt", "adelete_key", (MGMT,), {}, "key_hash"),
]


def _call_hook(hook: OpenRouterHook, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = getattr(hook, method)(*args, **kwargs)
    if method == "alist_keys":

        async def drain() -> list[Any]:
            return [key async for key in result]

        return asyncio.run(drain())
    if asyncio.iscoroutine(result):
        return asyncio.run(result)
    if method == "list_keys":
        return list(result)
    return result


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "field"), [c[1:] for c in HOOK_CASES], ids=[c[0] for c in HOOK_CASES]
)
def test_hook_refuses_bad_input(
    conn_env: LocalOpenRouter,
    caplog: pytest.LogCaptureFixture,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
) -> None:
    hook = OpenRouterHook()
    args = tuple(_resolve(arg, conn_env) for arg in args)
    args = tuple(a.replace("MGMT", conn_env.management_key) if isinstance(a, str) else a for a in args)
    kwargs = _resolve(kwargs, conn_env)
    refused(conn_env, caplog, lambda: _call_hook(hook, method, args, kwargs), field=field)


# ----------------------------------------------------------------------------------- the connection ---


def _conn(host: Any = None, password: Any = MGMT, **extra: Any) -> dict[str, Any]:
    return {"conn_type": "openrouter", "host": host, "password": password, "extra": extra}


# (id, connection as JSON with MGMT for the local OpenRouter's key and HOST for its base URL, field)
HOST: Any = object()
CONNECTION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("password-missing", _conn(HOST, None), "password"),
    ("password-blank", _conn(HOST, "   "), "password"),
    ("password-space", _conn(HOST, "sk-or-v1-a b"), "password"),
    ("password-newline", _conn(HOST, "sk-or-v1-abc\nX-Evil: 1"), "password"),
    ("host-scheme", _conn("ftp://openrouter.ai"), "host"),
    ("host-credentials", _conn(f"https://admin:{URL_PASSWORD}@openrouter.ai"), "host"),
    ("host-pasted-key", _conn(PASTED), "host"),
    ("host-pasted-mgmt-key", _conn(MGMT), "host"),
    ("host-pasted-mgmt-key-with-scheme", _conn(PASTED_MGMT), "host"),
    ("host-no-name", _conn("https://"), "host"),
    ("host-bad-port", _conn("https://openrouter.ai:99999"), "host"),
    ("host-query", _conn("https://openrouter.ai/api/v1?key=1"), "host"),
    ("host-space", _conn("https://open router.ai"), "host"),
    ("timeout-zero", _conn(HOST, timeout=0), "timeout"),
    ("timeout-below-minimum", _conn(HOST, timeout=0.01), "timeout"),
    ("timeout-negative", _conn(HOST, timeout=-5), "timeout"),
    ("timeout-text", _conn(HOST, timeout="soon"), "timeout"),
    ("timeout-bool", _conn(HOST, timeout=True), "timeout"),
    ("timeout-nan", _conn(HOST, timeout="nan"), "timeout"),
    ("timeout-inf", _conn(HOST, timeout="inf"), "timeout"),
    ("timeout-huge", _conn(HOST, timeout="1e999"), "timeout"),
    ("max-retries-negative", _conn(HOST, max_retries=-1), "max_retries"),
    ("max-retries-double-minus", _conn(HOST, max_retries="--1"), "max_retries"),
    ("max-retries-plus-minus", _conn(HOST, max_retries="+-1"), "max_retries"),
    ("max-retries-fraction", _conn(HOST, max_retries=1.5), "max_retries"),
    ("max-retries-text", _conn(HOST, max_retries="many"), "max_retries"),
    ("max-retries-above-maximum", _conn(HOST, max_retries=21), "max_retries"),
    ("max-retries-exponent", _conn(HOST, max_retries="1e3"), "max_retries"),
    ("max-retries-huge", _conn(HOST, max_retries="9" * 400), "max_retries"),
    ("max-retries-bool", _conn(HOST, max_retries=True), "max_retries"),
    ("max-retry-wait-negative", _conn(HOST, max_retry_wait=-1), "max_retry_wait"),
    ("max-retry-wait-inf", _conn(HOST, max_retry_wait="inf"), "max_retry_wait"),
    ("workspace-text", _conn(HOST, workspace_id="nope"), "workspace_id"),
    ("workspace-int", _conn(HOST, workspace_id=5), "workspace_id"),
    ("referer-newline", _conn(HOST, http_referer="https://a\r\nX-Evil: 1"), "http_referer"),
    ("referer-int", _conn(HOST, http_referer=5), "http_referer"),
    ("referer-pasted-key", _conn(HOST, http_referer=PASTED), "http_referer"),
    ("title-not-latin1", _conn(HOST, app_title="Tenants €"), "app_title"),
    ("title-pasted-mgmt", _conn(HOST, app_title=MGMT), "app_title"),
    ("categories-list-of-ints", _conn(HOST, app_categories=[1]), "app_categories"),
    ("categories-newline", _conn(HOST, app_categories="a\nb"), "app_categories"),
]


@pytest.mark.parametrize(
    ("connection", "field"), [c[1:] for c in CONNECTION_CASES], ids=[c[0] for c in CONNECTION_CASES]
)
def test_connection_refuses_bad_fields(
    fake: LocalOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    connection: dict[str, Any],
    field: str,
) -> None:
    conn = _resolve(connection, fake)
    if conn["host"] is HOST:
        conn["host"] = fake.base_url
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))
    exc = refused(
        fake,
        caplog,
        lambda: OpenRouterHook().get_key(HASH),
        field=field,
        error=OpenRouterConnectionConfigError,
    )
    assert "openrouter_default" in str(exc)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param("not json", "extra", id="extra-not-json"),
        pytest.param("[1, 2]", "extra", id="extra-a-list"),
    ],
)
def test_connection_refuses_bad_extra_json(
    fake: LocalOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    extra: str,
    field: str,
) -> None:
    # The URI form carries the extras as text, where malformed JSON can occur.
    conn = {"conn_type": "openrouter", "host": fake.base_url, "password": fake.management_key, "extra": extra}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))
    refused(
        fake,
        caplog,
        lambda: OpenRouterHook().get_key(HASH),
        field=field,
        error=OpenRouterConnectionConfigError,
    )


# ------------------------------------------------------------------------------------------ operators ---

CREATE_OK: dict[str, Any] = {"task_id": "create", "name": "tenant-new", "deliver_to_callable": deliver}

# Values that are bad whether given literally or rendered from a template: (id, field, value).
CREATE_BAD: list[tuple[str, str, Any]] = [
    ("name-empty", "name", ""),
    ("name-blank", "name", "  "),
    ("name-newline", "name", "tenant\nacme"),
    ("name-nul", "name", "tenant\x00acme"),
    ("name-10000", "name", "x" * 10_000),
    ("name-pasted-key", "name", PASTED),
    ("limit-empty", "limit", ""),
    ("limit-negative", "limit", -1),
    ("limit-text", "limit", "ten"),
    ("limit-nan", "limit", float("nan")),
    ("limit-huge", "limit", 10**400),
    ("limit-above-max", "limit", 5e9),
    ("limit-reset-empty", "limit_reset", ""),
    ("limit-reset-unknown", "limit_reset", "yearly"),
    ("byok-text", "include_byok_in_limit", "maybe"),
    ("byok-empty", "include_byok_in_limit", ""),
    ("expires-empty", "expires_at", ""),
    ("expires-naive", "expires_at", "2040-01-01T00:00:00"),
    ("expires-words", "expires_at", "next tuesday"),
    ("expires-overflow", "expires_at", "9999-12-31T23:59:59-05:00"),
    ("workspace-empty", "workspace_id", ""),
    ("workspace-text", "workspace_id", "default"),
    ("creator-empty", "creator_user_id", ""),
    ("creator-pasted-key", "creator_user_id", PASTED_MGMT),
    ("variable-empty", "deliver_to_variable", ""),
    ("variable-too-long", "deliver_to_variable", "v" * 251),
    ("variable-newline", "deliver_to_variable", "a\nb"),
]
# Bad only as literals (not templated, or rejected for their type).
CREATE_LITERAL_ONLY: list[tuple[str, str, Any]] = [
    ("name-int", "name", 5),
    ("limit-bool", "limit", True),
    ("expires-naive-datetime", "expires_at", dt.datetime(2040, 1, 1)),
    ("expires-date", "expires_at", dt.date(2040, 1, 1)),
    ("workspace-int", "workspace_id", 5),
    ("creator-int", "creator_user_id", 7),
    ("if-exists-unknown", "if_exists", "overwrite"),
    ("if-exists-empty", "if_exists", ""),
    ("xcom-text", "push_plaintext_to_xcom", "yes"),
    ("callable-text", "deliver_to_callable", "vault"),
    ("conn-id-empty", "openrouter_conn_id", ""),
    ("conn-id-space", "openrouter_conn_id", "my conn"),
    ("conn-id-pasted-key", "openrouter_conn_id", PASTED),
]
# Bad only once rendered (a literal in the past is left for execute so that a DAG file keeps importing).
CREATE_RENDERED_ONLY: list[tuple[str, str, Any]] = [
    ("expires-past", "expires_at", "2001-01-01T00:00:00Z"),
    ("limit-none-text-lowercase", "limit", "none"),
    ("limit-null-text", "limit", "null"),
]

UPDATE_BAD: list[tuple[str, str, Any]] = [
    ("key-hash-short", "key_hash", "abc"),
    ("key-hash-pasted-key", "key_hash", PASTED),
    ("key-hash-empty", "key_hash", ""),
    ("key-name-empty", "key_name", ""),
    ("key-name-newline", "key_name", "a\nb"),
    ("name-empty", "name", ""),
    ("name-newline", "name", "tenant\nacme"),
    ("name-10000", "name", "x" * 10_000),
    ("name-pasted-key", "name", PASTED),
    ("disabled-text", "disabled", "maybe"),
    ("disabled-empty", "disabled", ""),
    ("limit-empty", "limit", ""),
    ("limit-blank", "limit", "  "),
    ("limit-negative", "limit", -2),
    ("limit-huge", "limit", 10**400),
    ("limit-nan", "limit", float("nan")),
    ("limit-reset-empty", "limit_reset", ""),
    ("limit-reset-unknown", "limit_reset", "hourly"),
    ("byok-empty", "include_byok_in_limit", ""),
    ("byok-text", "include_byok_in_limit", "maybe"),
    ("workspace-empty", "workspace_id", ""),
    ("workspace-text", "workspace_id", "w1"),
]
UPDATE_LITERAL_ONLY: list[tuple[str, str, Any]] = [
    ("byok-none", "include_byok_in_limit", None),
    ("workspace-none", "workspace_id", None),
    ("disabled-int", "disabled", 1),
    ("missing-ok-text", "missing_ok", "yes"),
    ("conn-id-empty", "openrouter_conn_id", ""),
]

DELETE_BAD: list[tuple[str, str, Any]] = [
    ("key-hash-short", "key_hash", "xyz"),
    ("key-hash-pasted-key", "key_hash", PASTED),
    ("key-hash-pasted-mgmt", "key_hash", MGMT),
    ("key-hash-empty", "key_hash", ""),
    ("key-name-empty", "key_name", ""),
    ("key-name-blank", "key_name", "   "),
    ("key-name-newline", "key_name", "a\nb"),
    ("key-name-pasted-key", "key_name", PASTED_MGMT),
]
DELETE_LITERAL_ONLY: list[tuple[str, str, Any]] = [
    ("missing-ok-text", "missing_ok", "yes"),
    ("conn-id-int", "openrouter_conn_id", 5),
]


def _update_kwargs(field: str, value: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"task_id": "update"}
    if field not in ("key_hash", "key_name"):
        kwargs["key_name"] = "tenant-acme"
    kwargs[field] = value
    if field in ("key_hash", "key_name", "openrouter_conn_id"):
        kwargs["limit"] = 20
    return kwargs


def _delete_kwargs(field: str, value: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"task_id": "delete"}
    if field not in ("key_hash", "key_name"):
        kwargs["key_name"] = "tenant-acme"
    kwargs[field] = value
    return kwargs


OPERATORS: dict[str, tuple[type[Any], Callable[[str, Any], dict[str, Any]]]] = {
    "create": (CreateApiKeyOperator, lambda field, value: {**CREATE_OK, field: value}),
    "update": (UpdateApiKeyOperator, _update_kwargs),
    "delete": (DeleteApiKeyOperator, _delete_kwargs),
}
LITERAL_CASES = (
    [("create", *case) for case in CREATE_BAD + CREATE_LITERAL_ONLY]
    + [("update", *case) for case in UPDATE_BAD + UPDATE_LITERAL_ONLY]
    + [("delete", *case) for case in DELETE_BAD + DELETE_LITERAL_ONLY]
)
RENDERED_CASES = (
    [("create", *case) for case in CREATE_BAD + CREATE_RENDERED_ONLY]
    + [("update", *case) for case in UPDATE_BAD]
    + [("delete", *case) for case in DELETE_BAD]
)


@pytest.mark.parametrize(
    ("operator", "field", "value"),
    [c[:1] + c[2:] for c in LITERAL_CASES],
    ids=[f"{c[0]}-{c[1]}" for c in LITERAL_CASES],
)
def test_operators_refuse_bad_literals_at_parse_time(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, operator: str, field: str, value: Any
) -> None:
    cls, kwargs_for = OPERATORS[operator]
    kwargs = kwargs_for(field, _resolve(value, conn_env))
    refused(conn_env, caplog, lambda: cls(**kwargs), field=field)


def _templated(operator: str, field: str) -> tuple[Any, dict[str, Any]]:
    cls, kwargs_for = OPERATORS[operator]
    return cls, kwargs_for(field, "{{ params.value }}")


@pytest.mark.parametrize(
    ("operator", "field", "value"),
    [c[:1] + c[2:] for c in RENDERED_CASES],
    ids=[f"{c[0]}-{c[1]}" for c in RENDERED_CASES],
)
def test_operators_refuse_bad_rendered_values_before_any_request(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, operator: str, field: str, value: Any
) -> None:
    cls, kwargs = _templated(operator, field)
    op = cls(**kwargs)  # a template is not checked when the DAG file is parsed
    context: dict[str, Any] = {"params": {"value": _resolve(value, conn_env)}}
    op.render_template_fields(context)

    refused(conn_env, caplog, lambda: op.execute(context), field=field)


# Templates rendered natively (``render_template_as_native_obj=True``): the value keeps its Python type.
NATIVE_CASES: list[tuple[str, str, Any]] = [
    ("create", "limit", 10**400),
    ("create", "limit", ""),
    ("create", "expires_at", dt.datetime(2040, 1, 1)),
    ("create", "workspace_id", 5),
    ("create", "name", ["tenant"]),
    ("update", "limit", ""),
    ("update", "limit", float("inf")),
    ("update", "disabled", 1),
    ("update", "workspace_id", None),
    ("delete", "key_hash", 12345),
]


@pytest.mark.parametrize(
    ("operator", "field", "value"), NATIVE_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]!r:.20}" for c in NATIVE_CASES]
)
def test_operators_refuse_bad_native_renderings(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, operator: str, field: str, value: Any
) -> None:
    from airflow.sdk import DAG

    cls, kwargs = _templated(operator, field)
    with DAG("native", schedule=None, render_template_as_native_obj=True):
        op = cls(**kwargs)
    context: dict[str, Any] = {"params": {"value": value}}
    op.render_template_fields(context)
    assert getattr(op, field) == value or value != value  # rendered to the Python value itself
    refused(conn_env, caplog, lambda: op.execute(context), field=field)


def test_an_empty_limit_no_longer_removes_a_limit(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """The typo that used to make a tenant's spending unlimited: a Variable holding "" for the new limit."""
    op = UpdateApiKeyOperator(task_id="update", key_name="tenant-acme", limit="{{ params.limit }}")
    context: dict[str, Any] = {"params": {"limit": ""}}
    op.render_template_fields(context)
    refused(conn_env, caplog, lambda: op.execute(context), field="limit")
    acme = next(key for key in conn_env.keys(include_management=False) if key["name"] == "tenant-acme")
    assert acme["limit"] == 10.0
    assert acme["limit_reset"] == "monthly"


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
def test_a_template_clears_a_limit_by_rendering_none(conn_env: LocalOpenRouter, native: bool) -> None:
    """The documented way to clear from a template: render Python's None (the text "None" without native
    rendering)."""
    from airflow.sdk import DAG

    key = conn_env.add_key(f"tenant-clear-{native}", limit=3.0, limit_reset="daily")
    with DAG(f"clear_{native}", schedule=None, render_template_as_native_obj=native):
        op = UpdateApiKeyOperator(
            task_id="update", key_hash=key.hash, limit="{{ params.limit }}", limit_reset="{{ params.reset }}"
        )
    context: dict[str, Any] = {"params": {"limit": None, "reset": None}}
    op.render_template_fields(context)
    assert op.limit == (None if native else "None")
    result = op.execute(context)
    assert result["changed_fields"] == ["limit", "limit_reset"]
    assert conn_env.get_key_state(key.hash)["limit"] is None


def test_workspace_spellings_are_sent_canonical(conn_env: LocalOpenRouter) -> None:
    spellings = [
        "{" + WORKSPACE + "}",
        "urn:uuid:" + WORKSPACE,
        WORKSPACE.replace("-", ""),
        WORKSPACE.upper(),
    ]
    hook = OpenRouterHook()
    for number, spelling in enumerate(spellings):
        conn_env.clear_requests()
        created = hook.create_key(f"spelled-{number}", workspace_id=spelling)
        (request,) = conn_env.requests
        assert request.body["workspace_id"] == WORKSPACE
        assert created.api_key.workspace_id == WORKSPACE
        hook.delete_key(created.hash)
    listed = [key.name for key in hook.list_keys(workspace_id=WORKSPACE.upper())]
    assert "tenant-acme" in listed


# --------------------------------------------------------------------------------------------- sensor ---

SENSOR_OK: dict[str, Any] = {"task_id": "watch", "key_name": "tenant-acme", "usage_at_least": 1.0}

SENSOR_BAD: list[tuple[str, str, Any]] = [
    ("key-hash-short", "key_hash", "abc"),
    ("key-hash-pasted-key", "key_hash", PASTED),
    ("key-hash-empty", "key_hash", ""),
    ("key-name-empty", "key_name", ""),
    ("key-name-newline", "key_name", "a\nb"),
    ("key-name-pasted-mgmt", "key_name", MGMT),
    ("window-empty", "usage_window", ""),
    ("window-unknown", "usage_window", "yearly"),
    ("usage-empty", "usage_at_least", ""),
    ("usage-negative", "usage_at_least", -1),
    ("usage-nan", "usage_at_least", float("nan")),
    ("usage-huge", "usage_at_least", 10**400),
    ("fraction-zero", "limit_fraction_at_least", 0),
    ("fraction-percent", "limit_fraction_at_least", 80),
    ("fraction-text", "limit_fraction_at_least", "eighty"),
    ("remaining-empty", "limit_remaining_at_most", ""),
    ("remaining-inf", "limit_remaining_at_most", float("inf")),
]
SENSOR_LITERAL_ONLY: list[tuple[str, str, Any]] = [
    ("poke-interval-zero", "poke_interval", 0),
    ("poke-interval-nan", "poke_interval", float("nan")),
    ("poke-interval-inf", "poke_interval", float("inf")),
    ("poke-interval-negative", "poke_interval", -1),
    ("poke-interval-text", "poke_interval", "soon"),
    ("poke-interval-tiny-timedelta", "poke_interval", dt.timedelta(milliseconds=1)),
    ("timeout-inf", "timeout", float("inf")),
    ("timeout-nan", "timeout", float("nan")),
    ("timeout-negative", "timeout", -1),
    ("mode-unknown", "mode", "wait"),
    ("soft-fail-text", "soft_fail", "yes"),
    ("include-byok-text", "include_byok", "yes"),
    ("match-all-int", "match_all", 1),
    ("deferrable-text", "deferrable", "true"),
    ("max-failures-negative", "max_consecutive_failures", -1),
    ("max-failures-bool", "max_consecutive_failures", True),
    ("conn-id-empty", "openrouter_conn_id", ""),
]


def _sensor_kwargs(field: str, value: Any) -> dict[str, Any]:
    kwargs = dict(SENSOR_OK)
    if field == "key_hash":
        del kwargs["key_name"]
    kwargs[field] = value
    return kwargs


SENSOR_LITERAL_CASES = SENSOR_BAD + SENSOR_LITERAL_ONLY


@pytest.mark.parametrize(
    ("field", "value"), [c[1:] for c in SENSOR_LITERAL_CASES], ids=[c[0] for c in SENSOR_LITERAL_CASES]
)
def test_sensor_refuses_bad_literals_at_parse_time(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, field: str, value: Any
) -> None:
    kwargs = _sensor_kwargs(field, _resolve(value, conn_env))
    refused(conn_env, caplog, lambda: OpenRouterKeyUsageSensor(**kwargs), field=field)


@pytest.mark.parametrize(("field", "value"), [c[1:] for c in SENSOR_BAD], ids=[c[0] for c in SENSOR_BAD])
def test_sensor_refuses_bad_rendered_values_before_any_request(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, field: str, value: Any
) -> None:
    op = OpenRouterKeyUsageSensor(**_sensor_kwargs(field, "{{ params.value }}"))
    context: dict[str, Any] = {"params": {"value": _resolve(value, conn_env)}}
    op.render_template_fields(context)
    refused(conn_env, caplog, lambda: op.execute(context), field=field)


def test_sensor_conditions_all_cleared_by_templates(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    op = OpenRouterKeyUsageSensor(task_id="watch", key_name="tenant-acme", usage_at_least="{{ params.v }}")
    context: dict[str, Any] = {"params": {"v": None}}
    op.render_template_fields(context)
    refused(
        conn_env,
        caplog,
        lambda: op.execute(context),
        field="usage_at_least/limit_fraction_at_least/limit_remaining_at_most",
    )


# -------------------------------------------------------------------------------------------- trigger ---

TRIGGER_OK: dict[str, Any] = {"key_hash": HASH, "usage_at_least": 1.0}
TRIGGER_CASES: list[tuple[str, str, Any]] = [
    ("key-hash-int", "key_hash", 5),
    ("key-hash-none", "key_hash", None),
    ("key-hash-short", "key_hash", "abc"),
    ("key-hash-pasted-key", "key_hash", PASTED),
    ("key-hash-pasted-mgmt", "key_hash", MGMT),
    ("key-name-int", "key_name", 5),
    ("key-name-empty", "key_name", ""),
    ("key-name-newline", "key_name", "a\nb"),
    ("window-int", "usage_window", 5),
    ("window-unknown", "usage_window", "yearly"),
    ("usage-nan", "usage_at_least", float("nan")),
    ("usage-negative", "usage_at_least", -1),
    ("usage-empty", "usage_at_least", ""),
    ("usage-huge", "usage_at_least", 10**400),
    ("fraction-zero", "limit_fraction_at_least", 0),
    ("fraction-two", "limit_fraction_at_least", 2),
    ("remaining-list", "limit_remaining_at_most", [1]),
    ("byok-text", "include_byok", "yes"),
    ("match-all-int", "match_all", 1),
    ("conn-id-empty", "openrouter_conn_id", ""),
    ("conn-id-int", "openrouter_conn_id", 5),
    ("conn-id-space", "openrouter_conn_id", "a b"),
    ("poll-zero", "poll_interval", 0),
    ("poll-nan", "poll_interval", float("nan")),
    ("poll-inf", "poll_interval", float("inf")),
    ("poll-negative", "poll_interval", -1),
    ("poll-text", "poll_interval", "x"),
    ("poll-bool", "poll_interval", True),
    ("deadline-empty", "deadline", ""),
    ("deadline-words", "deadline", "tomorrow"),
    ("deadline-naive", "deadline", "2040-01-01T00:00:00"),
    ("deadline-int", "deadline", 5),
    ("deadline-overflow", "deadline", "9999-12-31T23:59:59-05:00"),
    ("max-failures-negative", "max_consecutive_failures", -1),
    ("max-failures-fraction", "max_consecutive_failures", 1.5),
    ("max-failures-text", "max_consecutive_failures", "x"),
    ("max-failures-bool", "max_consecutive_failures", True),
]


@pytest.mark.parametrize(
    ("field", "value"), [c[1:] for c in TRIGGER_CASES], ids=[c[0] for c in TRIGGER_CASES]
)
def test_trigger_refuses_bad_arguments(
    conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture, field: str, value: Any
) -> None:
    kwargs = {**TRIGGER_OK, field: _resolve(value, conn_env)}
    refused(conn_env, caplog, lambda: OpenRouterKeyUsageTrigger(**kwargs), field=field)


def test_trigger_without_a_condition(conn_env: LocalOpenRouter, caplog: pytest.LogCaptureFixture) -> None:
    refused(
        conn_env,
        caplog,
        lambda: OpenRouterKeyUsageTrigger(key_hash=HASH),
        field="usage_at_least/limit_fraction_at_least/limit_remaining_at_most",
    )


# ------------------------------------------------------------------------------------------- counts ---

COUNTS: dict[str, int] = {
    "hook methods": len(HOOK_CASES),
    "connection and extras": len(CONNECTION_CASES) + 2,
    "CreateApiKeyOperator at parse time": sum(1 for c in LITERAL_CASES if c[0] == "create"),
    "CreateApiKeyOperator after rendering": sum(1 for c in RENDERED_CASES if c[0] == "create")
    + sum(1 for c in NATIVE_CASES if c[0] == "create"),
    "UpdateApiKeyOperator at parse time": sum(1 for c in LITERAL_CASES if c[0] == "update"),
    "UpdateApiKeyOperator after rendering": sum(1 for c in RENDERED_CASES if c[0] == "update")
    + sum(1 for c in NATIVE_CASES if c[0] == "update")
    + 1,
    "DeleteApiKeyOperator at parse time": sum(1 for c in LITERAL_CASES if c[0] == "delete"),
    "DeleteApiKeyOperator after rendering": sum(1 for c in RENDERED_CASES if c[0] == "delete")
    + sum(1 for c in NATIVE_CASES if c[0] == "delete"),
    "OpenRouterKeyUsageSensor at parse time": len(SENSOR_LITERAL_CASES),
    "OpenRouterKeyUsageSensor after rendering": len(SENSOR_BAD) + 1,
    "OpenRouterKeyUsageTrigger": len(TRIGGER_CASES) + 1,
}


def test_bad_input_counts(capsys: pytest.CaptureFixture[str]) -> None:
    width = max(map(len, COUNTS))
    lines = [f"{name.ljust(width)}  {count:4d}" for name, count in COUNTS.items()]
    lines.append(f"{'total'.ljust(width)}  {sum(COUNTS.values()):4d}")
    with capsys.disabled():
        print("\nBad inputs tried per entry point:\n" + "\n".join(lines))
    assert all(count >= 5 for count in COUNTS.values())
