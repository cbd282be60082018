"""CreateApiKeyOperator, UpdateApiKeyOperator and DeleteApiKeyOperator against the local OpenRouter.

Every test runs the operators' real code over real HTTP: ``execute`` is called with a small context, the
way the task runner calls it. Delivery to a Variable needs Airflow's execution API and is covered where the
example DAGs run in a real Airflow (``test_example_dags_operators.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_openrouter.exceptions import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    BadRequestError,
    KeyNameNotUniqueError,
    OpenRouterError,
    PlaintextDeliveryError,
)
from airflow_provider_openrouter.links import OpenRouterKeyLink, key_url
from airflow_provider_openrouter.operators.api_key import (
    PLAINTEXT_XCOM_KEY,
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)
from airflow_provider_openrouter.testing import DropAfterCommit, DropBeforeCommit, HtmlError, Status
from airflow_provider_openrouter.testing._state import DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from airflow_provider_openrouter.models import CreatedApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter

OTHER_WORKSPACE = "6f1f1a52-3c55-4b5e-9d0b-0d3f9a3b2c11"


class RecordingTaskInstance:
    """Stands in for Airflow's task instance where an operator pushes XCom."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


class Inbox:
    """A ``deliver_to_callable`` that keeps what it was given."""

    def __init__(self) -> None:
        self.received: list[CreatedApiKey] = []

    def __call__(self, created: CreatedApiKey, context: Any) -> None:
        self.received.append(created)

    @property
    def plaintext(self) -> str:
        assert len(self.received) == 1
        return self.received[0].plaintext


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


