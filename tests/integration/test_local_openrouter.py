"""The local OpenRouter behaves like the real key-management API, over real HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_openrouter.testing import (
    DropAfterCommit,
    DropBeforeCommit,
    HtmlError,
    Latency,
    LocalOpenRouter,
    LocalOpenRouterControl,
    LocalOpenRouterControlError,
    Status,
)
from airflow_provider_openrouter.testing._capacity import measure_capacity
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess
from airflow_provider_openrouter.testing._state import DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from collections.abc import Iterator

UTC = dt.timezone.utc
OTHER_WORKSPACE = "6f1f2d7e-3b9a-4c1e-9a53-0c5b1e2d3f40"
PLAINTEXT_RE = re.compile(r"sk-or-v1-[0-9a-f]{64}")
KEY_FIELDS = {
    "hash",
    "name",
    "label",
    "disabled",
    "limit",
    "limit_remaining",
    "limit_reset",
    "include_byok_in_limit",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "created_at",
    "updated_at",
    "creator_user_id",
    "workspace_id",
    "expires_at",
    "external_user",
    "last_used_at",
}


class Api:
    """A keep-alive client of the fake's API with one key."""

    def __init__(self, fake: LocalOpenRouter, key: str | None) -> None:
        self.base_url = fake.base_url
        self.session = requests.Session()
        self.session.trust_env = False
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=10, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
def fake(local_openrouter: LocalOpenRouter) -> LocalOpenRouter:
    return local_openrouter


@pytest.fixture
def api(fake: LocalOpenRouter) -> Iterator[Api]:
    client = Api(fake, fake.management_key)
    yield client
    client.session.close()


def assert_error(response: requests.Response, status: int, message_part: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "metadata"}
    assert body["error"]["code"] == status
    assert body["error"]["metadata"] is None
    assert message_part in body["error"]["message"]
    return str(body["error"]["message"])


def stored(fake: LocalOpenRouter | LocalOpenRouterControl) -> list[dict[str, Any]]:
    """Every regular key the fake holds, disabled and expired included."""
    return fake.keys()


def create(api: Api, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = api.ok("POST", "/keys", 201, json={"name": "k", **body})
    return result


# -- GET /key ---------------------------------------------------------------------------------------------


def test_current_key_of_the_management_key(fake: LocalOpenRouter, api: Api) -> None:
    data = api.ok("GET", "/key")["data"]
    assert data["is_management_key"] is True
    assert data["is_provisioning_key"] is True
    assert data["label"] == f"{fake.management_key[:12]}...{fake.management_key[-3:]}"
    assert data["workspace_id"] == DEFAULT_WORKSPACE_ID
    for name in ("allowed_data_regions", "budgets", "effective_budget", "free_model_daily_requests"):
        assert name in data


def test_current_key_of_a_regular_key_reports_its_limit_and_usage(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant", limit=10, limit_reset="monthly")
    fake.add_usage(key.hash, 2.5)
    data = Api(fake, key.plaintext).ok("GET", "/key")["data"]
    assert data["is_management_key"] is False
    assert data["limit"] == 10
    assert data["limit_remaining"] == 7.5
    assert data["usage_monthly"] == 2.5
    assert data["effective_budget"]["scope"] == "key_limit"
    assert data["effective_budget"]["spend_usd"] == 2.5


# -- authentication --------------------------------------------------------------------------------------


def test_missing_authorization_is_refused(fake: LocalOpenRouter) -> None:
    assert_error(Api(fake, None)("GET", "/key"), 401, "Missing Authentication header")


def test_unknown_key_is_refused(fake: LocalOpenRouter) -> None:
    assert_error(Api(fake, "sk-or-v1-" + "0" * 64)("GET", "/keys"), 401)


def test_disabled_key_is_refused(fake: LocalOpenRouter) -> None:
    key = fake.add_key("off", disabled=True)
    assert_error(Api(fake, key.plaintext)("GET", "/key"), 401, "disabled")


def test_disabled_management_key_is_refused(fake: LocalOpenRouter) -> None:
    key = fake.add_key("admin", management=True, disabled=True)
    assert_error(Api(fake, key.plaintext)("GET", "/keys"), 401)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/keys", None, id="list"),
        pytest.param("POST", "/keys", {"name": "x"}, id="create"),
        pytest.param("GET", "/keys/{hash}", None, id="get"),
        pytest.param("PATCH", "/keys/{hash}", {"name": "y"}, id="update"),
        pytest.param("DELETE", "/keys/{hash}", None, id="delete"),
        pytest.param("GET", "/credits", None, id="credits"),
    ],
)
def test_regular_key_is_refused_by_management_endpoints(
    fake: LocalOpenRouter, method: str, path: str, body: dict[str, Any] | None
) -> None:
    key = fake.add_key("regular")
    response = Api(fake, key.plaintext)(method, path.format(hash=key.hash), json=body)
    assert_error(response, 403, "Only management keys can perform this operation")
    assert fake.get_key_state(key.hash)["name"] == "regular"
    assert len(fake.keys()) == 1


def test_a_second_management_key_works(fake: LocalOpenRouter) -> None:
    admin = fake.add_key("second admin", management=True)
    client = Api(fake, admin.plaintext)
    assert client.ok("GET", "/key")["data"]["is_management_key"] is True
    create(client, name="made by the second key")
    assert [k["name"] for k in client.ok("GET", "/keys")["data"]] == ["made by the second key"]


# -- POST /keys ------------------------------------------------------------------------------------------


