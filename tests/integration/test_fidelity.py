"""The local OpenRouter is faithful: the official SDK parses its answers, the spec accepts them.

Two independent authorities: the official ``openrouter`` Python SDK (pinned; its pydantic models reject an
answer that lacks a required field or has a wrong type), and OpenRouter's OpenAPI description of the key
endpoints, read from ``../shared/openrouter`` beside the clone.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from openrouter import OpenRouter, errors
from openrouter.utils.retries import BackoffStrategy, RetryConfig
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from airflow_provider_openrouter.testing import LocalOpenRouter, Status
from airflow_provider_openrouter.testing._state import DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT.parent / "shared" / "openrouter"
SPEC_FILES = ("openapi-keys.sdk-1.3.84.yaml", "openapi-keys.yaml")
OTHER_WORKSPACE = "6f1f2d7e-3b9a-4c1e-9a53-0c5b1e2d3f40"
UTC = dt.timezone.utc
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)

# The SDK warns when it reads the deprecated ``is_provisioning_key``, which the real API still sends.
pytestmark = pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")


@pytest.fixture
def fake(local_openrouter: LocalOpenRouter) -> LocalOpenRouter:
    return local_openrouter


@pytest.fixture
def sdk(fake: LocalOpenRouter) -> Iterator[OpenRouter]:
    with OpenRouter(api_key=fake.management_key, server_url=fake.base_url, retry_config=NO_RETRIES) as client:
        yield client


# -- the official SDK ------------------------------------------------------------------------------------


def test_sdk_six_key_calls_parse(fake: LocalOpenRouter, sdk: OpenRouter) -> None:
    current = sdk.api_keys.get_current_key_metadata()
    assert current.data.is_management_key is True
    assert current.data.workspace_id == DEFAULT_WORKSPACE_ID

    created = sdk.api_keys.create(
        name="tenant-a",
        limit=20.0,
        limit_reset="monthly",
        include_byok_in_limit=True,
        expires_at=dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
        creator_user_id="user_42",
        external={"user": "end-user-1"},
        workspace_id=DEFAULT_WORKSPACE_ID,
    )
    key_hash = created.data.hash
    assert created.key.startswith("sk-or-v1-")
    assert key_hash == hashlib.sha256(created.key.encode()).hexdigest()
    assert created.data.expires_at == dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert created.data.external_user == "end-user-1"
    assert created.data.limit_remaining == 20.0

    fake.add_usage(key_hash, 5.0)
    fetched = sdk.api_keys.get(hash=key_hash)
    assert fetched.data.usage_monthly == 5.0
    assert fetched.data.limit_remaining == 15.0
    assert fetched.data.last_used_at is not None

    listed = sdk.api_keys.list(
        include_disabled=True, include_expired=True, offset=0, workspace_id=DEFAULT_WORKSPACE_ID
    )
    assert [key.hash for key in listed.data] == [key_hash]

    updated = sdk.api_keys.update(
        hash=key_hash,
        name="tenant-a2",
        disabled=True,
        limit=None,
        limit_reset=None,
        include_byok_in_limit=False,
    )
    assert (updated.data.name, updated.data.disabled, updated.data.limit) == ("tenant-a2", True, None)
    assert updated.data.updated_at is not None
    assert sdk.api_keys.list().data == []
    assert [k.name for k in sdk.api_keys.list(include_disabled=True).data] == ["tenant-a2"]

    moved = sdk.api_keys.update(hash=key_hash, workspace_id=OTHER_WORKSPACE)
    assert moved.data.workspace_id == OTHER_WORKSPACE

    deleted = sdk.api_keys.delete(hash=key_hash)
    assert deleted.DELETED is True  # the SDK names the const field in capitals

    credits = sdk.credits.get_credits()
    assert credits.data.total_usage == 5.0

    # What the SDK put on the wire is what the fake (and the real API) expects.
    list_request = next(r for r in fake.requests if r.method == "GET" and r.path.endswith("/keys"))
    assert list_request.query == {
        "include_disabled": "true",
        "include_expired": "true",
        "offset": "0",
        "workspace_id": DEFAULT_WORKSPACE_ID,
    }
    create_request = next(r for r in fake.requests if r.method == "POST")
    assert create_request.body["expires_at"] == "2099-12-31T23:59:59Z"


def test_sdk_parses_the_current_key_of_a_regular_key(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant", limit=10.0, limit_reset="daily", expires_at=fake.now + dt.timedelta(days=3))
    fake.add_usage(key.hash, 4.0)
    fake.add_usage(key.hash, 1.0, byok=True)
    with OpenRouter(api_key=key.plaintext, server_url=fake.base_url, retry_config=NO_RETRIES) as client:
        data = client.api_keys.get_current_key_metadata().data
    assert data.is_management_key is False
    assert data.limit_remaining == 6.0
    assert data.byok_usage == 1.0
    assert data.effective_budget is not None
    assert data.effective_budget.scope == "key_limit"
    assert [b.remaining_usd for b in data.budgets] == [6.0]
    assert data.free_model_daily_requests.limit == 1000
    assert data.expires_at is not None


def test_sdk_pages_through_250_keys(fake: LocalOpenRouter, sdk: OpenRouter) -> None:
    made = [fake.add_key(f"k{i}").hash for i in range(250)]
    fake.add_key("disabled", disabled=True)
    fake.add_key("expired", expires_at=fake.now - dt.timedelta(minutes=1))
    seen: list[str] = []
    offset = 0
    while True:
        page = sdk.api_keys.list(offset=offset).data
        seen.extend(key.hash for key in page)
        if len(page) < 100:
            break
        offset += 100
    assert seen == made[::-1]  # newest first
    assert len(sdk.api_keys.list(include_disabled=True, include_expired=True, offset=200).data) == 52


def expect_sdk_error(error: type[Exception], call: Callable[[], Any]) -> Exception:
    with pytest.raises(error) as info:
        call()
    return info.value


def test_sdk_maps_the_fakes_error_answers(fake: LocalOpenRouter, sdk: OpenRouter) -> None:
    regular = fake.add_key("regular")
    missing = "0" * 64
    api = sdk.api_keys
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.get(hash=missing))
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.update(hash=missing, name="x"))
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.delete(hash=missing))
    expect_sdk_error(errors.BadRequestResponseError, lambda: api.create(name="k", limit=-1.0))
    expect_sdk_error(errors.BadRequestResponseError, lambda: api.update(hash=regular.hash))
    expect_sdk_error(
        errors.BadRequestResponseError,
        lambda: api.create(name="k", expires_at=dt.datetime(2000, 1, 1, tzinfo=UTC)),
    )
    with OpenRouter(api_key=regular.plaintext, server_url=fake.base_url, retry_config=NO_RETRIES) as user:
        refused = expect_sdk_error(errors.ForbiddenResponseError, lambda: user.api_keys.create(name="nope"))
        assert "management" in str(refused)
    with OpenRouter(api_key="sk-or-v1-" + "9" * 64, server_url=fake.base_url, retry_config=NO_RETRIES) as bad:
        expect_sdk_error(errors.UnauthorizedResponseError, bad.api_keys.get_current_key_metadata)
    fake.inject(Status(429, retry_after=1))
    expect_sdk_error(errors.TooManyRequestsResponseError, api.list)
    fake.inject(Status(409))
    expect_sdk_error(errors.ConflictResponseError, lambda: api.update(hash=regular.hash, name="y"))
    fake.inject(Status(500))
    expect_sdk_error(errors.InternalServerResponseError, lambda: api.get(hash=regular.hash))


# -- the OpenAPI description -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    method: str
    spec_path: str
    status: int
    body: Any
    what: str


class Recorder:
    """Calls the fake over plain HTTP and keeps each answer with the spec operation it belongs to."""

    def __init__(self, fake: LocalOpenRouter) -> None:
        self.fake = fake
        self.answers: list[Answer] = []

    def call(
        self,
        what: str,
        method: str,
        spec_path: str,
        *,
        key: str | None,
        hash: str = "",
        expect: int,
        **kwargs: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = self.fake.base_url + spec_path.replace("{hash}", hash)
        response = requests.request(method, url, headers=headers, timeout=10, **kwargs)
        assert response.status_code == expect, f"{what}: {response.status_code} {response.text}"
        body = response.json()
        self.answers.append(Answer(method, spec_path, response.status_code, body, what))
        return body


def record_every_answer(fake: LocalOpenRouter) -> list[Answer]:
    """Drive every key operation into each status its spec documents (faults for those a fake can't earn)."""
    rec = Recorder(fake)
    admin = fake.management_key
    regular = fake.add_key("regular", limit=10.0, limit_reset="weekly", include_byok_in_limit=True)
    fake.add_usage(regular.hash, 2.0)
    fake.add_usage(regular.hash, 1.0, byok=True)
    fake.add_key("expired", expires_at=fake.now - dt.timedelta(hours=1))
    fake.add_key("disabled", disabled=True, external_user="someone")
    unknown = "sk-or-v1-" + "f" * 64
    missing = "e" * 64

    def faults(method: str, spec_path: str, *, hash: str = "", **kwargs: Any) -> None:
        for code in (429, 500):
            fake.inject(Status(code, retry_after=1 if code == 429 else None), times=1)
            rec.call(f"fault {code}", method, spec_path, key=admin, hash=hash, expect=code, **kwargs)

    # GET /key
    rec.call("management key", "GET", "/key", key=admin, expect=200)
    rec.call("regular key with budget", "GET", "/key", key=regular.plaintext, expect=200)
    rec.call("no key", "GET", "/key", key=None, expect=401)
    rec.call("unknown key", "GET", "/key", key=unknown, expect=401)
    faults("GET", "/key")

    # POST /keys
    full = rec.call(
        "create, every field",
        "POST",
        "/keys",
        key=admin,
        expect=201,
        json={
            "name": "full",
            "limit": 12.5,
            "limit_reset": "daily",
            "include_byok_in_limit": True,
            "expires_at": "2099-01-01T00:00:00Z",
            "creator_user_id": "user_1",
            "workspace_id": DEFAULT_WORKSPACE_ID,
            "external": {"user": "u-1", "api_key": "x" * 40},
        },
    )
    rec.call("create, name only", "POST", "/keys", key=admin, expect=201, json={"name": "minimal"})
    rec.call(
        "create, bad limit_reset",
        "POST",
        "/keys",
        key=admin,
        expect=400,
        json={"name": "k", "limit_reset": "x"},
    )
    rec.call("create, unknown key", "POST", "/keys", key=unknown, expect=401, json={"name": "k"})
    rec.call("create, regular key", "POST", "/keys", key=regular.plaintext, expect=403, json={"name": "k"})
    faults("POST", "/keys", json={"name": "k"})
    full_hash = full["data"]["hash"]

    # GET /keys
    rec.call("list", "GET", "/keys", key=admin, expect=200)
    rec.call(
        "list all",
        "GET",
        "/keys",
        key=admin,
        expect=200,
        params={"include_disabled": "true", "include_expired": "true"},
    )
    rec.call(
        "list, other workspace",
        "GET",
        "/keys",
        key=admin,
        expect=200,
        params={"workspace_id": OTHER_WORKSPACE},
    )
    rec.call("list, bad offset", "GET", "/keys", key=admin, expect=400, params={"offset": "-3"})
    rec.call("list, unknown key", "GET", "/keys", key=unknown, expect=401)
    rec.call("list, regular key", "GET", "/keys", key=regular.plaintext, expect=403)
    faults("GET", "/keys")

    # GET /keys/{hash}
    rec.call("get", "GET", "/keys/{hash}", key=admin, hash=full_hash, expect=200)
    rec.call("get used key", "GET", "/keys/{hash}", key=admin, hash=regular.hash, expect=200)
    rec.call("get, unknown key", "GET", "/keys/{hash}", key=unknown, hash=full_hash, expect=401)
    rec.call("get, regular key", "GET", "/keys/{hash}", key=regular.plaintext, hash=full_hash, expect=403)
    rec.call("get, missing", "GET", "/keys/{hash}", key=admin, hash=missing, expect=404)
    faults("GET", "/keys/{hash}", hash=full_hash)

    # PATCH /keys/{hash}
    rec.call(
        "update",
        "PATCH",
        "/keys/{hash}",
        key=admin,
        hash=full_hash,
        expect=200,
        json={
            "name": "renamed",
            "disabled": True,
            "limit": None,
            "limit_reset": None,
            "include_byok_in_limit": False,
        },
    )
    rec.call("update, empty", "PATCH", "/keys/{hash}", key=admin, hash=full_hash, expect=400, json={})
    rec.call(
        "update, unknown key",
        "PATCH",
        "/keys/{hash}",
        key=unknown,
        hash=full_hash,
        expect=401,
        json={"name": "x"},
    )
    rec.call(
        "update, regular key",
        "PATCH",
        "/keys/{hash}",
        key=regular.plaintext,
        hash=full_hash,
        expect=403,
        json={"name": "x"},
    )
    rec.call(
        "update, missing", "PATCH", "/keys/{hash}", key=admin, hash=missing, expect=404, json={"name": "x"}
    )
    fake.inject(Status(409))
    rec.call(
        "update, conflict", "PATCH", "/keys/{hash}", key=admin, hash=full_hash, expect=409, json={"name": "x"}
    )
    faults("PATCH", "/keys/{hash}", hash=full_hash, json={"name": "x"})

    # DELETE /keys/{hash}
    rec.call("delete, unknown key", "DELETE", "/keys/{hash}", key=unknown, hash=full_hash, expect=401)
    rec.call(
        "delete, regular key", "DELETE", "/keys/{hash}", key=regular.plaintext, hash=full_hash, expect=403
    )
    faults("DELETE", "/keys/{hash}", hash=full_hash)
    rec.call("delete", "DELETE", "/keys/{hash}", key=admin, hash=full_hash, expect=200)
    rec.call("delete, missing", "DELETE", "/keys/{hash}", key=admin, hash=full_hash, expect=404)
    return rec.answers


@pytest.fixture(scope="module")
def answers() -> list[Answer]:
    with LocalOpenRouter() as fake:
        return record_every_answer(fake)


@functools.cache
def _read_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SPEC_DIR / name).read_text())
    return spec