@pytest.fixture
def no_retries(fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> LocalOpenRouter:
    """The connection without retries, so that an injected failure reaches the operator at once."""
    for name, value in fake.airflow_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    return fake


def context() -> dict[str, Any]:
    return {"ti": RecordingTaskInstance()}


def posted(fake: LocalOpenRouter) -> dict[str, Any]:
    """The one create's body, with the provisional name it was created under read back as the real name."""
    [post] = [r for r in fake.requests if r.method == "POST"]
    match = re.fullmatch(r"(.+) \[pending delivery [0-9a-f]{10} until \d+\]", post.body["name"])
    assert match, post.body["name"]
    return {**post.body, "name": match[1]}


def keys_named(fake: LocalOpenRouter, name: str) -> list[dict[str, Any]]:
    return [key for key in fake.keys(include_management=False) if key["name"] == name]


def sha256(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def calls(fake: LocalOpenRouter, method: str | None = None) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if method is None or r.method == method]


def assert_no_plaintext(fake: LocalOpenRouter, *texts: str) -> None:
    for text in texts:
        for plaintext in fake.issued_plaintexts:
            assert plaintext not in text


# --------------------------------------------------------------------------------------------- create ---


def test_create_sends_every_field_and_returns_metadata_only(fake: LocalOpenRouter) -> None:
    inbox = Inbox()
    expires = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    op = CreateApiKeyOperator(
        task_id="create",
        name="tenant-acme",
        limit=12.5,
        limit_reset="weekly",
        include_byok_in_limit=True,
        expires_at=expires,
        workspace_id=OTHER_WORKSPACE,
        creator_user_id="user_42",
        deliver_to_callable=inbox,
    )
    result = op.execute(context())

    assert posted(fake) == {
        "name": "tenant-acme",
        "limit": 12.5,
        "limit_reset": "weekly",
        "include_byok_in_limit": True,
        "expires_at": "2031-05-06T05:08:09Z",
        "workspace_id": OTHER_WORKSPACE,
        "creator_user_id": "user_42",
    }
    state = fake.get_key_state(result["hash"])
    assert state["workspace_id"] == OTHER_WORKSPACE
    assert state["expires_at"].startswith("2031-05-06T05:08:09")
    assert sha256(inbox.plaintext) == result["hash"]
    assert result["action"] == "created"
    assert result["plaintext_issued"] is True
    assert result["plaintext_delivered_to"] == ["callable Inbox"]
    assert result["limit"] == 12.5
    assert result["limit_reset"] == "weekly"
    assert result["include_byok_in_limit"] is True
    assert_no_plaintext(fake, json.dumps(result), repr(result))


def test_create_sends_only_the_name_when_nothing_else_is_given(fake: LocalOpenRouter) -> None:
    CreateApiKeyOperator(task_id="create", name="bare", deliver_to_callable=Inbox()).execute(context())
    assert posted(fake) == {"name": "bare"}


@pytest.mark.parametrize("native", [False, True], ids=["rendered-text", "native-objects"])
def test_create_renders_templates_including_a_pendulum_expiry(fake: LocalOpenRouter, native: bool) -> None:
    inbox = Inbox()
    with DAG("templating", schedule=None, render_template_as_native_obj=native):
        op = CreateApiKeyOperator(
            task_id="create",
            name="tenant-{{ params.tenant }}",
            limit="{{ params.limit }}",
            limit_reset="{{ params.reset }}",
            include_byok_in_limit="{{ params.byok }}",
            expires_at="{{ data_interval_end.add(days=30) }}",
            workspace_id="{{ params.workspace }}",
            creator_user_id="{{ params.creator }}",
            deliver_to_callable=inbox,
        )
    end = pendulum.now("UTC").add(days=1).replace(microsecond=0)
    ctx: dict[str, Any] = {
        **context(),
        "data_interval_end": end,
        "params": {
            "tenant": "acme",
            "limit": 25,
            "reset": "monthly",
            "byok": True,
            "workspace": OTHER_WORKSPACE,
            "creator": "user_7",
        },
    }
    op.render_template_fields(ctx)
    if native:
        assert isinstance(op.expires_at, dt.datetime)
    else:
        assert isinstance(op.expires_at, str)
    result = op.execute(ctx)

    assert posted(fake) == {
        "name": "tenant-acme",
        "limit": 25.0,
        "limit_reset": "monthly",
        "include_byok_in_limit": True,
        "expires_at": end.add(days=30).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "workspace_id": OTHER_WORKSPACE,
        "creator_user_id": "user_7",
    }
    assert sha256(inbox.plaintext) == result["hash"]


def test_a_template_rendering_none_means_none(fake: LocalOpenRouter) -> None:
    op = CreateApiKeyOperator(
        task_id="create",
        name="no-limit",
        limit="{{ params.limit }}",
        limit_reset="{{ params.limit }}",
        deliver_to_callable=Inbox(),
    )
    ctx = {**context(), "params": {"limit": None}}
    op.render_template_fields(ctx)
    assert op.limit == "None"
    op.execute(ctx)
    assert posted(fake) == {"name": "no-limit"}


def test_if_exists_fail_names_the_existing_key_and_creates_nothing(fake: LocalOpenRouter) -> None:
    existing = fake.add_key("tenant-acme")
    inbox = Inbox()
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", deliver_to_callable=inbox)
    with pytest.raises(ApiKeyExistsError, match=existing.hash):
        op.execute(context())
    assert calls(fake, "POST") == []
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [existing.hash]
    assert inbox.received == []


def test_if_exists_reuse_keeps_the_key_and_says_no_plaintext_exists(
    fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]
) -> None:
    existing = fake.add_key("tenant-acme", limit=5)
    inbox = Inbox()
    ti = RecordingTaskInstance()
    op = CreateApiKeyOperator(
        task_id="create",
        name="tenant-acme",
        limit=10,
        if_exists="reuse",
        deliver_to_callable=inbox,
        push_plaintext_to_xcom=True,
    )
    result = op.execute({"ti": ti})

    assert result["hash"] == existing.hash
    assert result["action"] == "reused"
    assert result["plaintext_issued"] is False
    assert result["plaintext_delivered_to"] == []
    assert inbox.received == []
    assert ti.pushed == {}
    assert calls(fake, "POST") == []
    assert calls(fake, "DELETE") == []
    output = capfd.readouterr()
    log = output.out + output.err
    assert "no new plaintext exists" in log
    # The requested limit differs from the key's: said, not changed.
    assert "UpdateApiKeyOperator" in log
    assert fake.get_key_state(existing.hash)["limit"] == 5