def test_create_returns_201_the_plaintext_once_and_a_complete_key(fake: LocalOpenRouter, api: Api) -> None:
    body = create(
        api,
        name="tenant-a",
        limit=25,
        limit_reset="weekly",
        include_byok_in_limit=True,
        expires_at="2099-12-31T23:59:59Z",
        creator_user_id="user_123",
        external={"user": "end-user-7"},
    )
    plaintext, data = body["key"], body["data"]
    assert set(body) == {"data", "key"}
    assert PLAINTEXT_RE.fullmatch(plaintext)
    assert set(data) == KEY_FIELDS
    assert data["hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert data["label"] == f"sk-or-v1-{plaintext[9:12]}...{plaintext[-3:]}"
    assert data["name"] == "tenant-a"
    assert data["limit"] == 25
    assert data["limit_remaining"] == 25
    assert data["limit_reset"] == "weekly"
    assert data["include_byok_in_limit"] is True
    assert data["expires_at"] == "2099-12-31T23:59:59Z"
    assert data["creator_user_id"] == "user_123"
    assert data["external_user"] == "end-user-7"
    assert data["workspace_id"] == DEFAULT_WORKSPACE_ID
    assert data["disabled"] is False
    assert data["usage"] == 0
    assert data["updated_at"] is None
    assert data["last_used_at"] is None
    assert dt.datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")).tzinfo is not None

    assert plaintext in fake.issued_plaintexts
    assert plaintext not in api("GET", f"/keys/{data['hash']}").text
    assert plaintext not in api("GET", "/keys").text
    assert Api(fake, plaintext).ok("GET", "/key")["data"]["label"] == data["label"]


def test_create_with_only_a_name_has_no_limit(api: Api) -> None:
    data = create(api, name="plain")["data"]
    assert data["limit"] is None
    assert data["limit_remaining"] is None
    assert data["limit_reset"] is None
    assert data["expires_at"] is None
    assert data["include_byok_in_limit"] is False


@pytest.mark.parametrize(
    "expires_at",
    ["2099-01-02T03:04:05Z", "2099-01-02T03:04:05+00:00", "2099-01-02T03:04:05.123456Z"],
    ids=["z", "plus-zero", "fraction"],
)
def test_create_accepts_utc_expiry_with_seconds(api: Api, expires_at: str) -> None:
    assert create(api, expires_at=expires_at)["data"]["expires_at"] == "2099-01-02T03:04:05Z"


@pytest.mark.parametrize("workspace", [OTHER_WORKSPACE, None], ids=["given", "null-means-default"])
def test_create_in_a_workspace(api: Api, workspace: str | None) -> None:
    data = create(api, workspace_id=workspace)["data"]
    assert data["workspace_id"] == (workspace or DEFAULT_WORKSPACE_ID)


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        pytest.param({}, "name", id="name-missing"),
        pytest.param({"name": ""}, "name", id="name-empty"),
        pytest.param({"name": 5}, "name", id="name-not-string"),
        pytest.param({"name": "k", "limit": -1}, "limit", id="limit-negative"),
        pytest.param({"name": "k", "limit": "5"}, "limit", id="limit-string"),
        pytest.param({"name": "k", "limit": True}, "limit", id="limit-bool"),
        pytest.param({"name": "k", "limit_reset": "yearly"}, "limit_reset", id="limit-reset-unknown"),
        pytest.param({"name": "k", "limit_reset": "Daily"}, "limit_reset", id="limit-reset-case"),
        pytest.param({"name": "k", "expires_at": "2099-12-31T23:59Z"}, "expires_at", id="expiry-no-seconds"),
        pytest.param(
            {"name": "k", "expires_at": "2099-12-31T23:59:59+02:00"}, "expires_at", id="expiry-offset"
        ),
        pytest.param({"name": "k", "expires_at": "2099-12-31T23:59:59"}, "expires_at", id="expiry-naive"),
        pytest.param({"name": "k", "expires_at": "2099-12-31"}, "expires_at", id="expiry-date-only"),
        pytest.param({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "future", id="expiry-past"),
        pytest.param({"name": "k", "expires_at": 4102444800}, "expires_at", id="expiry-number"),
        pytest.param(
            {"name": "k", "include_byok_in_limit": "yes"}, "include_byok_in_limit", id="byok-not-bool"
        ),
        pytest.param({"name": "k", "workspace_id": "default"}, "workspace_id", id="workspace-not-uuid"),
        pytest.param({"name": "k", "creator_user_id": ""}, "creator_user_id", id="creator-empty"),
        pytest.param(
            {"name": "k", "external": {"user": "u", "api_key": "short"}}, "api_key", id="external-key"
        ),
        pytest.param({"name": "k", "external": {"api_key": "x" * 40}}, "external", id="external-no-user"),
    ],
)
def test_create_validation_errors(
    fake: LocalOpenRouter, api: Api, body: dict[str, Any], message_part: str
) -> None:
    assert_error(api("POST", "/keys", json=body), 400, message_part)
    assert fake.keys() == []


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        pytest.param(b"{not json", {"Content-Type": "application/json"}, id="malformed"),
        pytest.param(b"[1, 2]", {"Content-Type": "application/json"}, id="array"),
        pytest.param(b"", {}, id="empty"),
    ],
)
def test_create_with_an_unusable_body(api: Api, data: bytes, headers: dict[str, str]) -> None:
    assert_error(api("POST", "/keys", data=data, headers=headers), 400)


# -- GET /keys/{hash} -----------------------------------------------------------------------------------


def test_get_returns_the_key(api: Api) -> None:
    created = create(api, name="one", limit=3)["data"]
    assert api.ok("GET", f"/keys/{created['hash']}")["data"] == created


def test_get_unknown_hash_is_404(api: Api) -> None:
    assert_error(api("GET", "/keys/" + "a" * 64), 404)
    assert_error(api("GET", "/keys/not-a-hash"), 404)


def test_management_keys_are_not_reachable_as_api_keys(fake: LocalOpenRouter, api: Api) -> None:
    management_hash = hashlib.sha256(fake.management_key.encode()).hexdigest()
    assert_error(api("GET", f"/keys/{management_hash}"), 404)
    assert_error(api("DELETE", f"/keys/{management_hash}"), 404)
    assert api.ok("GET", "/keys")["data"] == []