def load_spec(name: str) -> dict[str, Any]:
    if not SPEC_DIR.is_dir():
        pytest.skip(
            f"the OpenAPI spec folder beside the clone is missing ({SPEC_DIR}); "
            "the spec checks need ../shared/openrouter next to the project"
        )
    return _read_spec(name)


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


# Error statuses an operation does not document (a regular key's 403 on the list, say) are checked against the
# spec's own schema for that status, so every body has the real error shape.
_ERROR_SCHEMAS = {
    400: "BadRequestResponse",
    401: "UnauthorizedResponse",
    403: "ForbiddenResponse",
    404: "NotFoundResponse",
    409: "ConflictResponse",
    429: "TooManyRequestsResponse",
    500: "InternalServerResponse",
}


@pytest.mark.parametrize("spec_file", SPEC_FILES)
def test_every_answer_validates_against_the_spec(spec_file: str, answers: list[Answer]) -> None:
    spec = load_spec(spec_file)
    uri = f"urn:openrouter:{spec_file}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    failures: list[str] = []
    for answer in answers:
        responses = spec["paths"][answer.spec_path][answer.method.lower()]["responses"]
        if str(answer.status) in responses:
            pointer = _pointer(
                "paths",
                answer.spec_path,
                answer.method.lower(),
                "responses",
                str(answer.status),
                "content",
                "application/json",
                "schema",
            )
        else:
            assert answer.status in _ERROR_SCHEMAS, answer
            if _ERROR_SCHEMAS[answer.status] not in spec["components"]["schemas"]:
                continue
            pointer = _pointer("components", "schemas", _ERROR_SCHEMAS[answer.status])
        validator = Draft202012Validator(
            {"$ref": uri + pointer}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for error in validator.iter_errors(answer.body):
            failures.append(
                f"{answer.method} {answer.spec_path} {answer.status} ({answer.what}): "
                f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            )
    assert failures == []


@pytest.mark.parametrize("spec_file", SPEC_FILES)
def test_every_documented_status_of_every_key_operation_is_exercised(
    spec_file: str, answers: list[Answer]
) -> None:
    spec = load_spec(spec_file)
    produced = {(a.method.lower(), a.spec_path, str(a.status)) for a in answers}
    missing = [
        f"{method.upper()} {path} {status}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method in ("get", "post", "patch", "delete")
        for status in operation["responses"]
        if (method, path, status) not in produced
    ]
    assert missing == []


def test_success_answers_carry_every_required_field(answers: list[Answer]) -> None:
    spec = load_spec(SPEC_FILES[0])
    key_schema = spec["paths"]["/keys/{hash}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    required = set(key_schema["properties"]["data"]["required"])
    keys = [
        key
        for answer in answers
        if answer.status in (200, 201) and answer.spec_path.startswith("/keys") and "data" in answer.body
        for key in (answer.body["data"] if isinstance(answer.body["data"], list) else [answer.body["data"]])
    ]
    assert len(keys) > 5
    for key in keys:
        assert required <= set(key)