def test_if_exists_reuse_creates_the_key_when_there_is_none(fake: LocalOpenRouter) -> None:
    inbox = Inbox()
    op = CreateApiKeyOperator(task_id="create", name="new", if_exists="reuse", deliver_to_callable=inbox)
    result = op.execute(context())
    assert result["action"] == "created"
    assert sha256(inbox.plaintext) == result["hash"]


def test_if_exists_reuse_refuses_to_pick_among_several_keys(fake: LocalOpenRouter) -> None:
    fake.add_key("twin")
    fake.add_key("twin")
    op = CreateApiKeyOperator(task_id="create", name="twin", if_exists="reuse", deliver_to_callable=Inbox())
    with pytest.raises(KeyNameNotUniqueError):
        op.execute(context())
    assert len(keys_named(fake, "twin")) == 2


def test_if_exists_replace_creates_delivers_then_deletes_the_old_key(fake: LocalOpenRouter) -> None:
    old = fake.add_key("tenant-acme", disabled=True)
    delivered_while_old_existed: list[bool] = []

    def deliver(created: CreatedApiKey, ctx: Any) -> None:
        delivered_while_old_existed.append(fake.has_key(old.hash))

    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", if_exists="replace", deliver_to_callable=deliver
    )
    result = op.execute(context())

    assert delivered_while_old_existed == [True]
    assert result["action"] == "replaced"
    assert result["replaced_key_hashes"] == [old.hash]
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [result["hash"]]
    assert calls(fake, "POST") + calls(fake, "DELETE") == [
        "POST /api/v1/keys",
        f"DELETE /api/v1/keys/{old.hash}",
    ]
    assert [r.method for r in fake.requests if r.method in ("POST", "DELETE")] == ["POST", "DELETE"]


def test_if_exists_replace_heals_what_a_dead_try_left_behind(fake: LocalOpenRouter) -> None:
    # An earlier try created its key (plaintext lost with the try) next to the key before it.
    fake.add_key("tenant-acme")
    fake.add_key("tenant-acme")
    inbox = Inbox()
    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", if_exists="replace", deliver_to_callable=inbox
    )
    result = op.execute(context())
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [result["hash"]]
    assert len(result["replaced_key_hashes"]) == 2
    assert sha256(inbox.plaintext) == result["hash"]


def test_push_plaintext_to_xcom_is_an_explicit_opt_in_with_a_warning(
    fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]
) -> None:
    ti = RecordingTaskInstance()
    op = CreateApiKeyOperator(task_id="create", name="xcom", push_plaintext_to_xcom=True)
    result = op.execute({"ti": ti})
    assert sha256(ti.pushed[PLAINTEXT_XCOM_KEY]) == result["hash"]
    assert result["plaintext_delivered_to"] == [f"XCom {PLAINTEXT_XCOM_KEY}"]
    assert_no_plaintext(fake, json.dumps(result))
    output = capfd.readouterr()
    assert "unencrypted" in output.out + output.err


def test_the_callable_runs_before_the_xcom_push(fake: LocalOpenRouter) -> None:
    ti = RecordingTaskInstance()
    seen: list[dict[str, Any]] = []

    def deliver(created: CreatedApiKey, ctx: Any) -> None:
        seen.append(dict(ctx["ti"].pushed))

    op = CreateApiKeyOperator(
        task_id="create", name="k", deliver_to_callable=deliver, push_plaintext_to_xcom=True
    )
    result = op.execute({"ti": ti})
    assert seen == [{}]
    assert result["plaintext_delivered_to"] == [
        "callable test_the_callable_runs_before_the_xcom_push.<locals>.deliver",
        f"XCom {PLAINTEXT_XCOM_KEY}",
    ]


# ------------------------------------------------------------------------------------ lost answers ---