# -- PATCH /keys/{hash} ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"name": "renamed"}, {"name": "renamed"}, id="name"),
        pytest.param({"disabled": True}, {"disabled": True}, id="disable"),
        pytest.param({"limit": 50}, {"limit": 50, "limit_remaining": 50}, id="limit"),
        pytest.param({"limit": None}, {"limit": None, "limit_remaining": None}, id="clear-limit"),
        pytest.param({"limit_reset": "daily"}, {"limit_reset": "daily"}, id="limit-reset"),
        pytest.param({"limit_reset": None}, {"limit_reset": None}, id="clear-limit-reset"),
        pytest.param({"include_byok_in_limit": True}, {"include_byok_in_limit": True}, id="byok"),
        pytest.param({"workspace_id": OTHER_WORKSPACE}, {"workspace_id": OTHER_WORKSPACE}, id="workspace"),
    ],
)
def test_update_changes_only_the_fields_sent(
    api: Api, change: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = create(api, name="orig", limit=10, limit_reset="monthly")["data"]
    after = api.ok("PATCH", f"/keys/{before['hash']}", json=change)["data"]
    assert after["updated_at"] is not None
    untouched = {k: v for k, v in before.items() if k not in expected and k not in ("updated_at",)}
    assert {k: after[k] for k in untouched} == untouched
    assert {k: after[k] for k in expected} == expected
    assert api.ok("GET", f"/keys/{before['hash']}")["data"] == after


def test_update_moves_the_key_between_workspaces(api: Api) -> None:
    key = create(api, name="mover")["data"]
    api.ok("PATCH", f"/keys/{key['hash']}", json={"workspace_id": OTHER_WORKSPACE})
    assert api.ok("GET", "/keys")["data"] == []
    listed = api.ok("GET", "/keys", params={"workspace_id": OTHER_WORKSPACE})["data"]
    assert [k["hash"] for k in listed] == [key["hash"]]


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        pytest.param({}, "No update fields provided", id="empty"),
        pytest.param({"color": "red"}, "No update fields provided", id="unknown-only"),
        pytest.param({"expires_at": "2099-12-31T23:59:59Z"}, "expires_at", id="expires-at"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"limit": -5}, "limit", id="negative-limit"),
        pytest.param({"limit_reset": "hourly"}, "limit_reset", id="bad-limit-reset"),
        pytest.param({"disabled": "true"}, "disabled", id="disabled-string"),
        pytest.param({"workspace_id": "nope"}, "workspace_id", id="bad-workspace"),
    ],
)
def test_update_validation_errors(api: Api, body: dict[str, Any], message_part: str) -> None:
    key = create(api, name="stay")["data"]
    assert_error(api("PATCH", f"/keys/{key['hash']}", json=body), 400, message_part)
    assert api.ok("GET", f"/keys/{key['hash']}")["data"] == key


def test_update_unknown_hash_is_404(api: Api) -> None:
    assert_error(api("PATCH", "/keys/" + "b" * 64, json={"name": "x"}), 404)


# -- DELETE /keys/{hash} ---------------------------------------------------------------------------------


def test_delete_then_gone(fake: LocalOpenRouter, api: Api) -> None:
    key = create(api, name="doomed")
    assert api.ok("DELETE", f"/keys/{key['data']['hash']}") == {"deleted": True}
    assert_error(api("GET", f"/keys/{key['data']['hash']}"), 404)
    assert_error(api("DELETE", f"/keys/{key['data']['hash']}"), 404)
    assert_error(Api(fake, key["key"])("GET", "/key"), 401)
    assert not fake.has_key(key["data"]["hash"])


# -- GET /keys -------------------------------------------------------------------------------------------


def test_paging_across_250_keys(fake: LocalOpenRouter, api: Api) -> None:
    hashes = [fake.add_key(f"key-{i:03d}").hash for i in range(250)]
    pages = [api.ok("GET", "/keys", params={"offset": offset})["data"] for offset in (0, 100, 200, 300)]
    assert [len(page) for page in pages] == [100, 100, 50, 0]
    listed = [key["hash"] for page in pages for key in page]
    assert listed == hashes[::-1]  # newest first, as the API's "most recent 100 API keys"
    assert api.ok("GET", "/keys", params={"offset": 249})["data"][0]["name"] == "key-000"


def test_a_rename_keeps_a_keys_place_in_the_list(fake: LocalOpenRouter, api: Api) -> None:
    first, second = fake.add_key("first"), fake.add_key("second")
    api.ok("PATCH", f"/keys/{first.hash}", json={"name": "renamed"})
    assert [key["hash"] for key in api.ok("GET", "/keys")["data"]] == [second.hash, first.hash]


def test_list_without_offset_is_the_first_page(fake: LocalOpenRouter, api: Api) -> None:
    for i in range(101):
        fake.add_key(f"k{i}")
    assert len(api.ok("GET", "/keys")["data"]) == 100


def test_list_filters_disabled_and_expired(fake: LocalOpenRouter, api: Api) -> None:
    active = fake.add_key("active")
    disabled = fake.add_key("disabled", disabled=True)
    expired = fake.add_key("expired", expires_at=fake.now - dt.timedelta(seconds=1))

    def names(**params: str) -> set[str]:
        return {key["name"] for key in api.ok("GET", "/keys", params=params)["data"]}

    assert names() == {"active"}
    assert names(include_disabled="true") == {"active", "disabled"}
    assert names(include_expired="true") == {"active", "expired"}
    assert names(include_disabled="true", include_expired="true") == {"active", "disabled", "expired"}
    assert names(include_disabled="false", include_expired="false") == {"active"}
    assert {active.hash, disabled.hash, expired.hash} == {k["hash"] for k in stored(fake)}


def test_list_one_workspace_at_a_time(fake: LocalOpenRouter, api: Api) -> None:
    fake.add_key("default-ws")
    fake.add_key("other-ws", workspace_id=OTHER_WORKSPACE)
    assert [k["name"] for k in api.ok("GET", "/keys")["data"]] == ["default-ws"]
    assert [k["name"] for k in api.ok("GET", "/keys", params={"workspace_id": OTHER_WORKSPACE})["data"]] == [
        "other-ws"
    ]
    explicit_default = api.ok("GET", "/keys", params={"workspace_id": DEFAULT_WORKSPACE_ID})["data"]
    assert [k["name"] for k in explicit_default] == ["default-ws"]


