"""OpenRouterKeyUsageSensor against the local OpenRouter over HTTP: conditions, windows, modes, endings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk.bases.operator import ExecutorSafeguard

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

from airflow_provider_openrouter.exceptions import (
    OpenRouterError,
    OpenRouterKeyUnavailableError,
    OpenRouterValidationError,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor
from airflow_provider_openrouter.testing import LocalOpenRouter, Status
from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter

# A Wednesday: the day, the week (from Monday 23rd) and the month (November) are all distinct windows.
WEDNESDAY_NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
WINDOWS = ["daily", "weekly", "monthly", "lifetime"]
# Distinct usage per window so that reading the wrong field shows.
USAGE = {"daily": 10.0, "weekly": 20.0, "monthly": 30.0, "lifetime": 40.0}
BYOK = {"daily": 1.0, "weekly": 2.0, "monthly": 3.0, "lifetime": 4.0}


@pytest.fixture(autouse=True)
def _operators_run_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests call execute()/poke() themselves, as the task runner would.
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    """The local OpenRouter on a frozen clock, reached through a connection that does not retry, so that each
    injected fault reaches the sensor."""
    fake = openrouter_connection(max_retries=0, timeout=5)
    fake.set_clock(WEDNESDAY_NOON, frozen=True)
    return fake


def sensor(**kwargs: Any) -> OpenRouterKeyUsageSensor:
    kwargs.setdefault("task_id", "watch")
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    return OpenRouterKeyUsageSensor(**kwargs)


def key_with_window_usage(fake: LocalOpenRouter, **key_args: Any) -> str:
    key = fake.add_key("tenant-windows", **key_args)
    fake.set_usage(
        key.hash,
        usage_daily=USAGE["daily"],
        usage_weekly=USAGE["weekly"],
        usage_monthly=USAGE["monthly"],
        usage=USAGE["lifetime"],
        byok_usage_daily=BYOK["daily"],
        byok_usage_weekly=BYOK["weekly"],
        byok_usage_monthly=BYOK["monthly"],
        byok_usage=BYOK["lifetime"],
    )
    return key.hash


def gets_of(fake: LocalOpenRouter, key_hash: str) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith(f"/keys/{key_hash}"))


@pytest.fixture
def when() -> Iterator[Callable[[Callable[[], bool], Callable[[], Any]], None]]:
    """``when(condition, action)``: run ``action`` on a thread as soon as ``condition()`` holds."""
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def arm(condition: Callable[[], bool], action: Callable[[], Any]) -> None:
        def wait_then_act() -> None:
            while not stop.is_set():
                if condition():
                    action()
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=wait_then_act, daemon=True)
        thread.start()
        threads.append(thread)

    yield arm
    stop.set()
    for thread in threads:
        thread.join(timeout=5)


class RescheduleTI:
    """What a reschedule-mode sensor asks of its task instance: when it first poked."""

    def __init__(self, first_poke: dt.datetime | None = None) -> None:
        self.first_poke = first_poke

    def get_first_reschedule_date(self, context: Any) -> dt.datetime | None:
        return self.first_poke


def run_trigger(trigger: OpenRouterKeyUsageTrigger) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


# -- conditions and windows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("margin", "expected"), [(0.0, True), (0.5, False)], ids=["reached", "below"])
def test_usage_at_least_reads_the_window(
    fake: LocalOpenRouter, window: str, margin: float, expected: bool
) -> None:
    key_hash = key_with_window_usage(fake)
    result = sensor(key_hash=key_hash, usage_window=window, usage_at_least=USAGE[window] + margin).poke({})
    assert bool(result) is expected


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("margin", "expected"), [(0.0, True), (0.5, False)], ids=["reached", "below"])
def test_limit_fraction_reads_the_window(
    fake: LocalOpenRouter, window: str, margin: float, expected: bool
) -> None:
    key_hash = key_with_window_usage(fake, limit=100.0)
    result = sensor(
        key_hash=key_hash, usage_window=window, limit_fraction_at_least=(USAGE[window] + margin) / 100
    ).poke({})
    assert bool(result) is expected
    if expected:
        assert result.xcom_value["fraction_of_limit"] == pytest.approx(USAGE[window] / 100)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("margin", "expected"), [(0.0, True), (-0.5, False)], ids=["reached", "above"])
def test_limit_remaining_follows_the_keys_limit_reset(
    fake: LocalOpenRouter, window: str, margin: float, expected: bool
) -> None:
    key_hash = key_with_window_usage(fake, limit=100.0, limit_reset=None if window == "lifetime" else window)
    remaining = 100.0 - USAGE[window]
    result = sensor(key_hash=key_hash, limit_remaining_at_most=remaining + margin).poke({})
    assert bool(result) is expected
    if expected:
        assert result.xcom_value["limit_remaining"] == pytest.approx(remaining)


@pytest.mark.parametrize("window", WINDOWS)
def test_byok_usage_counts_only_when_asked(fake: LocalOpenRouter, window: str) -> None:
    key_hash = key_with_window_usage(fake, limit=100.0)
    both = USAGE[window] + BYOK[window]
    assert not sensor(key_hash=key_hash, usage_window=window, usage_at_least=both).poke({})
    result = sensor(key_hash=key_hash, usage_window=window, usage_at_least=both, include_byok=True).poke({})
    assert result
    assert result.xcom_value["measured_usage"] == pytest.approx(both)
    fraction = sensor(
        key_hash=key_hash, usage_window=window, limit_fraction_at_least=both / 100, include_byok=True
    ).poke({})
    assert fraction


def test_byok_spend_from_the_fake(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-byok", limit=10.0, limit_reset="daily")
    fake.add_usage(key.hash, 2.0)
    fake.add_usage(key.hash, 3.0, byok=True)
    assert not sensor(key_hash=key.hash, usage_at_least=4.0).poke({})
    assert sensor(key_hash=key.hash, usage_at_least=4.0, include_byok=True).poke({})


def test_windows_reset_as_the_clock_moves(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-clock", limit=50.0, limit_reset="daily")
    fake.add_usage(key.hash, 5.0)

    def met() -> list[str]:
        return [w for w in WINDOWS if sensor(key_hash=key.hash, usage_window=w, usage_at_least=5.0).poke({})]

    assert met() == WINDOWS
    fake.advance_clock(dt.timedelta(days=1))  # Thursday: a new day
    assert met() == ["weekly", "monthly", "lifetime"]
    fake.advance_clock(dt.timedelta(days=4))  # Monday 30th: a new week, still November
    assert met() == ["monthly", "lifetime"]
    fake.advance_clock(dt.timedelta(days=1))  # December
    assert met() == ["lifetime"]
    # The daily limit was reset with the day: the whole limit remains.
    assert (
        sensor(key_hash=key.hash, limit_remaining_at_most=50.0).poke({}).xcom_value["limit_remaining"] == 50
    )


def test_any_condition_by_default_every_condition_with_match_all(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-match", limit=10.0, limit_reset="daily")
    fake.add_usage(key.hash, 6.0)
    args = {"key_hash": key.hash, "usage_at_least": 5.0, "limit_remaining_at_most": 1.0}
    result = sensor(**args).poke({})
    assert result
    assert result.xcom_value["conditions"] == {
        "usage_at_least": {"threshold": 5.0, "value": 6.0, "met": True},
        "limit_remaining_at_most": {"threshold": 1.0, "value": 4.0, "met": False},
    }
    assert not sensor(**args, match_all=True).poke({})
    fake.add_usage(key.hash, 3.5)
    assert sensor(**args, match_all=True).poke({})


@pytest.mark.parametrize("field", ["limit_fraction_at_least", "limit_remaining_at_most"])
def test_a_key_without_limit_is_a_clear_error(fake: LocalOpenRouter, field: str) -> None:
    key = fake.add_key("tenant-unlimited")
    with pytest.raises(OpenRouterValidationError, match="has no spending limit") as err:
        sensor(key_hash=key.hash, **{field: 0.5}).poke({})
    assert err.value.field == field


def test_key_by_name_and_progress_line(fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]) -> None:
    key = fake.add_key("tenant-acme", limit=10.0, limit_reset="daily")
    fake.add_usage(key.hash, 3.2)
    result = sensor(key_name="tenant-acme", usage_at_least=5.0).poke({})
    assert not result
    out, err = capfd.readouterr()
    assert f"key 'tenant-acme' ({key.hash[:12]}…): usage_daily $3.20 of $5.00 threshold (64 %)" in out + err
    assert "→ waiting" in out + err


def test_repeated_pokes_log_only_what_changed(
    fake: LocalOpenRouter, capfd: pytest.CaptureFixture[str]
) -> None:
    key = fake.add_key("tenant-steady", limit=10.0, limit_reset="daily")
    fake.add_usage(key.hash, 3.2)
    watch = sensor(key_name="tenant-steady", usage_at_least=5.0)
    for _ in range(5):
        assert not watch.poke({})
    fake.add_usage(key.hash, 1.0)
    assert not watch.poke({})
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if "tenant-steady" in line and "→ waiting" in line]
    assert len(lines) == 2, lines
    assert "$3.20 of $5.00" in lines[0]
    assert "$4.20 of $5.00" in lines[1]


# -- parse-time and execute-time validation ------------------------------------------------------------------

BAD_ARGUMENTS = [
    pytest.param({"usage_at_least": 1}, "key_hash/key_name", id="no-key"),
    pytest.param(
        {"key_hash": "a" * 64, "key_name": "x", "usage_at_least": 1}, "key_hash/key_name", id="both"
    ),
    pytest.param({"key_hash": "not-a-hash", "usage_at_least": 1}, "key_hash", id="bad-hash"),
    pytest.param({"key_name": " ", "usage_at_least": 1}, "key_name", id="blank-name"),
    pytest.param({"key_name": "k"}, "usage_at_least/limit_fraction_at_least", id="no-condition"),
    pytest.param(
        {"key_name": "k", "usage_window": "hourly", "usage_at_least": 1}, "usage_window", id="window"
    ),
    pytest.param({"key_name": "k", "usage_at_least": -1}, "usage_at_least", id="negative-usd"),
    pytest.param({"key_name": "k", "usage_at_least": "lots"}, "usage_at_least", id="not-a-number"),
    pytest.param({"key_name": "k", "limit_fraction_at_least": 80}, "limit_fraction_at_least", id="percent"),
    pytest.param({"key_name": "k", "limit_fraction_at_least": 0}, "limit_fraction_at_least", id="zero-share"),
    pytest.param({"key_name": "k", "limit_remaining_at_most": -2}, "limit_remaining_at_most", id="remaining"),
    pytest.param({"key_name": "k", "usage_at_least": 1, "include_byok": "yes"}, "include_byok", id="byok"),
    pytest.param({"key_name": "k", "usage_at_least": 1, "match_all": 1}, "match_all", id="match-all"),
    pytest.param(
        {"key_name": "k", "usage_at_least": 1, "max_consecutive_failures": -1},
        "max_consecutive_failures",
        id="failures",
    ),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_ARGUMENTS)
def test_parse_time_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpenRouterValidationError) as err:
        sensor(**kwargs)
    assert err.value.field.startswith(field)
    assert str(err.value).startswith(err.value.field)


def test_percent_given_for_a_ratio_gets_a_hint() -> None:
    with pytest.raises(OpenRouterValidationError, match=r"for 80 % write 0\.8"):
        sensor(key_name="k", limit_fraction_at_least=80)


def test_templates_are_checked_once_rendered(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-templated", limit=10.0)
    fake.add_usage(key.hash, 9.0)
    watch = sensor(
        key_name="{{ params.key }}",
        usage_window="{{ params.window }}",
        limit_fraction_at_least="{{ params.share }}",
    )
    watch.render_template_fields({"params": {"key": "tenant-templated", "window": "daily", "share": "0.8"}})
    assert watch.execute({})["fraction_of_limit"] == pytest.approx(0.9)

    bad = sensor(key_name="tenant-templated", usage_at_least="{{ params.threshold }}")
    bad.render_template_fields({"params": {"threshold": "five dollars"}})
    with pytest.raises(OpenRouterValidationError) as err:
        bad.execute({})
    assert err.value.field == "usage_at_least"

    bad_hash = sensor(key_hash="{{ params.hash }}", usage_at_least=1)
    bad_hash.render_template_fields({"params": {"hash": "abc"}})
    with pytest.raises(OpenRouterValidationError) as err:
        bad_hash.execute({})
    assert err.value.field == "key_hash"


# -- poke mode -----------------------------------------------------------------------------------------------


def test_poke_mode_waits_for_usage_to_move(fake: LocalOpenRouter, when: Any) -> None:
    key = fake.add_key("tenant-poke", limit=5.0, limit_reset="daily")
    fake.add_usage(key.hash, 1.0)
    when(lambda: gets_of(fake, key.hash) >= 2, lambda: fake.add_usage(key.hash, 3.0))
    snapshot = sensor(key_name="tenant-poke", limit_fraction_at_least=0.8).execute({})
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["key_hash"] == key.hash
    assert snapshot["key_name"] == "tenant-poke"
    assert snapshot["measured_usage"] == pytest.approx(4.0)
    assert snapshot["met"] is True
    # The name is resolved once; later polls ask for the key by hash.
    assert sum(1 for r in fake.requests if r.path.endswith("/keys")) == 1


def test_poke_mode_times_out(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-slow", limit=5.0)
    with pytest.raises(AirflowSensorTimeout):
        sensor(key_hash=key.hash, usage_at_least=1.0, timeout=0.3).execute({})
    with pytest.raises(AirflowSkipException):
        sensor(key_hash=key.hash, usage_at_least=1.0, timeout=0.3, soft_fail=True).execute({})


def test_poke_mode_tolerates_transient_failures(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-flaky", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(Status(502), method="GET", path=f"/keys/{key.hash}", times=3)
    assert sensor(key_hash=key.hash, usage_at_least=1.0, max_consecutive_failures=3).execute({})["met"]


def test_poke_mode_gives_up_after_too_many_failures(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-down", limit=5.0)
    fake.inject(Status(503), method="GET", path=f"/keys/{key.hash}", times=None)
    with pytest.raises(OpenRouterError, match=r"failed 3 times in a row.*ServerError") as err:
        sensor(key_hash=key.hash, usage_at_least=1.0, max_consecutive_failures=2).execute({})
    assert key.hash[:12] in str(err.value)


def test_poke_mode_waits_out_a_rate_limit_without_counting_it(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-throttled", limit=5.0)
    fake.add_usage(key.hash, 2.0)
    fake.inject(Status(429, retry_after=0.01), method="GET", path=f"/keys/{key.hash}", times=4)
    fake.inject(Status(429, retry_after=1), method="GET", path=f"/keys/{key.hash}", times=1)
    started = time.monotonic()
    snapshot = sensor(key_hash=key.hash, usage_at_least=1.0, max_consecutive_failures=1).execute({})
    assert snapshot["met"]
    assert [r.status for r in fake.requests] == [429] * 5 + [200]
    assert time.monotonic() - started >= 1.0  # the last Retry-After, not the 0.05 s poke interval


# -- reschedule mode -----------------------------------------------------------------------------------------


def test_reschedule_mode_frees_the_slot_until_met(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-reschedule", limit=5.0, limit_reset="daily")
    watch = sensor(key_name="tenant-reschedule", usage_at_least=2.0, mode="reschedule", poke_interval=60)
    with pytest.raises(AirflowRescheduleException) as resched:
        watch.execute({"ti": RescheduleTI()})
    assert resched.value.reschedule_date > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=50)
    fake.add_usage(key.hash, 2.5)
    snapshot = watch.execute({"ti": RescheduleTI(dt.datetime.now(dt.timezone.utc))})
    assert snapshot["measured_usage"] == pytest.approx(2.5)


def test_reschedule_mode_times_out_from_the_first_poke(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-late", limit=5.0)
    first = RescheduleTI(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=120))
    with pytest.raises(AirflowSensorTimeout):
        sensor(key_hash=key.hash, usage_at_least=1.0, mode="reschedule", timeout=60).execute({"ti": first})
    with pytest.raises(AirflowSkipException):
        sensor(key_hash=key.hash, usage_at_least=1.0, mode="reschedule", timeout=60, soft_fail=True).execute(
            {"ti": first}
        )


def test_reschedule_mode_fails_the_poke_on_a_transient_failure(fake: LocalOpenRouter) -> None:
    # Nothing survives between reschedules to count failures with; the task's retries take over.
    key = fake.add_key("tenant-reschedule-flaky", limit=5.0)
    fake.inject(Status(500), method="GET", path=f"/keys/{key.hash}")
    with pytest.raises(OpenRouterError, match="500"):
        sensor(key_hash=key.hash, usage_at_least=1.0, mode="reschedule").execute({"ti": RescheduleTI()})


# -- deferrable mode -----------------------------------------------------------------------------------------


def test_deferrable_returns_at_once_when_already_met(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-early", limit=5.0)
    fake.add_usage(key.hash, 4.5)
    snapshot = sensor(key_hash=key.hash, limit_fraction_at_least=0.8, deferrable=True).execute({})
    assert snapshot["fraction_of_limit"] == pytest.approx(0.9)


def test_deferrable_waits_in_the_trigger(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-deferred", limit=5.0, limit_reset="daily")
    fake.add_usage(key.hash, 1.0)
    watch = sensor(
        key_name="tenant-deferred",
        limit_fraction_at_least=0.8,
        deferrable=True,
        poke_interval=0.1,
        timeout=60,
    )
    started = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        watch.execute({})
    assert deferred.value.method_name == "execute_complete"
    # The scheduler's own deferral timeout is a backstop behind the trigger's deadline.
    assert deferred.value.timeout is not None
    assert deferred.value.timeout >= dt.timedelta(seconds=60 - (time.time() - started) - 1)

    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "airflow_provider_openrouter.triggers.key_usage.OpenRouterKeyUsageTrigger"
    kwargs = json.loads(json.dumps(kwargs))
    assert kwargs["key_hash"] == key.hash  # the name was resolved before deferring
    trigger = OpenRouterKeyUsageTrigger(**kwargs)

    async def spend_then_watch() -> list[Any]:
        async def spend() -> None:
            while gets_of(fake, key.hash) < 2:
                await asyncio.sleep(0.01)
            fake.add_usage(key.hash, 3.5)

        spender = asyncio.create_task(spend())
        events = [event async for event in trigger.run()]
        await spender
        return events

    events = asyncio.run(spend_then_watch())
    assert len(events) == 1
    assert events[0].payload["status"] == "success"
    snapshot = watch.resume_execution("execute_complete", {"event": events[0].payload}, {})
    assert snapshot["measured_usage"] == pytest.approx(4.5)
    assert json.loads(json.dumps(snapshot)) == snapshot


@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft-fail"])
def test_deferrable_times_out_like_the_other_modes(fake: LocalOpenRouter, soft_fail: bool) -> None:
    key = fake.add_key("tenant-idle", limit=5.0)
    watch = sensor(
        key_hash=key.hash,
        usage_at_least=1.0,
        deferrable=True,
        poke_interval=0.1,
        timeout=0.5,
        soft_fail=soft_fail,
    )
    with pytest.raises(TaskDeferred) as deferred:
        watch.execute({})
    events = run_trigger(deferred.value.trigger)
    assert [e.payload["status"] for e in events] == ["timeout"]
    assert events[0].payload["snapshot"]["measured_usage"] == 0
    with pytest.raises(
        AirflowSkipException if soft_fail else AirflowSensorTimeout, match=r"Timed out|Skipping"
    ):
        watch.resume_execution("execute_complete", {"event": events[0].payload}, {})


def test_deferral_timeout_from_the_scheduler_is_a_sensor_timeout(fake: LocalOpenRouter) -> None:
    watch = sensor(key_name="k", usage_at_least=1.0, deferrable=True)
    with pytest.raises(AirflowSensorTimeout):
        watch.resume_execution("__fail__", {"error": "Trigger timeout"}, {})


# -- the key becomes unusable --------------------------------------------------------------------------------


def _disabled(fake: LocalOpenRouter) -> str:
    return fake.add_key("tenant-off", limit=5.0, disabled=True).hash


def _expired(fake: LocalOpenRouter) -> str:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    return fake.add_key("tenant-expired", limit=5.0, expires_at=past).hash


def _deleted(fake: LocalOpenRouter) -> str:
    key = fake.add_key("tenant-gone", limit=5.0)
    OpenRouterHook().delete_key(key.hash)
    return key.hash


@pytest.mark.parametrize(
    ("make_key", "reason"), [(_disabled, "disabled"), (_expired, "expired"), (_deleted, "deleted")]
)
@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_an_unusable_key_ends_the_wait(
    fake: LocalOpenRouter, make_key: Callable[[LocalOpenRouter], str], reason: str, mode: str
) -> None:
    key_hash = make_key(fake)
    mode_args: dict[str, Any] = {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    context = {"ti": RescheduleTI()}
    with pytest.raises(OpenRouterKeyUnavailableError, match=reason) as err:
        sensor(key_hash=key_hash, usage_at_least=1.0, **mode_args).execute(context)
    assert err.value.reason == reason
    assert isinstance(err.value, AirflowFailException)  # retrying would not bring it back
    with pytest.raises(AirflowSkipException):
        sensor(key_hash=key_hash, usage_at_least=1.0, soft_fail=True, **mode_args).execute(context)


def test_a_missing_name_ends_the_wait(fake: LocalOpenRouter) -> None:
    with pytest.raises(OpenRouterKeyUnavailableError, match="No key is named 'nobody'"):
        sensor(key_name="nobody", usage_at_least=1.0).execute({})


def test_a_key_deleted_while_waiting_ends_the_wait(fake: LocalOpenRouter, when: Any) -> None:
    key = fake.add_key("tenant-deleted-later", limit=5.0)
    when(lambda: gets_of(fake, key.hash) >= 2, lambda: OpenRouterHook().delete_key(key.hash))
    with pytest.raises(OpenRouterKeyUnavailableError, match="deleted"):
        sensor(key_hash=key.hash, usage_at_least=1.0).execute({})


def test_a_key_disabled_while_deferred_ends_the_wait(fake: LocalOpenRouter) -> None:
    key = fake.add_key("tenant-disabled-later", limit=5.0)
    watch = sensor(key_hash=key.hash, usage_at_least=1.0, deferrable=True, poke_interval=0.1)
    with pytest.raises(TaskDeferred) as deferred:
        watch.execute({})
    OpenRouterHook().update_key(key.hash, disabled=True)
    events = run_trigger(deferred.value.trigger)
    assert events[0].payload["status"] == "key_gone"
    assert events[0].payload["reason"] == "disabled"
    with pytest.raises(OpenRouterKeyUnavailableError, match="is disabled"):
        watch.resume_execution("execute_complete", {"event": events[0].payload}, {})


# -- execute_complete checks the event -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        pytest.param(None, OpenRouterError, "Unexpected event", id="none"),
        pytest.param({"status": "done"}, OpenRouterError, "Unexpected event", id="unknown-status"),
        pytest.param(
            {"status": "success", "message": "ok"}, OpenRouterError, "without a snapshot", id="no-snap"
        ),
        pytest.param(
            {"status": "timeout", "message": "Timed out"}, AirflowSensorTimeout, "Timed out", id="to"
        ),
        pytest.param(
            {"status": "key_gone", "message": "key is disabled", "reason": "disabled"},
            OpenRouterKeyUnavailableError,
            "disabled",
            id="gone",
        ),
        pytest.param(
            {"status": "error", "message": "Polling failed 4 times"}, OpenRouterError, "4 times", id="error"
        ),
        pytest.param(
            {"status": "error", "message": "x", "field": "limit_fraction_at_least", "problem": "no limit"},
            OpenRouterValidationError,
            "limit_fraction_at_least: no limit",
            id="field-error",
        ),
    ],
)
def test_execute_complete_raises_clearly(event: Any, error: type[Exception], match: str) -> None:
    watch = sensor(key_name="k", usage_at_least=1.0, deferrable=True)
    with pytest.raises(error, match=match):
        watch.execute_complete({}, event)
    if event is not None:
        with pytest.raises(AirflowSkipException):
            sensor(key_name="k", usage_at_least=1.0, deferrable=True, soft_fail=True).resume_execution(
                "execute_complete", {"event": event}, {}
            )


def test_execute_complete_returns_the_snapshot() -> None:
    snapshot = {"key_hash": "a" * 64, "met": True}
    event = {"status": "success", "message": "met", "snapshot": snapshot}
    assert sensor(key_name="k", usage_at_least=1.0).execute_complete({}, event) == snapshot