@pytest.mark.parametrize(
    "fault",
    [DropAfterCommit(), DropBeforeCommit(), Status(500), HtmlError(502)],
    ids=["dropped-after-commit", "dropped-before-commit", "500", "html-502"],
)
def test_a_lost_create_answer_leaves_exactly_one_key_whose_plaintext_is_delivered(
    fake: LocalOpenRouter, fault: Any
) -> None:
    fake.inject(fault, method="POST", path="/keys")
    inbox = Inbox()
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", limit=3, deliver_to_callable=inbox)
    result = op.execute(context())

    remaining = keys_named(fake, "tenant-acme")
    assert [k["hash"] for k in remaining] == [result["hash"]]
    assert sha256(inbox.plaintext) == result["hash"]
    assert remaining[0]["limit"] == 3
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 2
    if isinstance(fault, DropAfterCommit):
        # The first request did create a key: the orphan was found and deleted.
        [orphan] = result["deleted_orphan_key_hashes"]
        assert orphan != result["hash"]
        assert not fake.has_key(orphan)
        assert calls(fake, "DELETE") == [f"DELETE /api/v1/keys/{orphan}"]
    else:
        assert result["deleted_orphan_key_hashes"] == []
        assert calls(fake, "DELETE") == []


def test_a_lost_answer_while_replacing_keeps_the_old_key_out_of_the_orphan_hunt(
    fake: LocalOpenRouter,
) -> None:
    old = fake.add_key("tenant-acme")
    fake.inject(DropAfterCommit(), method="POST", path="/keys")
    inbox = Inbox()
    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", if_exists="replace", deliver_to_callable=inbox
    )
    result = op.execute(context())
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [result["hash"]]
    assert result["replaced_key_hashes"] == [old.hash]
    assert len(result["deleted_orphan_key_hashes"]) == 1
    assert sha256(inbox.plaintext) == result["hash"]


def test_a_create_lost_twice_still_leaves_exactly_one_delivered_key(fake: LocalOpenRouter) -> None:
    fake.inject(DropAfterCommit(), method="POST", path="/keys", times=2)
    inbox = Inbox()
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", deliver_to_callable=inbox)
    result = op.execute(context())
    # Each lost request left a key under a provisional name of this try: found and deleted.
    assert [k["hash"] for k in fake.keys(include_management=False)] == [result["hash"]]
    assert len(result["deleted_orphan_key_hashes"]) == 2
    assert sha256(inbox.plaintext) == result["hash"]
    assert len(calls(fake, "POST")) == 3


def test_a_rejected_create_is_not_repeated(fake: LocalOpenRouter) -> None:
    fake.inject(Status(400, message="bad name"), method="POST", path="/keys")
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", deliver_to_callable=Inbox())
    with pytest.raises(BadRequestError):
        op.execute(context())
    assert len(calls(fake, "POST")) == 1
    assert fake.keys() == []


# -------------------------------------------------------------------------------- delivery failures ---


class Refusing:
    """A secret store that is down, and quotes what it was given in its error."""

    def __call__(self, created: CreatedApiKey, context: Any) -> None:
        raise ConnectionError(f"vault unreachable while storing {created.plaintext}")


def test_a_failed_delivery_deletes_the_new_key_again(fake: LocalOpenRouter) -> None:
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", deliver_to_callable=Refusing())
    with pytest.raises(PlaintextDeliveryError) as raised:
        op.execute(context())
    message = str(raised.value)
    assert "vault unreachable" in message
    assert "The new key was deleted again; no new key was left behind." in message
    assert raised.value.key_deleted is True
    assert keys_named(fake, "tenant-acme") == []
    assert_no_plaintext(fake, message)


def test_a_failed_delivery_while_replacing_leaves_the_old_key_untouched(fake: LocalOpenRouter) -> None:
    old = fake.add_key("tenant-acme", limit=7)
    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", if_exists="replace", deliver_to_callable=Refusing()
    )
    with pytest.raises(PlaintextDeliveryError, match="the old key is untouched"):
        op.execute(context())
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [old.hash]
    assert fake.get_key_state(old.hash)["limit"] == 7


def test_a_failed_variable_write_names_what_already_got_the_key(fake: LocalOpenRouter) -> None:
    # Outside a task runner Airflow cannot write a Variable: a real failure of that destination.
    inbox = Inbox()
    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", deliver_to_callable=inbox, deliver_to_variable="tenant_api_key"
    )
    with pytest.raises(PlaintextDeliveryError) as raised:
        op.execute(context())
    message = str(raised.value)
    assert "to Variable tenant_api_key failed" in message
    assert (
        "callable Inbox had already received the plaintext of the new key, which no longer works" in message
    )
    assert raised.value.delivered_to == ["callable Inbox"]
    assert keys_named(fake, "tenant-acme") == []