@pytest.mark.parametrize(
    ("params", "message_part"),
    [
        pytest.param({"include_disabled": "True"}, "include_disabled", id="capitalised-bool"),
        pytest.param({"include_expired": "1"}, "include_expired", id="numeric-bool"),
        pytest.param({"offset": "-1"}, "offset", id="negative-offset"),
        pytest.param({"offset": "ten"}, "offset", id="word-offset"),
        pytest.param({"offset": "²"}, "offset", id="unicode-digit-offset"),
        pytest.param({"workspace_id": "abc"}, "workspace_id", id="bad-workspace"),
    ],
)
def test_list_validation_errors(api: Api, params: dict[str, str], message_part: str) -> None:
    assert_error(api("GET", "/keys", params=params), 400, message_part)


# -- GET /credits ----------------------------------------------------------------------------------------


def test_credits_sum_the_usage_of_every_key(fake: LocalOpenRouter, api: Api) -> None:
    fake.total_credits = 50
    a, b = fake.add_key("a"), fake.add_key("b")
    fake.add_usage(a.hash, 1.25)
    fake.add_usage(b.hash, 2.5)
    fake.add_usage(b.hash, 100, byok=True)
    assert api.ok("GET", "/credits") == {"data": {"total_credits": 50.0, "total_usage": 3.75}}
    # Spend belongs to the account: deleting a key does not give it back.
    api.ok("DELETE", f"/keys/{b.hash}")
    assert api.ok("GET", "/credits")["data"]["total_usage"] == 3.75


# -- routing ---------------------------------------------------------------------------------------------


def test_unknown_path_is_404_json(api: Api) -> None:
    assert_error(api("GET", "/models-of-the-moon"), 404)
    response = requests.get(api.base_url.replace("/api/v1", "/elsewhere"), timeout=10)
    assert_error(response, 404)


def test_wrong_method_is_405(api: Api) -> None:
    assert_error(api("PUT", "/keys"), 405)
    assert_error(api("POST", "/key"), 405)


def test_trailing_slash_and_query_on_a_key_path(api: Api) -> None:
    key = create(api)["data"]
    assert api.ok("GET", f"/keys/{key['hash']}/", params={"x": "1"})["data"]["hash"] == key["hash"]


# -- usage and limits ------------------------------------------------------------------------------------


def test_add_usage_grows_every_counter_and_sets_last_used(fake: LocalOpenRouter, api: Api) -> None:
    key = fake.add_key("spender", limit=10)
    fake.add_usage(key.hash, 1.5)
    fake.add_usage(key.hash, 0.5)
    data = api.ok("GET", f"/keys/{key.hash}")["data"]
    assert (data["usage"], data["usage_daily"], data["usage_weekly"], data["usage_monthly"]) == (2, 2, 2, 2)
    assert data["byok_usage"] == 0
    assert data["limit_remaining"] == 8
    assert data["last_used_at"] is not None


def test_limit_remaining_never_goes_below_zero(fake: LocalOpenRouter, api: Api) -> None:
    key = fake.add_key("over", limit=1)
    fake.add_usage(key.hash, 3)
    assert api.ok("GET", f"/keys/{key.hash}")["data"]["limit_remaining"] == 0


@pytest.mark.parametrize(("include_byok", "remaining"), [(False, 9.0), (True, 4.0)], ids=["without", "with"])
def test_byok_spend_counts_toward_the_limit_only_when_asked(
    fake: LocalOpenRouter, api: Api, include_byok: bool, remaining: float
) -> None:
    key = fake.add_key("byok", limit=10, include_byok_in_limit=include_byok)
    fake.add_usage(key.hash, 1)
    fake.add_usage(key.hash, 5, byok=True)
    data = api.ok("GET", f"/keys/{key.hash}")["data"]
    assert data["byok_usage"] == data["byok_usage_daily"] == 5
    assert data["limit_remaining"] == remaining


def test_set_usage_sets_explicit_values(fake: LocalOpenRouter, api: Api) -> None:
    key = fake.add_key("explicit", limit=100, limit_reset="monthly")
    fake.set_usage(key.hash, usage=70, usage_monthly=30, usage_daily=1, byok_usage=3, byok_usage_weekly=2)
    data = api.ok("GET", f"/keys/{key.hash}")["data"]
    assert (data["usage"], data["usage_monthly"], data["usage_daily"]) == (70, 30, 1)
    assert (data["byok_usage"], data["byok_usage_weekly"]) == (3, 2)
    assert data["limit_remaining"] == 70
    with pytest.raises(ValueError, match="unknown usage fields"):
        fake.set_usage(key.hash, usage_yearly=1)


def test_helpers_on_an_unknown_hash_raise_key_error(fake: LocalOpenRouter) -> None:
    for helper in (fake.get_key_state, lambda h: fake.add_usage(h, 1), lambda h: fake.set_usage(h, usage=1)):
        with pytest.raises(KeyError):
            helper("c" * 64)
    assert not fake.has_key("c" * 64)


@pytest.mark.parametrize(
    ("limit_reset", "counted"),
    [("daily", "usage_daily"), ("weekly", "usage_weekly"), ("monthly", "usage_monthly"), (None, "usage")],
)
def test_limit_remaining_counts_the_reset_window(
    fake: LocalOpenRouter, api: Api, limit_reset: str | None, counted: str
) -> None:
    key = fake.add_key("windowed", limit=100, limit_reset=limit_reset)
    fake.set_usage(key.hash, usage=40, usage_daily=1, usage_weekly=2, usage_monthly=3)
    spent = {"usage": 40, "usage_daily": 1, "usage_weekly": 2, "usage_monthly": 3}[counted]
    assert api.ok("GET", f"/keys/{key.hash}")["data"]["limit_remaining"] == 100 - spent


