"""OpenRouterKeyUsageTrigger in an event loop against the local OpenRouter over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.testing import (
    DropBeforeCommit,
    HtmlError,
    Latency,
    LocalOpenRouter,
    Status,
)
from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger, shared_hook

if TYPE_CHECKING:
    from airflow.triggers.base import TriggerEvent

    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    """The local OpenRouter behind a connection without retries: every injected fault reaches the trigger."""
    return openrouter_connection(max_retries=0, timeout=5)


def trigger(key_hash: str, **kwargs: Any) -> OpenRouterKeyUsageTrigger:
    kwargs.setdefault("usage_at_least", 1.0)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deadline", (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)).isoformat())
    return OpenRouterKeyUsageTrigger(key_hash=key_hash, **kwargs)


async def events_of(watch: OpenRouterKeyUsageTrigger) -> list[TriggerEvent]:
    return [event async for event in watch.run()]


def _connection_with_key(fake: LocalOpenRouter, management_key: str) -> str:
    """The fake's connection JSON, but carrying ``management_key`` instead of the fake's own."""
    conn = json.loads(fake.connection_json(max_retries=0))
    conn["password"] = management_key
    return json.dumps(conn)


def gets_of(fake: LocalOpenRouter, key_hash: str) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith(f"/keys/{key_hash}"))


# -- serialization -------------------------------------------------------------------------------------------


def test_serialize_round_trip_is_plain_json() -> None:
    original = OpenRouterKeyUsageTrigger(
        key_hash="ab" * 32,
        key_name="tenant-acme",
        usage_window="weekly",
        usage_at_least=12.5,
        limit_fraction_at_least=0.8,
        limit_remaining_at_most=1.0,
        include_byok=True,
        match_all=True,
        openrouter_conn_id="openrouter_tenants",
        poll_interval=30,
        deadline="2027-01-01T00:00:00+00:00",
        max_consecutive_failures=5,
    )
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_provider_openrouter.triggers.key_usage.OpenRouterKeyUsageTrigger"
    wire = json.loads(json.dumps(kwargs))
    assert wire == kwargs
    module_name, _, class_name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**wire)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {
        "key_hash": "ab" * 32,
        "key_name": "tenant-acme",
        "usage_window": "weekly",
        "usage_at_least": 12.5,
        "limit_fraction_at_least": 0.8,
        "limit_remaining_at_most": 1.0,
        "include_byok": True,
        "match_all": True,
        "openrouter_conn_id": "openrouter_tenants",
        "poll_interval": 30.0,
        "deadline": "2027-01-01T00:00:00+00:00",
        "max_consecutive_failures": 5,
    }


def test_serialized_form_survives_airflow_serde() -> None:
    # Trigger kwargs travel through serde since Airflow 3.2, which takes JSON primitives only.
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serde import deserialize, serialize  # type: ignore[no-redef]

    _, kwargs = trigger("cd" * 32).serialize()
    assert deserialize(serialize(kwargs)) == kwargs


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"deadline": "next tuesday"}, "deadline"),
        ({"usage_window": "hourly"}, "usage_window"),
        ({"usage_at_least": None}, "usage_at_least/limit_fraction_at_least/limit_remaining_at_most"),
        ({"limit_fraction_at_least": 1.5}, "limit_fraction_at_least"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"max_consecutive_failures": -1}, "max_consecutive_failures"),
        ({"max_consecutive_failures": 2.5}, "max_consecutive_failures"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpenRouterValidationError) as err:
        trigger("ef" * 32, **kwargs)
    assert err.value.field == field


# -- the one event -------------------------------------------------------------------------------------------


async def test_fires_once_when_usage_moves(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-moving", limit=5.0, limit_reset="daily")
    fake.add_usage(key.hash, 1.0)

    async def spend_after_a_few_polls() -> None:
        while gets_of(fake, key.hash) < 3:
            await asyncio.sleep(0.01)
        fake.add_usage(key.hash, 3.1)

    spender = asyncio.create_task(spend_after_a_few_polls())
    events = await events_of(
        trigger(key.hash, key_name="tenant-moving", usage_at_least=None, limit_fraction_at_least=0.8)
    )
    await spender
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["key_hash"] == key.hash
    assert "usage_daily $4.10 is 82 % of the $5.00 limit (threshold 80 %)" in payload["message"]
    assert payload["snapshot"]["fraction_of_limit"] == pytest.approx(0.82)
    assert json.loads(json.dumps(payload)) == payload
    assert gets_of(fake, key.hash) >= 4


async def test_logs_a_progress_line_when_the_figures_move_not_every_poll(
    fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]
) -> None:
    key = fake.add_key("tenant-logged", limit=5.0, limit_reset="daily")
    fake.add_usage(key.hash, 1.0)

    async def spend_twice() -> None:
        for polls, usd in ((4, 1.0), (8, 2.5)):
            while gets_of(fake, key.hash) < polls:
                await asyncio.sleep(0.01)
            fake.add_usage(key.hash, usd)

    spender = asyncio.create_task(spend_twice())
    events = await events_of(trigger(key.hash, usage_at_least=None, limit_fraction_at_least=0.8))
    await spender
    assert [e.payload["status"] for e in events] == ["success"]
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if "tenant-logged" in line and "→" in line]
    # Polls at $1.00, at $2.00 and at $4.50: three lines, however many polls saw each figure.
    assert gets_of(fake, key.hash) >= 9
    assert [line.rsplit("→", 1)[1].split("[")[0].strip() for line in lines] == [
        "waiting",
        "waiting",
        "condition met",
    ], lines
    assert ["$1.00" in lines[0], "$2.00" in lines[1], "$4.50" in lines[2]] == [True, True, True]


def test_an_unchanged_progress_line_is_repeated_every_ten_minutes() -> None:
    from airflow_provider_openrouter._usage import PROGRESS_REPEAT_SECONDS, ProgressLog

    progress = ProgressLog()
    assert progress.due("a → waiting", now=0.0)
    assert not progress.due("a → waiting", now=PROGRESS_REPEAT_SECONDS - 1)
    assert progress.due("b → waiting", now=PROGRESS_REPEAT_SECONDS - 1)
    assert not progress.due("b → waiting", now=2 * PROGRESS_REPEAT_SECONDS - 2)
    assert progress.due("b → waiting", now=2 * PROGRESS_REPEAT_SECONDS - 1)
    assert PROGRESS_REPEAT_SECONDS == 600.0


async def test_times_out_at_the_deadline_with_the_last_snapshot(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-quiet", limit=5.0)
    fake.add_usage(key.hash, 0.25)
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.4)
    events = await events_of(trigger(key.hash, deadline=deadline.isoformat(), poll_interval=0.1))
    assert [e.payload["status"] for e in events] == ["timeout"]
    assert "deadline" in events[0].payload["message"]
    assert events[0].payload["snapshot"]["measured_usage"] == pytest.approx(0.25)
    # It polled up to the deadline and once at it, not one interval past it.
    assert time.time() >= deadline.timestamp()


async def test_a_passed_deadline_still_polls_once(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-met-late", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).isoformat()
    events = await events_of(trigger(key.hash, deadline=past))
    assert events[0].payload["status"] == "success"


async def test_no_limit_is_an_error_naming_the_field(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-unlimited")
    events = await events_of(trigger(key.hash, usage_at_least=None, limit_remaining_at_most=1.0))
    payload = events[0].payload
    assert payload["status"] == "error"
    assert payload["field"] == "limit_remaining_at_most"
    assert "has no spending limit" in payload["message"]


# -- the key goes away ---------------------------------------------------------------------------------------


async def test_deleted_key(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-deleted", limit=5.0)

    async def delete_after_first_poll() -> None:
        while gets_of(fake, key.hash) < 1:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(OpenRouterHook().delete_key, key.hash)

    deleter = asyncio.create_task(delete_after_first_poll())
    events = await events_of(trigger(key.hash, key_name="tenant-deleted"))
    await deleter
    payload = events[0].payload
    assert (payload["status"], payload["reason"]) == ("key_gone", "deleted")
    assert "'tenant-deleted'" in payload["message"]
    assert payload["snapshot"]["key_hash"] == key.hash  # what was seen before it went


async def test_key_expiring_while_watched(fake: LocalOpenRouter) -> None:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    key = fake.add_key("tenant-expiring", limit=5.0, expires_at=expires)
    events = await events_of(trigger(key.hash, poll_interval=0.2))
    payload = events[0].payload
    assert (payload["status"], payload["reason"]) == ("key_gone", "expired")
    assert "expired at" in payload["message"]


async def test_disabled_key(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-disabled", limit=5.0, disabled=True)
    events = await events_of(trigger(key.hash))
    assert (events[0].payload["status"], events[0].payload["reason"]) == ("key_gone", "disabled")


# -- failures ------------------------------------------------------------------------------------------------

TRANSIENT_FAULTS = [
    pytest.param(Status(500), "ServerError", id="500"),
    pytest.param(Status(503), "ServerError", id="503"),
    pytest.param(HtmlError(502), "ServerError", id="html-502"),
    pytest.param(HtmlError(200), "UnreadableResponseError", id="html-200"),
    pytest.param(DropBeforeCommit(), "OpenRouterTransportError", id="dropped"),
]


@pytest.mark.parametrize(("fault", "error_name"), TRANSIENT_FAULTS)
async def test_tolerates_max_consecutive_failures(fake: LocalOpenRouter, fault: Any, error_name: str) -> None:
    key = fake.add_key("tenant-flaky", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(fault, method="GET", path=f"/keys/{key.hash}", times=3)
    events = await events_of(trigger(key.hash, max_consecutive_failures=3))
    assert [e.payload["status"] for e in events] == ["success"]
    assert gets_of(fake, key.hash) == 4


@pytest.mark.parametrize(("fault", "error_name"), TRANSIENT_FAULTS)
async def test_one_failure_too_many_is_an_error_event(
    fake: LocalOpenRouter, fault: Any, error_name: str
) -> None:
    key = fake.add_key("tenant-broken", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(fault, method="GET", path=f"/keys/{key.hash}", times=None)
    events = await events_of(trigger(key.hash, key_name="tenant-broken", max_consecutive_failures=3))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error"
    message = payload["message"]
    assert "'tenant-broken'" in message
    assert "failed 4 times in a row (max_consecutive_failures=3)" in message
    assert f"last error: {error_name}" in message
    assert f"GET /keys/{key.hash}" in message


async def test_failures_must_be_consecutive(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-sometimes", limit=5.0)
    path = f"/keys/{key.hash}"
    fake.inject(Status(500), method="GET", path=path, times=1)

    async def fail_again_after_a_success() -> None:
        while not any(r.status == 200 and r.path.endswith(path) for r in fake.requests):
            await asyncio.sleep(0.01)
        fake.inject(Status(500), method="GET", path=path, times=1)
        while gets_of(fake, key.hash) < 4:
            await asyncio.sleep(0.01)
        fake.add_usage(key.hash, 2.0)

    helper = asyncio.create_task(fail_again_after_a_success())
    events = await events_of(trigger(key.hash, max_consecutive_failures=1))
    await helper
    assert events[0].payload["status"] == "success"
    assert sum(1 for r in fake.requests if r.status == 500) == 2


async def test_authentication_failure_ends_the_wait_after_one_fresh_lookup(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = local_openrouter.add_key("tenant-auth", limit=5.0)
    wrong = _connection_with_key(local_openrouter, "sk-or-v1-" + "0" * 64)
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", wrong)
    events = await events_of(trigger(key.hash, max_consecutive_failures=10))
    payload = events[0].payload
    assert payload["status"] == "error"
    assert "AuthenticationError" in payload["message"]
    # Not retried as a transient failure: one request, and one more after reading the connection again.
    assert [r.status for r in local_openrouter.requests] == [401, 401]


async def test_a_rotated_management_key_is_picked_up(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = local_openrouter.add_key("tenant-rotation", limit=5.0)
    local_openrouter.add_usage(key.hash, 2.0)
    old = _connection_with_key(local_openrouter, "sk-or-v1-" + "0" * 64)
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", old)
    # The first poll, made with the old key, is answered (401) only after the connection has been edited.
    local_openrouter.inject(Latency(2.0), method="GET", path=f"/keys/{key.hash}", times=1)

    async def rotate() -> None:
        await asyncio.sleep(0.3)
        monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", local_openrouter.connection_json(max_retries=0))

    rotation = asyncio.create_task(rotate())
    events = await events_of(trigger(key.hash))
    await rotation
    assert events[0].payload["status"] == "success"
    assert [r.status for r in local_openrouter.requests] == [401, 200]


async def test_triggers_on_one_loop_share_one_hook_and_one_lookup(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import BaseHook

    lookups: list[str] = []
    real_lookup = BaseHook.aget_connection.__func__  # type: ignore[attr-defined]

    async def counted_lookup(cls: type[BaseHook], conn_id: str) -> Any:
        lookups.append(conn_id)
        return await real_lookup(cls, conn_id)

    monkeypatch.setattr(BaseHook, "aget_connection", classmethod(counted_lookup))
    keys = [fake.add_key(f"tenant-{i}", limit=5.0) for i in range(20)]
    for key in keys:
        fake.add_usage(key.hash, 2.0)
    hook = shared_hook("openrouter_default")
    results = await asyncio.gather(*(events_of(trigger(key.hash)) for key in keys))
    assert [events[0].payload["status"] for events in results] == ["success"] * 20
    assert shared_hook("openrouter_default") is hook
    # Started together, the 20 triggers wait for the first poll to read the connection, then reuse it.
    assert lookups == ["openrouter_default"]


async def test_rate_limit_waits_for_retry_after(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-throttled", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(Status(429, retry_after=1), method="GET", path=f"/keys/{key.hash}", times=1)
    started = time.monotonic()
    events = await events_of(trigger(key.hash, poll_interval=0.05))
    waited = time.monotonic() - started
    assert events[0].payload["status"] == "success"
    assert [r.status for r in fake.requests] == [429, 200]
    assert waited >= 1.0  # the server's Retry-After, not the 0.05 s poll interval


async def test_rate_limits_do_not_count_as_failures(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-busy", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(Status(429, retry_after=0.05), method="GET", path=f"/keys/{key.hash}", times=4)
    events = await events_of(trigger(key.hash, max_consecutive_failures=1))
    assert events[0].payload["status"] == "success"


async def test_hook_retries_honour_retry_after_within_a_poll(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in local_openrouter.airflow_env(max_retries=3).items():
        monkeypatch.setenv(name, value)
    key = local_openrouter.add_key("tenant-retried", limit=5.0)
    local_openrouter.add_usage(key.hash, 2.0)
    local_openrouter.inject(Status(429, retry_after=0.3), method="GET", path=f"/keys/{key.hash}", times=2)
    started = time.monotonic()
    events = await events_of(trigger(key.hash, max_consecutive_failures=0))
    assert events[0].payload["status"] == "success"
    assert time.monotonic() - started >= 0.6


async def test_polling_never_blocks_the_event_loop(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-slow-server", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(Latency(1.0), method="GET", path=f"/keys/{key.hash}", times=1)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    events = await events_of(trigger(key.hash))
    ticker.cancel()
    assert events[0].payload["status"] == "success"
    # A blocking request would have frozen the ticker for the whole second the server took.
    assert ticks >= 5