def test_when_the_undeliverable_key_cannot_be_deleted_the_error_gives_its_hash(
    no_retries: LocalOpenRouter,
) -> None:
    fake = no_retries
    fake.inject(Status(503), method="DELETE", path="/keys/*", times=None)
    op = CreateApiKeyOperator(task_id="create", name="tenant-acme", deliver_to_callable=Refusing())
    with pytest.raises(PlaintextDeliveryError) as raised:
        op.execute(context())
    assert keys_named(fake, "tenant-acme") == []
    # Left under its provisional name, which marks it undelivered: a run after its lease deletes it.
    [left] = [
        k
        for k in fake.keys(include_management=False)
        if k["name"].startswith("tenant-acme [pending delivery ")
    ]
    assert raised.value.key_deleted is False
    assert raised.value.key_hash == left["hash"]
    assert left["hash"] in str(raised.value)
    assert "a run after its lease deletes it" in str(raised.value)


def test_when_the_old_key_cannot_be_deleted_the_replace_fails_with_the_new_key_alone_named(
    no_retries: LocalOpenRouter,
) -> None:
    fake = no_retries
    old = fake.add_key("tenant-acme")
    fake.inject(Status(503), method="DELETE", path="/keys/*")
    inbox = Inbox()
    op = CreateApiKeyOperator(
        task_id="create", name="tenant-acme", if_exists="replace", deliver_to_callable=inbox
    )
    with pytest.raises(OpenRouterError, match=r"The old key still works.*next run of this name deletes it"):
        op.execute(context())
    assert [k["hash"] for k in keys_named(fake, "tenant-acme")] == [sha256(inbox.plaintext)]
    assert fake.has_key(old.hash)
    assert sha256(inbox.plaintext) != old.hash


# -------------------------------------------------------------------------------------------- update ---


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "tenant-acme-renamed", "tenant-acme-renamed"),
        ("disabled", True, True),
        ("limit", 42, 42.0),
        ("limit", None, None),
        ("limit_reset", "daily", "daily"),
        ("limit_reset", None, None),
        ("include_byok_in_limit", True, True),
        ("workspace_id", OTHER_WORKSPACE, OTHER_WORKSPACE),
    ],
    ids=repr,
)
@pytest.mark.parametrize("by", ["hash", "name"])
def test_update_sends_only_the_given_field(
    fake: LocalOpenRouter, field: str, value: Any, expected: Any, by: str
) -> None:
    key = fake.add_key("tenant-acme", limit=10, limit_reset="monthly")
    target = {"key_hash": key.hash} if by == "hash" else {"key_name": "tenant-acme"}
    op = UpdateApiKeyOperator(task_id="update", **target, **{field: value})
    result = op.execute(context())

    [patch] = [r for r in fake.requests if r.method == "PATCH"]
    assert patch.path == f"/api/v1/keys/{key.hash}"
    assert patch.body == {field: expected}
    assert fake.get_key_state(key.hash)[field] == expected
    assert result[field] == expected
    assert result["changed"] is True
    assert result["changed_fields"] == [field]


def test_update_makes_no_write_when_the_key_already_matches(
    fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]
) -> None:
    key = fake.add_key("tenant-acme", limit=30, limit_reset="monthly")
    op = UpdateApiKeyOperator(
        task_id="update", key_name="tenant-acme", limit=30, limit_reset="monthly", disabled=False
    )
    result = op.execute(context())
    assert calls(fake, "PATCH") == []
    assert result["changed"] is False
    assert result["hash"] == key.hash
    output = capfd.readouterr()
    assert "nothing to change, no request sent" in output.out + output.err


