"""OpenRouterHook against the local OpenRouter over real HTTP: endpoints, paging, errors, validation, secrets.

No Airflow database: the connection comes from ``AIRFLOW_CONN_OPENROUTER_DEFAULT``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    KeyNameNotUniqueError,
    NotFoundError,
    OpenRouterAPIError,
    OpenRouterValidationError,
    PaymentRequiredError,
    RateLimitedError,
    ServerError,
    UnreadableResponseError,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.models import UNSET, ApiKey, CreatedApiKey, Credits, CurrentKey
from airflow_provider_openrouter.testing import HtmlError, Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter

WORKSPACE = "7d7e2f0c-5b1a-4c39-9a53-2f0a3c1e9b11"
MISSING_HASH = "0" * 64


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    """The local OpenRouter as the default connection; retries fast and without jitter."""
    return openrouter_connection(max_retries=2, max_retry_wait=0.01)


@pytest.fixture
def hook(fake: LocalOpenRouter) -> OpenRouterHook:
    return OpenRouterHook(retry_jitter=lambda delay: delay)


def api_requests(fake: LocalOpenRouter, method: str | None = None) -> list[Any]:
    return [r for r in fake.requests if method is None or r.method == method]


# --------------------------------------------------------------------------------------------- reads ---


def test_get_current_key_reports_management_key(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    current = hook.get_current_key()
    assert isinstance(current, CurrentKey)
    assert current.is_management_key is True
    assert current.label.startswith("sk-or-v1-")
    assert fake.management_key not in repr(current)


def test_get_credits(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.total_credits = 42.5
    credits = hook.get_credits()
    assert isinstance(credits, Credits)
    assert credits.total_credits == 42.5
    assert credits.remaining == pytest.approx(42.5 - credits.total_usage)


def test_get_key_returns_typed_key(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    created = fake.add_key("tenant-a", limit=5, limit_reset="daily")
    key = hook.get_key(created.hash)
    assert isinstance(key, ApiKey)
    assert (key.hash, key.name, key.limit, key.limit_reset) == (created.hash, "tenant-a", 5.0, "daily")
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", f"/api/v1/keys/{created.hash}")


def test_requests_carry_the_standard_headers(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    from airflow_provider_openrouter import __version__

    hook.get_current_key()
    headers = fake.requests[-1].headers
    assert headers["User-Agent"] == f"airflow-provider-openrouter/{__version__}"
    assert headers["Accept"] == "application/json"
    assert "Authorization" not in headers  # the fake never records it; it did authenticate the request
    assert fake.requests[-1].key_hash is not None


def test_list_keys_walks_every_page(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    made = {fake.add_key(f"tenant-{i:03d}").hash for i in range(250)}
    keys = list(hook.list_keys())
    assert {key.hash for key in keys} == made
    assert len(keys) == 250
    offsets = [r.query.get("offset", "0") for r in fake.requests]
    # Each page starts with the last key of the one before (to notice shifts); the short third page ends it.
    assert offsets == ["0", "99", "198"]


def test_list_keys_stops_after_an_empty_page(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    for i in range(200):
        fake.add_key(f"tenant-{i:03d}")
    assert len(list(hook.list_keys())) == 200
    assert [r.query.get("offset", "0") for r in fake.requests] == ["0", "99", "198"]


@pytest.mark.parametrize("seed", range(12))
def test_a_walk_reports_every_lasting_key_once_while_others_create_and_delete(
    hook: OpenRouterHook, fake: LocalOpenRouter, seed: int
) -> None:
    # Newest-first offset paging: a create between pages shifts every older key down (a key repeated), a
    # delete shifts them up (a key skipped). The walk must make up for both.
    import random

    rng = random.Random(seed)
    keys = [fake.add_key(f"tenant-{i:03d}").hash for i in range(rng.randint(150, 420))]
    doomed = set(rng.sample(keys, 40))
    pending = list(doomed)
    other = OpenRouterHook()  # another writer
    walk = hook.list_keys()
    reported: list[str] = []
    for key in walk:
        reported.append(key.hash)
        if len(reported) % 60 == 0:  # between or within pages: the walk is lazy, one page at a time
            for _ in range(rng.randint(0, 3)):
                fake.add_key("newcomer")
            for _ in range(rng.randint(0, 3)):
                if pending:
                    other.delete_key(pending.pop())
    lasting = set(keys) - doomed | set(pending)
    assert len(reported) == len(set(reported)), "a key was reported twice"
    assert lasting <= set(reported), f"{len(lasting - set(reported))} lasting key(s) skipped"


def test_a_walk_that_starts_over_reports_no_key_twice(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    # The last key of the first page anchors the second; deleted, it is found neither there nor a page back,
    # so the walk starts over from the top and must skip the hundred keys it reported already.
    keys = [fake.add_key(f"tenant-{i:03d}").hash for i in range(250)]
    reported: list[str] = []
    for key in hook.list_keys():
        reported.append(key.hash)
        if len(reported) == 100:
            OpenRouterHook().delete_key(key.hash)
    offsets = [r.query.get("offset", "0") for r in fake.requests if r.method == "GET"]
    assert offsets.count("0") == 3  # the first page, the page back, the start over
    assert len(reported) == len(set(reported)), "a key was reported twice"
    assert set(keys) == set(reported)


def test_list_keys_is_lazy(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    for i in range(150):
        fake.add_key(f"tenant-{i:03d}")
    keys = hook.list_keys()
    assert fake.requests == []  # nothing fetched until iterated
    first = next(keys)
    assert isinstance(first, ApiKey)
    assert len(fake.requests) == 1  # one page fetched, not all of them
    assert sum(1 for _ in keys) == 149


def test_list_keys_filters(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.add_key("live")
    fake.add_key("off", disabled=True)
    fake.add_key("old", expires_at=fake.now + dt.timedelta(seconds=60))
    fake.add_key("elsewhere", workspace_id=WORKSPACE)
    fake.advance_clock(120)
    assert {k.name for k in hook.list_keys()} == {"live"}
    assert {k.name for k in hook.list_keys(include_disabled=True)} == {"live", "off"}
    assert {k.name for k in hook.list_keys(include_disabled=True, include_expired=True)} == {
        "live",
        "off",
        "old",
    }
    assert {k.name for k in hook.list_keys(workspace_id=WORKSPACE)} == {"elsewhere"}
    query = fake.requests[-1].query
    assert query["workspace_id"] == WORKSPACE
    assert query["include_disabled"] == "false"  # booleans on the wire are lowercase


def test_connection_workspace_is_the_default(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT", local_openrouter.connection_json(workspace_id=WORKSPACE)
    )
    local_openrouter.add_key("default-workspace")
    local_openrouter.add_key("elsewhere", workspace_id=WORKSPACE)
    hook = OpenRouterHook()
    assert [k.name for k in hook.list_keys()] == ["elsewhere"]
    created = hook.create_key("new-one")
    assert created.api_key.workspace_id == WORKSPACE
    assert local_openrouter.requests[-1].body["workspace_id"] == WORKSPACE


def test_find_key_by_name(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    for i in range(120):
        fake.add_key(f"tenant-{i:03d}")
    wanted = fake.add_key("needle", disabled=True)
    found = hook.find_key_by_name("needle")
    assert found is not None
    assert found.hash == wanted.hash
    assert hook.find_key_by_name("absent") is None
    assert fake.requests[-1].query["include_disabled"] == "true"
    assert fake.requests[-1].query["include_expired"] == "true"


def test_find_key_by_name_refuses_ambiguity(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    first = fake.add_key("twin")
    second = fake.add_key("twin")
    with pytest.raises(KeyNameNotUniqueError) as exc:
        hook.find_key_by_name("twin")
    assert sorted(exc.value.hashes) == sorted([first.hash, second.hash])
    assert "twin" in str(exc.value)


# -------------------------------------------------------------------------------------------- writes ---


def test_create_key_sends_the_given_fields(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    expires = dt.datetime(2099, 12, 31, 23, 59, 59, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    created = hook.create_key(
        "tenant-a", limit=10, limit_reset="monthly", include_byok_in_limit=True, expires_at=expires
    )
    assert isinstance(created, CreatedApiKey)
    assert created.plaintext in fake.issued_plaintexts
    assert fake.has_key(created.hash)
    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/api/v1/keys", 201)
    assert request.body == {
        "name": "tenant-a",
        "limit": 10.0,
        "limit_reset": "monthly",
        "include_byok_in_limit": True,
        "expires_at": "2099-12-31T21:59:59Z",  # UTC, whole seconds: the only form the API accepts
    }
    assert request.headers["Content-Type"] == "application/json"


def test_create_key_minimal_body(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    hook.create_key("bare")
    assert fake.requests[-1].body == {"name": "bare"}


def test_create_key_accepts_pendulum_and_iso_strings(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    import pendulum

    hook.create_key("p", expires_at=pendulum.datetime(2099, 1, 2, 3, 4, 5, tz="America/New_York"))
    assert fake.requests[-1].body["expires_at"] == "2099-01-02T08:04:05Z"
    hook.create_key("s", expires_at="2099-06-01T12:00:00+00:00")
    assert fake.requests[-1].body["expires_at"] == "2099-06-01T12:00:00Z"


def test_create_key_masks_the_plaintext(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    created = hook.create_key("masked")
    assert created.plaintext not in str(redact(f"the key is {created.plaintext}"))


@pytest.mark.parametrize(
    ("changes", "sent"),
    [
        pytest.param({"limit": None}, {"limit": None}, id="limit-None-clears"),
        pytest.param({"limit": 3}, {"limit": 3.0}, id="limit"),
        pytest.param({"limit_reset": None}, {"limit_reset": None}, id="limit_reset-None-clears"),
        pytest.param({"disabled": True}, {"disabled": True}, id="disabled"),
        pytest.param({"name": "renamed"}, {"name": "renamed"}, id="name"),
        pytest.param({"include_byok_in_limit": True}, {"include_byok_in_limit": True}, id="byok"),
        pytest.param({"workspace_id": WORKSPACE}, {"workspace_id": WORKSPACE}, id="workspace-move"),
        pytest.param(
            {"name": "n", "limit": UNSET, "disabled": False},
            {"name": "n", "disabled": False},
            id="UNSET-omitted",
        ),
    ],
)
def test_update_key_sends_only_named_fields(
    hook: OpenRouterHook, fake: LocalOpenRouter, changes: dict[str, Any], sent: dict[str, Any]
) -> None:
    key = fake.add_key("tenant", limit=5, limit_reset="daily")
    updated = hook.update_key(key.hash, **changes)
    [request] = fake.requests
    assert (request.method, request.path) == ("PATCH", f"/api/v1/keys/{key.hash}")
    assert request.body == sent
    assert isinstance(updated, ApiKey)
    for field, value in sent.items():
        assert getattr(updated, field) == value


def test_update_key_leaves_other_fields_alone(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant", limit=5, limit_reset="daily")
    updated = hook.update_key(key.hash, limit=None)
    assert updated.limit is None
    assert updated.limit_reset == "daily"


def test_delete_key(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    key = fake.add_key("doomed")
    assert hook.delete_key(key.hash) is True
    assert not fake.has_key(key.hash)
    assert hook.delete_key(key.hash, missing_ok=True) is False
    with pytest.raises(NotFoundError) as exc:
        hook.delete_key(key.hash)
    assert (exc.value.method, exc.value.path, exc.value.status) == ("DELETE", f"/keys/{key.hash}", 404)
    assert [r.method for r in fake.requests] == ["DELETE"] * 3  # 404 is an answer, never retried


def test_hook_holds_no_per_call_state(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hashes = [fake.add_key(f"k{i}").hash for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda h: hook.get_key(h).name, hashes))
    assert names == [f"k{i}" for i in range(20)]


# -------------------------------------------------------------------------------------------- errors ---

ERRORS: list[Any] = [
    pytest.param(400, BadRequestError, id="400-bad-request"),
    pytest.param(401, AuthenticationError, id="401-authentication"),
    pytest.param(402, PaymentRequiredError, id="402-payment-required"),
    pytest.param(403, ForbiddenError, id="403-forbidden"),
    pytest.param(404, NotFoundError, id="404-not-found"),
    pytest.param(409, ConflictError, id="409-conflict"),
    pytest.param(418, OpenRouterAPIError, id="418-other"),
    pytest.param(429, RateLimitedError, id="429-rate-limited"),
    pytest.param(500, ServerError, id="500-server"),
    pytest.param(502, ServerError, id="502-server"),
    pytest.param(503, ServerError, id="503-server"),
    pytest.param(504, ServerError, id="504-server"),
]


@pytest.mark.parametrize(("status", "error_class"), ERRORS)
def test_error_status_maps_to_typed_error(
    local_openrouter: LocalOpenRouter,
    openrouter_connection: ConnectOpenRouter,
    status: int,
    error_class: type[OpenRouterAPIError],
) -> None:
    openrouter_connection(max_retries=0)
    key = local_openrouter.add_key("tenant")
    local_openrouter.inject(Status(status, message=f"told you {status}"), method="PATCH")
    with pytest.raises(error_class) as exc:
        OpenRouterHook().update_key(key.hash, limit=1)
    error = exc.value
    assert type(error) is error_class
    assert error.status == status
    assert error.message == f"told you {status}"
    assert (error.method, error.path) == ("PATCH", f"/keys/{key.hash}")
    assert str(error) == f"PATCH /keys/{key.hash} returned {status}: told you {status}"
    assert local_openrouter.management_key not in str(error)


def test_regular_key_gets_the_real_refusal(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    regular = local_openrouter.add_key("just-a-key")
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        json.dumps(
            {"conn_type": "openrouter", "host": local_openrouter.base_url, "password": regular.plaintext}
        ),
    )
    with pytest.raises(ForbiddenError) as exc:
        OpenRouterHook().create_key("not-allowed")
    assert exc.value.status == 403
    assert "management" in exc.value.message.lower()
    assert regular.plaintext not in str(exc.value)


def test_rate_limited_carries_retry_after(
    local_openrouter: LocalOpenRouter, openrouter_connection: ConnectOpenRouter
) -> None:
    openrouter_connection(max_retries=0)
    local_openrouter.inject(Status(429, retry_after=7))
    with pytest.raises(RateLimitedError) as exc:
        OpenRouterHook().get_current_key()
    assert exc.value.retry_after == 7.0


def test_html_error_page_is_a_server_error(
    local_openrouter: LocalOpenRouter, openrouter_connection: ConnectOpenRouter
) -> None:
    openrouter_connection(max_retries=0)
    local_openrouter.inject(HtmlError(502))
    with pytest.raises(ServerError) as exc:
        OpenRouterHook().get_current_key()
    assert exc.value.status == 502
    assert "non-JSON" in exc.value.message


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        pytest.param(HtmlError(200), "not JSON", id="html-page-with-200"),
        pytest.param(Status(200), "no 'data'", id="json-without-data"),
    ],
)
def test_malformed_success_is_unreadable(
    hook: OpenRouterHook, fake: LocalOpenRouter, fault: Any, problem: str
) -> None:
    fake.inject(fault)
    with pytest.raises(UnreadableResponseError) as exc:
        hook.get_current_key()
    assert exc.value.status == 200
    assert problem in exc.value.message
    assert (exc.value.method, exc.value.path) == ("GET", "/key")
    assert len(fake.requests) == 1  # a malformed answer is not retried


# ---------------------------------------------------------------------------------------- validation ---

FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
KEY = "a" * 64

VALIDATION: list[Any] = [
    pytest.param(lambda h: h.create_key(""), "name", id="create-empty-name"),
    pytest.param(lambda h: h.create_key("   "), "name", id="create-blank-name"),
    pytest.param(lambda h: h.create_key(42), "name", id="create-name-not-str"),
    pytest.param(lambda h: h.create_key("n", limit=-1), "limit", id="create-negative-limit"),
    pytest.param(lambda h: h.create_key("n", limit=float("nan")), "limit", id="create-nan-limit"),
    pytest.param(lambda h: h.create_key("n", limit=float("inf")), "limit", id="create-inf-limit"),
    pytest.param(lambda h: h.create_key("n", limit="lots"), "limit", id="create-limit-text"),
    pytest.param(lambda h: h.create_key("n", limit=True), "limit", id="create-limit-bool"),
    pytest.param(lambda h: h.create_key("n", limit_reset="hourly"), "limit_reset", id="create-bad-reset"),
    pytest.param(
        lambda h: h.create_key("n", include_byok_in_limit="yes"),
        "include_byok_in_limit",
        id="create-byok-str",
    ),
    pytest.param(
        lambda h: h.create_key("n", expires_at=dt.datetime(2099, 1, 1)),
        "expires_at",
        id="create-naive-expiry",
    ),
    pytest.param(
        lambda h: h.create_key("n", expires_at=dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)),
        "expires_at",
        id="create-past-expiry",
    ),
    pytest.param(
        lambda h: h.create_key("n", expires_at="2099-01-01T00:00:00"), "expires_at", id="create-iso-naive"
    ),
    pytest.param(lambda h: h.create_key("n", expires_at="next week"), "expires_at", id="create-expiry-text"),
    pytest.param(lambda h: h.create_key("n", expires_at=12345), "expires_at", id="create-expiry-int"),
    pytest.param(lambda h: h.create_key("n", workspace_id="ws-1"), "workspace_id", id="create-bad-workspace"),
    pytest.param(
        lambda h: h.create_key("n", creator_user_id=""), "creator_user_id", id="create-empty-creator"
    ),
    pytest.param(lambda h: h.get_key("abc"), "key_hash", id="get-short-hash"),
    pytest.param(lambda h: h.get_key("A" * 64), "key_hash", id="get-uppercase-hash"),
    pytest.param(lambda h: h.get_key("g" * 64), "key_hash", id="get-non-hex-hash"),
    pytest.param(lambda h: h.get_key(None), "key_hash", id="get-none-hash"),
    pytest.param(lambda h: h.update_key(KEY), "fields", id="update-nothing"),
    pytest.param(lambda h: h.update_key("x", limit=1), "key_hash", id="update-bad-hash"),
    pytest.param(lambda h: h.update_key(KEY, name=""), "name", id="update-empty-name"),
    pytest.param(lambda h: h.update_key(KEY, disabled="no"), "disabled", id="update-disabled-str"),
    pytest.param(lambda h: h.update_key(KEY, limit=-0.01), "limit", id="update-negative-limit"),
    pytest.param(lambda h: h.update_key(KEY, limit_reset="yearly"), "limit_reset", id="update-bad-reset"),
    pytest.param(lambda h: h.update_key(KEY, workspace_id=None), "workspace_id", id="update-workspace-None"),
    pytest.param(lambda h: h.update_key(KEY, workspace_id="nope"), "workspace_id", id="update-bad-workspace"),
    pytest.param(
        lambda h: h.update_key(KEY, include_byok_in_limit=None),
        "include_byok_in_limit",
        id="update-byok-None",
    ),
    pytest.param(lambda h: h.delete_key("x" * 64), "key_hash", id="delete-bad-hash"),
    pytest.param(lambda h: h.delete_key(KEY, missing_ok="yes"), "missing_ok", id="delete-missing_ok-str"),
    pytest.param(lambda h: h.list_keys(include_disabled="true"), "include_disabled", id="list-disabled-str"),
    pytest.param(lambda h: h.list_keys(include_expired=1), "include_expired", id="list-expired-int"),
    pytest.param(lambda h: h.list_keys(workspace_id="nope"), "workspace_id", id="list-bad-workspace"),
    pytest.param(lambda h: h.find_key_by_name(""), "name", id="find-empty-name"),
    pytest.param(
        lambda h: h.find_key_by_name("n", workspace_id="x"), "workspace_id", id="find-bad-workspace"
    ),
]


@pytest.mark.parametrize(("action", "field"), VALIDATION)
def test_validation_names_the_field_before_any_request(
    hook: OpenRouterHook, fake: LocalOpenRouter, action: Callable[[OpenRouterHook], Any], field: str
) -> None:
    with pytest.raises(OpenRouterValidationError) as exc:
        action(hook)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")
    assert isinstance(exc.value, ValueError)
    assert fake.requests == []


def test_validation_error_names_the_value(hook: OpenRouterHook) -> None:
    with pytest.raises(OpenRouterValidationError, match=r"limit: must be >= 0 \(got -1\)"):
        hook.create_key("n", limit=-1)


def test_numeric_strings_from_templates_are_accepted(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    hook.create_key("templated", limit="12.5")
    assert fake.requests[-1].body["limit"] == 12.5


# ------------------------------------------------------------------------------------------- secrets ---


def test_secrets_never_show(
    hook: OpenRouterHook, fake: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject(Status(503), method="GET", path="/keys/*")  # one retry, logged
    created = hook.create_key("secret-holder", limit=1)
    hook.get_key(created.hash)
    with pytest.raises(NotFoundError) as not_found:
        hook.get_key(MISSING_HASH)
    shown = [
        repr(created),
        str(created),
        repr(created.api_key),
        str(created.to_dict()),
        repr(hook),
        repr(hook._get_config()),
        str(not_found.value),
        caplog.text,
    ]
    assert "retry 1 of 2" in caplog.text
    for secret in [fake.management_key, *fake.issued_plaintexts]:
        for text in shown:
            assert secret not in text
    assert "plaintext" not in created.to_dict()


def test_authentication_error_does_not_echo_the_key(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-or-v1-" + "f" * 64
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        json.dumps({"conn_type": "openrouter", "host": local_openrouter.base_url, "password": wrong}),
    )
    with pytest.raises(AuthenticationError) as exc:
        OpenRouterHook().list_keys().__next__()
    assert exc.value.status == 401
    assert wrong not in str(exc.value)
    assert wrong not in caplog.text


GOOD_KEY = {"hash": "h", "name": "n", "label": "l", "created_at": "t"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            {"data": {**GOOD_KEY, "limit": "sk-or-v1-SECRET"}, "key": "sk-or-v1-SECRET"},
            "wrong type",
            id="bad-number",
        ),
        pytest.param({"data": {"name": "n"}, "key": "sk-or-v1-SECRET"}, "'hash'", id="missing-field"),
        pytest.param({"data": GOOD_KEY, "token": "sk-or-v1-SECRET"}, "plaintext", id="no-key"),
    ],
)
def test_unreadable_create_answer_never_quotes_the_body(
    monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], problem: str
) -> None:
    """A 201 that cannot be read may hold a plaintext key: the error says what is wrong, not what it saw."""
    import http.server
    import threading

    payload = json.dumps(body).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPENROUTER_DEFAULT",
            json.dumps(
                {
                    "conn_type": "openrouter",
                    "host": f"http://127.0.0.1:{server.server_port}/api/v1",
                    "password": "sk-or-v1-management",
                }
            ),
        )
        with pytest.raises(UnreadableResponseError) as exc:
            OpenRouterHook().create_key("n")
    finally:
        server.shutdown()
        server.server_close()
    assert exc.value.status == 201
    assert problem in str(exc.value)
    assert "SECRET" not in str(exc.value)


def test_a_used_hook_copies_and_pickles_without_its_pool_or_key(fake: LocalOpenRouter) -> None:
    import copy
    import pickle

    hook = OpenRouterHook()
    hook.get_current_key()
    pickled = pickle.dumps(hook)
    assert fake.management_key.encode() not in pickled
    for clone in (copy.deepcopy(hook), pickle.loads(pickled)):
        assert clone.openrouter_conn_id == hook.openrouter_conn_id
        assert clone.get_current_key().is_management_key
        assert clone._sync is not hook._sync


def test_the_write_methods_take_exactly_the_declared_key_fields() -> None:
    """The hook's and the operators' signatures are the typed surface of the fields declared on ApiKey."""
    import inspect

    from airflow_provider_openrouter.models import CREATE_FIELDS, UPDATE_FIELDS
    from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator, UpdateApiKeyOperator

    creatable = {f.name for f in CREATE_FIELDS}
    updatable = {f.name for f in UPDATE_FIELDS}
    for method, fields, extra in (
        # ``mask`` says who masks the new plaintext, not a field of the key.
        (OpenRouterHook.create_key, creatable, {"mask"}),
        (OpenRouterHook.acreate_key, creatable, {"mask"}),
        (OpenRouterHook.update_key, updatable, {"key_hash"}),
        (OpenRouterHook.aupdate_key, updatable, {"key_hash"}),
    ):
        assert set(inspect.signature(method).parameters) - {"self"} == fields | extra, method.__name__
    create_params = set(inspect.signature(CreateApiKeyOperator.__init__).parameters)
    update_params = set(inspect.signature(UpdateApiKeyOperator.__init__).parameters)
    assert creatable <= create_params
    assert updatable <= update_params
    assert set(UpdateApiKeyOperator.template_fields) == updatable | {"key_hash", "key_name"}


def test_a_hook_from_a_config_in_hand_uses_it_and_never_looks_the_connection_up(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig

    def no_lookup(conn_id: str) -> None:
        raise AssertionError(f"looked up connection {conn_id!r}")

    monkeypatch.setattr(
        OpenRouterHook, "get_connection", classmethod(lambda cls, conn_id: no_lookup(conn_id))
    )
    config = OpenRouterConnectionConfig(
        conn_id="in_hand", api_key=fake.management_key, base_url=fake.base_url, max_retries=0
    )
    hook = OpenRouterHook.from_config(config)
    assert hook.openrouter_conn_id == "in_hand"
    assert hook.get_current_key().is_management_key
    fake.inject(Status(503), method="GET")
    with pytest.raises(ServerError):
        hook.get_credits()
    assert len(api_requests(fake)) == 2  # the config's max_retries=0: the 503 was not retried


def test_close_releases_the_pool_and_a_later_call_opens_another(hook: OpenRouterHook) -> None:
    hook.close()  # nothing opened yet: nothing to do
    assert hook.get_current_key().is_management_key
    hook.close()
    hook.close()
    assert hook.get_credits().total_credits >= 0