# -- the clock -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "zeroed", "kept"),
    [
        # Wednesday 2030-01-16 23:59 -> Thursday: only the day rolls over.
        pytest.param(
            dt.datetime(2030, 1, 16, 23, 59, tzinfo=UTC), {"daily"}, {"weekly", "monthly"}, id="day"
        ),
        # Sunday 2030-01-20 23:59 -> Monday: day and week.
        pytest.param(
            dt.datetime(2030, 1, 20, 23, 59, tzinfo=UTC), {"daily", "weekly"}, {"monthly"}, id="week"
        ),
        # Thursday 2030-01-31 23:59 -> Friday 1 February: day and month, not the week.
        pytest.param(
            dt.datetime(2030, 1, 31, 23, 59, tzinfo=UTC), {"daily", "monthly"}, {"weekly"}, id="month"
        ),
    ],
)
def test_usage_windows_reset_at_utc_midnight_monday_and_the_first(
    fake: LocalOpenRouter, api: Api, start: dt.datetime, zeroed: set[str], kept: set[str]
) -> None:
    fake.set_clock(start, frozen=True)
    key = fake.add_key("clocked", limit=10, limit_reset="daily")
    fake.add_usage(key.hash, 4)
    fake.add_usage(key.hash, 1, byok=True)
    assert api.ok("GET", f"/keys/{key.hash}")["data"]["limit_remaining"] == 6
    fake.advance_clock(dt.timedelta(minutes=2))
    data = api.ok("GET", f"/keys/{key.hash}")["data"]
    for period in zeroed:
        assert data[f"usage_{period}"] == 0
        assert data[f"byok_usage_{period}"] == 0
    for period in kept:
        assert data[f"usage_{period}"] == 4
        assert data[f"byok_usage_{period}"] == 1
    assert data["usage"] == 4
    assert data["byok_usage"] == 1
    assert data["limit_remaining"] == 10


def test_clock_runs_on_unless_frozen(fake: LocalOpenRouter) -> None:
    moment = dt.datetime(2031, 5, 5, 12, 0, tzinfo=UTC)
    assert fake.set_clock(moment, frozen=True) == moment
    assert fake.now == moment
    assert fake.advance_clock(90) == moment + dt.timedelta(seconds=90)
    fake.set_clock(moment)
    assert fake.now >= moment
    assert fake.now - moment < dt.timedelta(hours=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        fake.set_clock(dt.datetime(2031, 1, 1))


def test_created_and_updated_at_follow_the_clock(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_clock(dt.datetime(2032, 2, 3, 4, 5, 6, 363244, tzinfo=UTC), frozen=True)
    key = create(api)["data"]
    # The form of OpenRouter's guide: microseconds and +00:00, six digits even when they are zeros.
    assert key["created_at"] == "2032-02-03T04:05:06.363244+00:00"
    fake.advance_clock(59.636756)
    assert api.ok("PATCH", f"/keys/{key['hash']}", json={"name": "n"})["data"]["updated_at"] == (
        "2032-02-03T04:06:06.000000+00:00"
    )


def test_keys_expire_when_the_clock_passes_expires_at(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_clock(dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC), frozen=True)
    key = create(api, name="short-lived", expires_at="2030-06-01T13:00:00Z")
    user = Api(fake, key["key"])
    assert user.ok("GET", "/key")["data"]["expires_at"] == "2030-06-01T13:00:00Z"
    fake.advance_clock(dt.timedelta(hours=1))
    assert_error(user("GET", "/key"), 401, "expired")
    assert api.ok("GET", "/keys")["data"] == []
    assert [k["name"] for k in api.ok("GET", "/keys", params={"include_expired": "true"})["data"]] == [
        "short-lived"
    ]
    assert api.ok("GET", f"/keys/{key['data']['hash']}")["data"]["name"] == "short-lived"
    assert_error(api("POST", "/keys", json={"name": "late", "expires_at": "2030-06-01T12:30:00Z"}), 400)


# -- spend simulation ------------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_simulated_spend_moves_usage_until_the_limit() -> None:
    with LocalOpenRouter(spend_per_second=50.0) as fake:
        capped = fake.add_key("capped", limit=0.5)
        open_ended = fake.add_key("open-ended")
        disabled = fake.add_key("disabled", disabled=True)
        api = Api(fake, fake.management_key)
        wait_for(lambda: api.ok("GET", f"/keys/{open_ended.hash}")["data"]["usage"] > 1.0)
        capped_data = api.ok("GET", f"/keys/{capped.hash}")["data"]
        assert capped_data["usage"] == pytest.approx(0.5)
        assert capped_data["limit_remaining"] == 0
        assert fake.get_key_state(disabled.hash)["usage"] == 0
        fake.set_spend_per_second(0)
        frozen = fake.get_key_state(open_ended.hash)["usage"]
        time.sleep(0.05)
        assert fake.get_key_state(open_ended.hash)["usage"] == frozen


# -- faults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (2, "2"),
        (0.5, "0.5"),
        ("Wed, 21 Oct 2099 07:28:00 GMT", "Wed, 21 Oct 2099 07:28:00 GMT"),
        (None, None),
    ],
    ids=["seconds", "fraction", "http-date", "absent"],
)
def test_status_fault_429_with_retry_after(
    fake: LocalOpenRouter, api: Api, retry_after: float | str | None, header: str | None
) -> None:
    fake.inject(Status(429, retry_after=retry_after), method="GET", path="/keys")
    response = api("GET", "/keys")
    assert_error(response, 429, "Rate limit exceeded")
    assert response.headers.get("Retry-After") == header
    assert api("GET", "/keys").status_code == 200