def test_update_sends_only_the_fields_that_differ(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-acme", limit=30, limit_reset="monthly")
    op = UpdateApiKeyOperator(task_id="update", key_hash=key.hash, limit=30, limit_reset="weekly")
    result = op.execute(context())
    [patch] = [r for r in fake.requests if r.method == "PATCH"]
    assert patch.body == {"limit_reset": "weekly"}
    assert result["previous"] == {"limit_reset": "monthly"}


def test_update_disables_and_enables_again(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-acme")
    UpdateApiKeyOperator(task_id="off", key_hash=key.hash, disabled=True).execute(context())
    assert fake.get_key_state(key.hash)["disabled"] is True
    UpdateApiKeyOperator(task_id="on", key_hash=key.hash, disabled=False).execute(context())
    assert fake.get_key_state(key.hash)["disabled"] is False
    assert [r.body for r in fake.requests if r.method == "PATCH"] == [{"disabled": True}, {"disabled": False}]


def test_update_renders_templates(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-acme", disabled=True)
    op = UpdateApiKeyOperator(
        task_id="update",
        key_name="tenant-{{ params.tenant }}",
        disabled="{{ params.disabled }}",
        limit="{{ params.limit }}",
    )
    ctx = {**context(), "params": {"tenant": "acme", "disabled": False, "limit": 12}}
    op.render_template_fields(ctx)
    op.execute(ctx)
    state = fake.get_key_state(key.hash)
    assert state["disabled"] is False
    assert state["limit"] == 12


@pytest.mark.parametrize(
    "target",
    [{"key_name": "nobody"}, {"key_hash": "0" * 64}],
    ids=["by-name", "by-hash"],
)
def test_update_of_a_missing_key_fails(fake: LocalOpenRouter, target: dict[str, str]) -> None:
    op = UpdateApiKeyOperator(task_id="update", limit=1, **target)
    with pytest.raises(ApiKeyNotFoundError):
        op.execute(context())
    assert calls(fake, "PATCH") == []


def test_update_by_an_ambiguous_name_fails(fake: LocalOpenRouter) -> None:
    fake.add_key("twin")
    fake.add_key("twin")
    with pytest.raises(KeyNameNotUniqueError):
        UpdateApiKeyOperator(task_id="update", key_name="twin", limit=1).execute(context())
    assert calls(fake, "PATCH") == []


# -------------------------------------------------------------------------------------------- delete ---


@pytest.mark.parametrize("by", ["hash", "name"])
def test_delete_returns_what_it_deleted(fake: LocalOpenRouter, by: str) -> None:
    key = fake.add_key("tenant-acme", limit=4)
    keep = fake.add_key("tenant-globex")
    target = {"key_hash": key.hash} if by == "hash" else {"key_name": "tenant-acme"}
    result = DeleteApiKeyOperator(task_id="delete", **target).execute(context())
    assert result["deleted"] is True
    assert result["hash"] == key.hash
    assert result["name"] == "tenant-acme"
    assert result["limit"] == 4
    assert not fake.has_key(key.hash)
    assert fake.has_key(keep.hash)
    json.dumps(result)


@pytest.mark.parametrize(
    "target",
    [{"key_name": "nobody"}, {"key_hash": "0" * 64}],
    ids=["by-name", "by-hash"],
)
def test_delete_of_a_missing_key(fake: LocalOpenRouter, target: dict[str, str]) -> None:
    with pytest.raises(ApiKeyNotFoundError):
        DeleteApiKeyOperator(task_id="delete", **target).execute(context())
    result = DeleteApiKeyOperator(task_id="delete", missing_ok=True, **target).execute(context())
    assert result == {"deleted": False, "hash": target.get("key_hash"), "name": target.get("key_name")}
    assert calls(fake, "DELETE") == []


@pytest.mark.parametrize(
    "target",
    [{"key_name": "nobody"}, {"key_hash": "0" * 64}],
    ids=["by-name", "by-hash"],
)
def test_update_of_a_missing_key(fake: LocalOpenRouter, target: dict[str, str]) -> None:
    with pytest.raises(ApiKeyNotFoundError):
        UpdateApiKeyOperator(task_id="disable", disabled=True, **target).execute(context())
    result = UpdateApiKeyOperator(task_id="disable", disabled=True, missing_ok=True, **target).execute(
        context()
    )
    assert result == {
        "found": False,
        "changed": False,
        "changed_fields": [],
        "previous": {},
        "hash": target.get("key_hash"),
        "name": target.get("key_name"),
    }
    assert calls(fake, "PATCH") == []


def test_update_with_missing_ok_still_updates_a_key_that_exists(fake: LocalOpenRouter) -> None:
    key = fake.add_key("present")
    result = UpdateApiKeyOperator(
        task_id="disable", key_name="present", disabled=True, missing_ok=True
    ).execute(context())
    assert (result["found"], result["changed"], result["disabled"]) == (True, True, True)
    assert fake.get_key_state(key.hash)["disabled"] is True


def test_delete_by_an_ambiguous_name_deletes_nothing(fake: LocalOpenRouter) -> None:
    fake.add_key("twin")
    fake.add_key("twin")
    with pytest.raises(KeyNameNotUniqueError):
        DeleteApiKeyOperator(task_id="delete", key_name="twin").execute(context())
    assert len(keys_named(fake, "twin")) == 2


# ---------------------------------------------------------------------------------------------- link ---


def test_the_extra_link_points_at_the_key_the_task_acted_on(fake: LocalOpenRouter) -> None:
    op = CreateApiKeyOperator(task_id="create", name="linked", deliver_to_callable=Inbox())
    assert op.operator_extra_links[0].name == "OpenRouter key"
    link = OpenRouterKeyLink()
    result = op.execute(context())
    ti_key: Any = object()
    assert link.get_link(op, ti_key=ti_key) == key_url(result["hash"])
    assert key_url(result["hash"]) == f"https://openrouter.ai/settings/keys#{result['hash']}"
    assert link.xcom_key == "_link_OpenRouterKeyLink"


def test_a_task_that_touched_no_key_has_no_link(fake: LocalOpenRouter) -> None:
    op = DeleteApiKeyOperator(task_id="delete", key_name="nobody", missing_ok=True)
    op.execute(context())
    ti_key: Any = object()
    assert OpenRouterKeyLink().get_link(op, ti_key=ti_key) == ""


def test_operators_make_no_request_before_execute(fake: LocalOpenRouter) -> None:
    CreateApiKeyOperator(task_id="c", name="n", deliver_to_callable=Inbox())
    UpdateApiKeyOperator(task_id="u", key_name="n", limit=1)
    DeleteApiKeyOperator(task_id="d", key_name="n")
    assert fake.requests == []


def test_the_default_workspace_is_used_for_lookup_and_create(fake: LocalOpenRouter) -> None:
    result = CreateApiKeyOperator(task_id="c", name="n", deliver_to_callable=Inbox()).execute(context())
    assert result["workspace_id"] == DEFAULT_WORKSPACE_ID


# ------------------------------------------------------------------------------- parsing and mapping ---


def store(created: CreatedApiKey, context: Any) -> None:
    """A destination defined in the DAG file, as a DAG author would write it."""


def test_mapped_operators_serialize_for_the_scheduler() -> None:
    from airflow.sdk import task

    try:  # Airflow >= 3.2
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    with DAG("mapped", schedule=None) as dag:

        @task
        def rows() -> list[dict[str, Any]]:
            return []

        CreateApiKeyOperator.partial(
            task_id="create", deliver_to_callable=store, if_exists="replace"
        ).expand_kwargs(rows())
        UpdateApiKeyOperator.partial(task_id="update").expand_kwargs(rows())
        DeleteApiKeyOperator.partial(task_id="delete", missing_ok=True).expand(key_name=rows())
        UpdateApiKeyOperator(task_id="clear_limit", key_name="k", limit=None)

    serialized = DagSerialization.to_dict(dag)
    tasks = {t["__var"]["task_id"]: t["__var"] for t in serialized["dag"]["tasks"]}
    for task_id in ("create", "update", "delete", "clear_limit"):
        assert tasks[task_id]["_operator_extra_links"] == {"OpenRouter key": "_link_OpenRouterKeyLink"}
    assert "UNSET" not in json.dumps(serialized)


def test_importing_the_operators_pulls_in_no_http_client() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, airflow_provider_openrouter.operators.api_key; "
        "print([m for m in ('requests', 'aiohttp', 'airflow_provider_openrouter.testing', "
        "'airflow_provider_openrouter.hooks.openrouter') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