def test_status_fault_extra_headers(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Status(429, retry_after=7, headers={"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}))
    response = api("GET", "/keys")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Limit"] == "60"


@pytest.mark.parametrize("code", [500, 502, 503, 504, 409, 402])
def test_status_fault_any_code_with_a_real_error_body(fake: LocalOpenRouter, api: Api, code: int) -> None:
    fake.inject(Status(code))
    assert_error(api("GET", "/key"), code)


def test_status_fault_custom_message(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Status(500, message="upstream exploded"))
    assert_error(api("GET", "/key"), 500, "upstream exploded")


def test_html_error_fault_is_not_json(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(HtmlError())
    response = api("GET", "/keys")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    fake.inject(HtmlError(503))
    assert api("GET", "/keys").status_code == 503


def test_latency_fault_delays_then_answers_normally(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Latency(0.3), path="/key")
    started = time.monotonic()
    assert api.ok("GET", "/key")["data"]["is_management_key"] is True
    assert time.monotonic() - started >= 0.3


def test_latency_then_status(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Latency(0.01))
    fake.inject(Status(503))
    assert_error(api("GET", "/key"), 503)
    assert api("GET", "/key").status_code == 200


def test_drop_before_commit_creates_nothing(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(DropBeforeCommit(), method="POST", path="/keys")
    with pytest.raises(requests.ConnectionError):
        api("POST", "/keys", json={"name": "never"})
    assert fake.keys() == []
    assert [r.fault for r in fake.requests] == ["drop_before_commit"]
    assert fake.requests[0].status is None
    create(api, name="second try")
    assert [k["name"] for k in stored(fake)] == ["second try"]


def test_drop_after_commit_creates_the_key_but_answers_nothing(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(DropAfterCommit(), method="POST", path="/keys")
    with pytest.raises(requests.ConnectionError):
        api("POST", "/keys", json={"name": "ghost"})
    assert [k["name"] for k in stored(fake)] == ["ghost"]
    assert len(fake.issued_plaintexts) == 2
    assert fake.requests[-1].fault == "drop_after_commit"


@pytest.mark.parametrize(
    "fault",
    [Status(502, after_commit=True), HtmlError(504, after_commit=True)],
    ids=["status", "html"],
)
def test_error_after_commit_creates_the_key_and_answers_the_error(
    fake: LocalOpenRouter, api: Api, fault: Status | HtmlError
) -> None:
    fake.inject(fault, method="POST", path="/keys")
    response = api("POST", "/keys", json={"name": "created anyway"})
    assert response.status_code == fault.code
    assert [k["name"] for k in stored(fake)] == ["created anyway"]
    fake.inject(Status(500))
    api("POST", "/keys", json={"name": "not created"})
    assert [k["name"] for k in stored(fake)] == ["created anyway"]


def test_drop_after_commit_on_delete_deletes(fake: LocalOpenRouter, api: Api) -> None:
    key = fake.add_key("to-delete")
    fake.inject(DropAfterCommit(), method="DELETE")
    with pytest.raises(requests.ConnectionError):
        api("DELETE", f"/keys/{key.hash}")
    assert not fake.has_key(key.hash)


def test_fault_times_and_forever(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Status(500), times=2)
    assert [api("GET", "/key").status_code for _ in range(3)] == [500, 500, 200]
    fake.inject(Status(503), times=None)
    assert [api("GET", "/key").status_code for _ in range(3)] == [503, 503, 503]
    assert len(fake.faults) == 1
    fake.clear_faults()
    assert api("GET", "/key").status_code == 200


def test_faults_match_method_and_path(fake: LocalOpenRouter, api: Api) -> None:
    key = fake.add_key("target")
    fake.inject(Status(500), method="PATCH", path="/keys/*", times=None)
    fake.inject(Status(502), path=re.compile(r"/keys/[0-9a-f]{64}"), method="GET", times=None)
    fake.inject(Status(504), path="/api/v1/credits", times=None)
    assert api("GET", "/keys").status_code == 200
    assert api("PATCH", f"/keys/{key.hash}", json={"name": "x"}).status_code == 500
    assert api("GET", f"/keys/{key.hash}").status_code == 502
    assert api("DELETE", f"/keys/{key.hash}").status_code == 200
    assert api("GET", "/credits").status_code == 504
    assert api("GET", "/key").status_code == 200


def test_faults_are_matched_in_the_order_armed(fake: LocalOpenRouter, api: Api) -> None:
    fake.inject(Status(500))
    fake.inject(Status(429))
    assert [api("GET", "/key").status_code for _ in range(3)] == [500, 429, 200]


def test_inject_rejects_a_zero_count(fake: LocalOpenRouter) -> None:
    with pytest.raises(ValueError, match="times"):
        fake.inject(Status(500), times=0)


# -- the request log -------------------------------------------------------------------------------------


def test_request_log_records_requests_without_the_authorization_header(
    fake: LocalOpenRouter, api: Api
) -> None:
    api.session.headers["X-OpenRouter-Title"] = "Test App"
    create(api, name="logged", external={"user": "u", "api_key": "k" * 40})
    api("GET", "/keys", params={"offset": "0", "include_disabled": "true"})
    fake.inject(Status(429))
    api("GET", "/key")
    first, second, third = fake.requests
    assert (first.method, first.path, first.status) == ("POST", "/api/v1/keys", 201)
    assert first.body["name"] == "logged"
    assert first.body["external"]["api_key"] == "***"
    assert first.headers["X-OpenRouter-Title"] == "Test App"
    assert first.key_hash == hashlib.sha256(fake.management_key.encode()).hexdigest()
    assert (second.method, second.query) == ("GET", {"offset": "0", "include_disabled": "true"})
    assert (third.status, third.fault) == (429, "status")
    for record in fake.requests:
        assert all(name.lower() != "authorization" for name in record.headers)
        assert fake.management_key not in json.dumps(record.to_json())
    fake.clear_requests()
    assert fake.requests == []


def test_control_requests_are_not_logged(fake: LocalOpenRouter) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    control.info()
    control.keys()
    assert fake.requests == []


# -- HTTP details ----------------------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(fake: LocalOpenRouter) -> None:
    url = urlsplit(fake.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    headers = {"Authorization": f"Bearer {fake.management_key}"}
    try:
        conn.request("GET", url.path + "/key", headers=headers)
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        for _ in range(20):
            conn.request("GET", url.path + "/key", headers=headers)
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["data"]["is_management_key"] is True
            assert response.getheader("Connection") is None
        assert conn.sock is sock
    finally:
        conn.close()


def test_connection_close_is_honoured(fake: LocalOpenRouter) -> None:
    url = urlsplit(fake.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", url.path + "/key", headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.status == 401
        assert response.getheader("Connection") == "close"
        response.read()
    finally:
        conn.close()


def test_chunked_request_body(fake: LocalOpenRouter) -> None:
    url = urlsplit(fake.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    body = json.dumps({"name": "chunky"}).encode()
    try:
        conn.request(
            "POST",
            url.path + "/keys",
            body=iter([body[:5], body[5:]]),
            headers={"Authorization": f"Bearer {fake.management_key}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 201
        assert json.loads(response.read())["data"]["name"] == "chunky"
    finally:
        conn.close()


def test_concurrent_creates_are_all_kept(fake: LocalOpenRouter) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client = Api(fake, fake.management_key)
        try:
            for i in range(25):
                create(client, name=f"w{n}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({k["hash"] for k in stored(fake)}) == 200


def test_stop_closes_idle_keep_alive_connections() -> None:
    fake = LocalOpenRouter().start()
    client = Api(fake, fake.management_key)
    client.ok("GET", "/key")
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        client("GET", "/key")
    assert "not started" in repr(fake)
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url


def test_capacity_is_measured(fake: LocalOpenRouter) -> None:
    assert measure_capacity(0.2, fake=fake) > 0
    assert measure_capacity(0.1) > 0
    assert measure_capacity(0.1, base_url=fake.base_url, management_key=fake.management_key, clients=3) > 0
    with pytest.raises(ValueError, match="management_key"):
        measure_capacity(0.1, base_url=fake.base_url)
    fake.inject(Status(500), times=None)
    with pytest.raises(RuntimeError, match="500"):
        measure_capacity(0.1, fake=fake, clients=2)


def test_local_openrouter_process_serves_and_is_driven_over_http() -> None:
    key = "sk-or-v1-" + "2" * 64
    with LocalOpenRouterProcess(management_key=key, spend_per_second=0.0) as child:
        assert child.pid is not None
        assert child.management_key == key
        assert child.base_url in repr(child)
        made = child.control.add_key("in the child", limit=3)
        response = requests.get(
            f"{child.base_url}/keys/{made.hash}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert response.json()["data"]["name"] == "in the child"
        assert json.loads(child.connection_json(timeout=3))["host"] == child.base_url
        assert child.connection_uri().startswith("openrouter://http://")
        assert list(child.airflow_env()) == ["AIRFLOW_CONN_OPENROUTER_DEFAULT"]
        assert measure_capacity(0.1, base_url=child.base_url, management_key=key) > 0
        base_url = child.base_url
    assert child.pid is None
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + "/key", timeout=5)


# -- the control client ----------------------------------------------------------------------------------


def test_control_client_drives_the_fake_over_http(fake: LocalOpenRouter, api: Api) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    assert LocalOpenRouterControl(fake.root_url).base_url == fake.base_url
    info = control.info()
    assert info["base_url"] == fake.base_url
    assert control.management_key == fake.management_key

    key = control.add_key("remote", limit=5, limit_reset="daily", expires_at=fake.now + dt.timedelta(days=1))
    assert api.ok("GET", f"/keys/{key.hash}")["data"]["name"] == "remote"
    admin = control.add_key("remote admin", management=True)
    assert Api(fake, admin.plaintext).ok("GET", "/key")["data"]["is_management_key"] is True
    assert {k["name"] for k in stored(control)} == {"remote"}
    assert {k["name"] for k in control.keys(include_management=True)} >= {"remote", "remote admin"}

    assert control.add_usage(key.hash, 2)["usage"] == 2
    assert control.add_usage(key.hash, 1, byok=True)["byok_usage"] == 1
    assert control.set_usage(key.hash, usage_daily=4)["limit_remaining"] == 1
    assert control.get_key_state(key.hash)["usage_daily"] == 4
    with pytest.raises(KeyError):
        control.get_key_state("d" * 64)
    with pytest.raises(LocalOpenRouterControlError, match="404"):
        control.add_usage("d" * 64, 1)

    moment = dt.datetime(2030, 3, 4, 23, 59, 30, tzinfo=UTC)
    assert control.set_clock(moment, frozen=True) == moment
    assert control.now == moment == fake.now
    assert control.advance_clock(dt.timedelta(minutes=1)) == moment + dt.timedelta(minutes=1)
    assert control.advance_clock(30) == moment + dt.timedelta(seconds=90)
    assert control.get_key_state(key.hash)["usage_daily"] == 0

    plaintexts = control.issued_plaintexts
    assert plaintexts[0] == fake.management_key
    assert key.plaintext in plaintexts
    assert plaintexts == fake.issued_plaintexts


def test_control_client_faults_and_request_log(fake: LocalOpenRouter, api: Api) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    control.inject(
        Status(429, retry_after=3, message="slow down", headers={"X-RateLimit-Reset": "1"}),
        method="GET",
        path="/keys",
    )
    control.inject(HtmlError(504, after_commit=True), path=re.compile(r"/keys/.*"))
    control.inject(Latency(0.01), path="/credits")
    control.inject(DropBeforeCommit(), method="DELETE", times=None)
    control.inject(DropAfterCommit(), method="POST")
    faults = control.faults
    assert faults[1].fault == HtmlError(504, after_commit=True)
    assert [type(rule.fault) for rule in faults] == [
        Status,
        HtmlError,
        Latency,
        DropBeforeCommit,
        DropAfterCommit,
    ]
    assert isinstance(faults[1].path, re.Pattern)

    response = api("GET", "/keys")
    assert_error(response, 429, "slow down")
    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-RateLimit-Reset"] == "1"
    assert api("GET", "/keys/" + "e" * 64).status_code == 504
    assert api("GET", "/credits").status_code == 200
    with pytest.raises(requests.ConnectionError):
        api("DELETE", "/keys/" + "e" * 64)
    with pytest.raises(requests.ConnectionError):
        api("POST", "/keys", json={"name": "remote ghost"})
    assert [k["name"] for k in stored(control)] == ["remote ghost"]

    log = control.requests
    assert [(r.method, r.status) for r in log] == [
        ("GET", 429),
        ("GET", 504),
        ("GET", 200),
        ("DELETE", None),
        ("POST", None),
    ]
    assert log == fake.requests
    control.clear_requests()
    assert control.requests == []
    control.clear_faults()
    assert control.faults == []
    assert api("DELETE", "/keys/" + "e" * 64).status_code == 404


def test_control_client_spend(fake: LocalOpenRouter) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    key = fake.add_key("spender")
    control.set_spend_per_second(100.0)
    assert control.info()["spend_per_second"] == 100.0
    wait_for(lambda: fake.get_key_state(key.hash)["usage"] > 0)
    control.set_spend_per_second(0)


def test_control_client_reports_bad_requests(fake: LocalOpenRouter) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    with pytest.raises(LocalOpenRouterControlError, match="400"):
        control.add_key("bad", limit_reset="hourly")
    with pytest.raises(LocalOpenRouterControlError, match="404"):
        control._call("GET", "/nothing-here")


# -- Airflow connections ---------------------------------------------------------------------------------


EXTRAS: dict[str, Any] = {"timeout": 5, "max_retries": 2, "app_title": "My App & Co", "app_categories": "a,b"}


def test_connection_json_and_env(fake: LocalOpenRouter) -> None:
    data = json.loads(fake.connection_json(**EXTRAS))
    assert data == {
        "conn_type": "openrouter",
        "host": fake.base_url,
        "password": fake.management_key,
        "extra": EXTRAS,
    }
    env = fake.airflow_env()
    assert list(env) == ["AIRFLOW_CONN_OPENROUTER_DEFAULT"]
    assert json.loads(env["AIRFLOW_CONN_OPENROUTER_DEFAULT"])["extra"] == {}
    assert list(fake.airflow_env("tenant_admin", timeout=3)) == ["AIRFLOW_CONN_TENANT_ADMIN"]


@pytest.mark.parametrize("extras", [EXTRAS, {}], ids=["with-extras", "no-extras"])
@pytest.mark.parametrize("form", ["uri", "json"])
def test_connection_round_trips_through_airflow(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, extras: dict[str, Any], form: str
) -> None:
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    value = fake.connection_uri(**extras) if form == "uri" else fake.connection_json(**extras)
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_ROUNDTRIP", value)
    conn = EnvironmentVariablesBackend().get_connection("openrouter_roundtrip")
    assert conn is not None
    assert conn.conn_type == "openrouter"
    assert conn.host == fake.base_url
    assert conn.password == fake.management_key
    assert conn.port is None
    assert not conn.login
    assert conn.extra_dejson == extras


def test_connection_uri_parses_with_both_airflow_connection_classes(fake: LocalOpenRouter) -> None:
    from airflow.models.connection import Connection as ModelConnection
    from airflow.sdk import Connection

    uri = fake.connection_uri(**EXTRAS)
    for conn in (Connection.from_uri(uri, conn_id="x"), ModelConnection(conn_id="x", uri=uri)):
        assert (conn.conn_type, conn.host, conn.password) == (
            "openrouter",
            fake.base_url,
            fake.management_key,
        )
        assert conn.extra_dejson == EXTRAS
    # The same form Airflow itself writes, so a URI copied from `airflow connections get` looks alike.
    airflow_uri = Connection(
        conn_id="x", conn_type="openrouter", host=fake.base_url, password=fake.management_key
    ).get_uri()
    assert fake.connection_uri() == airflow_uri


def test_openrouter_conn_env_fixture(openrouter_conn_env: LocalOpenRouter) -> None:
    value = os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"]
    assert json.loads(value)["host"] == openrouter_conn_env.base_url
    assert Api(openrouter_conn_env, json.loads(value)["password"]).ok("GET", "/key")["data"][
        "is_management_key"
    ]


# -- the package stays light, the CLI serves ------------------------------------------------------------


def test_importing_the_fake_and_the_plugin_imports_no_airflow_nor_http_clients() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_openrouter.testing, airflow_provider_openrouter.testing.pytest_plugin\n"
        "heavy = {'airflow', 'requests', 'aiohttp', 'openrouter'}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_the_pytest_plugin_is_opt_in() -> None:
    # Installing the provider must not load our fixtures into every pytest run of the environment: a suite
    # enables them with pytest_plugins (as tests/conftest.py does), so the distribution declares no pytest11.
    groups = {ep.group for ep in importlib.metadata.distribution("airflow-provider-openrouter").entry_points}
    assert "apache_airflow_provider" in groups
    assert "pytest11" not in groups


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_openrouter.testing",
            "--port",
            "0",
            "--spend-per-second",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: dict[str, str] = {}
        while "AIRFLOW_CONN_OPENROUTER_DEFAULT" not in printed:
            line = proc.stdout.readline()
            assert line, f"CLI exited early: {proc.stderr.read() if proc.stderr else ''}"
            name, sep, value = line.strip().partition("=")
            if sep:
                printed[name] = value
        base_url, management_key = printed["base_url"], printed["management_key"]
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/api/v1")
        conn = json.loads(printed["AIRFLOW_CONN_OPENROUTER_DEFAULT"].strip("'"))
        assert conn["host"] == base_url
        assert conn["password"] == management_key
        response = requests.get(
            base_url + "/key", headers={"Authorization": f"Bearer {management_key}"}, timeout=10
        )
        assert response.status_code == 200
        assert response.json()["data"]["is_management_key"] is True
        assert LocalOpenRouterControl(base_url).management_key == management_key
    finally:
        proc.send_signal(stop_signal)
        try:
            returncode = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert returncode == 0


def test_cli_uses_the_given_management_key_and_port() -> None:
    with LocalOpenRouter() as probe:
        port = probe.port  # a port known to be free once this closes
    key = "sk-or-v1-" + "1" * 64
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_openrouter.testing",
            "--port",
            str(port),
            "--management-key",
            key,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}/api/v1" in first
        response = requests.get(
            f"http://127.0.0.1:{port}/api/v1/key", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert response.json()["data"]["is_management_key"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
