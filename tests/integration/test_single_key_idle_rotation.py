"""Rotation with overlap for one key: ``CreateApiKeyOperator(keep_old_key=True)`` renames the old key
``<name> [retired <epoch>]`` and leaves it working; ``RetireApiKeysOperator`` retires it once idle, by the
tenant sync's rule, in one pass, waiting in the worker, or deferred to ``RetiredKeysTrigger``.

Everything runs against the local OpenRouter over HTTP. One-pass tests hold the operator's wall clock and the
local OpenRouter's clock at the same instant (as ``test_sync_idle_rotation.py`` does), so "an hour later"
takes no hour; the waiting tests use the real clock with durations of a second or two.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_openrouter.assets import DEFAULT_ASSET_ALIAS, key_uri
from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators import retire as retire_module
from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.operators.retire import RetireApiKeysOperator
from airflow_provider_openrouter.testing import Realism
from airflow_provider_openrouter.triggers.retired_keys import RetiredKeysTrigger
from tests.held_clock import holding

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.triggers.base import TriggerEvent

    from airflow_provider_openrouter.models import CreatedApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
IDLE: dict[str, Any] = {"retire_when_idle_for": HOUR, "retire_deadline": 5 * DAY}


class Run:
    """One task's context, with the outlet accessors Airflow's task runner gives it."""

    def __init__(self) -> None:
        self.outlet_events = OutletEventAccessors()
        self.context: Any = {"outlet_events": self.outlet_events}

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        accessor = self.outlet_events[AssetAlias(DEFAULT_ASSET_ALIAS)]
        return [(event.dest_asset_key.uri, event.extra) for event in accessor.asset_alias_events]


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


@pytest.fixture
def clock(fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``clock(moment)``: the operator and the local OpenRouter both at ``moment`` (epoch seconds)."""
    return holding(retire_module, fake, monkeypatch)


def store(created: CreatedApiKey, context: Any) -> None:
    """A destination that takes the plaintext (the tests look at the keys, not at it)."""


def rotate(
    fake: LocalOpenRouter, name: str, *, old: CreatedApiKey | None = None
) -> tuple[str, float, dict[str, Any]]:
    """Replace ``name``'s key keeping the old one; its hash, the rotation's epoch, the operator's result."""
    old = old or fake.add_key(name)
    result = CreateApiKeyOperator(
        task_id="rotate", name=name, if_exists="replace", keep_old_key=True, deliver_to_callable=store
    ).execute({})
    state = fake.get_key_state(old.hash)
    match = re.fullmatch(rf"{re.escape(name)} \[retired (\d+)\]", state["name"])
    assert match is not None, state["name"]
    return old.hash, float(match[1]), result


def retire(name: str = "svc-a", *, run: Run | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    op = RetireApiKeysOperator(task_id="retire", key_name=name, wait=False, **{**IDLE, **kwargs})
    return op.execute((run or Run()).context)


def only(result: list[dict[str, Any]]) -> tuple[str, str]:
    [entry] = result
    return entry["action"], entry["reason"]


# ---------------------------------------------------------------------------------- keep_old_key ---


def test_replace_keeping_the_old_key_leaves_one_key_under_the_name_and_the_old_one_working(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = fake.add_key("svc-a")
    old, at, result = rotate(fake, "svc-a", old=previous)

    assert result["action"] == "replaced"
    assert result["replaced_key_hashes"] == [old]
    assert result["retired_key_hashes"] == [old]
    named = [k["hash"] for k in fake.keys() if k["name"] == "svc-a"]  # noqa: SIM118
    assert named == [result["hash"]]
    kept = fake.get_key_state(old)
    assert kept["disabled"] is False
    assert abs(at - time.time()) < 60
    assert not [r for r in fake.requests if r.method == "DELETE"]
    # Its client still gets answers with it: OpenRouter takes the old plaintext.
    connection = json.loads(fake.connection_json(max_retries=0))
    monkeypatch.setenv("AIRFLOW_CONN_OLD_KEY", json.dumps({**connection, "password": previous.plaintext}))
    assert OpenRouterHook(openrouter_conn_id="old_key").get_current_key().label == previous.api_key.label


def test_replace_without_keep_old_key_still_deletes_the_old_key(fake: LocalOpenRouter) -> None:
    old = fake.add_key("svc-a")
    result = CreateApiKeyOperator(
        task_id="rotate", name="svc-a", if_exists="replace", deliver_to_callable=store
    ).execute({})
    assert result["replaced_key_hashes"] == [old.hash]
    assert result["retired_key_hashes"] == []
    assert not fake.has_key(old.hash)


# ------------------------------------------------------------------------------- one pass, held clock ---


def test_the_old_key_is_kept_while_used_and_retired_once_idle(fake: LocalOpenRouter, clock: Any) -> None:
    old, at, _ = rotate(fake, "svc-a")
    clock(at + 10 * MINUTE)
    fake.add_usage(old, 0.01)

    clock(at + 50 * MINUTE)
    result = retire()
    assert result == [
        {
            "key_hash": old,
            "name": fake.get_key_state(old)["name"],
            "action": "keep",
            "reason": "rotated out of 'svc-a', still working until idle: last used 40 min ago; idle for 1 h "
            "needed; deadline in 5 d",
        }
    ]
    assert fake.get_key_state(old)["disabled"] is False

    # An hour after the last use: deleted at once (no grace), its event on the name's asset.
    clock(at + 10 * MINUTE + HOUR)
    run = Run()
    assert only(retire(run=run)) == ("delete", "rotated out of 'svc-a'; idle for 1 h; grace over")
    assert not fake.has_key(old)
    [(uri, extra)] = run.events()
    assert uri == key_uri("svc-a")
    assert (extra["action"], extra["key_hash"], extra["retired"]) == ("deleted", old, True)
    assert retire() == []


def test_with_a_grace_it_is_disabled_first_and_deleted_after_it(fake: LocalOpenRouter, clock: Any) -> None:
    old, at, _ = rotate(fake, "svc-a")
    clock(at + 10 * MINUTE)
    fake.add_usage(old, 0.01)
    idle = at + 10 * MINUTE + HOUR
    clock(idle)
    assert only(retire(rotation_grace=DAY)) == (
        "disable",
        "rotated out of 'svc-a'; idle for 1 h (last used 1 h ago)",
    )
    assert fake.get_key_state(old)["disabled"] is True
    clock(idle + MINUTE)
    [waiting] = retire(rotation_grace=DAY)
    assert waiting["action"] == "keep"
    assert waiting["reason"] == "rotated out of 'svc-a' and disabled; deleted in 24 h"
    clock(idle + DAY)
    assert only(retire(rotation_grace=DAY)) == ("delete", "rotated out of 'svc-a'; idle for 1 h; grace over")
    assert not fake.has_key(old)


def test_a_key_without_recorded_use_is_retired_at_the_deadline(fake: LocalOpenRouter, clock: Any) -> None:
    old, at, _ = rotate(fake, "svc-a")
    clock(at + 2 * DAY)
    assert only(retire()) == (
        "keep",
        "rotated out of 'svc-a', still working until idle: no use recorded, so it waits for the deadline "
        "in 3 d",
    )
    assert fake.has_key(old)
    clock(at + 5 * DAY)
    assert only(retire()) == ("delete", "rotated out of 'svc-a'; deadline reached; grace over")
    assert not fake.has_key(old)


def test_a_busy_key_is_retired_at_the_deadline(fake: LocalOpenRouter, clock: Any) -> None:
    old, at, _ = rotate(fake, "svc-a")
    clock(at + 5 * DAY - MINUTE)
    fake.add_usage(old, 0.01)
    clock(at + 5 * DAY)
    assert only(retire()) == ("delete", "rotated out of 'svc-a'; deadline reached; grace over")


def test_a_key_deleted_by_another_run_since_the_walk_is_gone_not_a_failure(
    fake: LocalOpenRouter, clock: Any
) -> None:
    old, at, _ = rotate(fake, "svc-a")
    clock(at + 10 * MINUTE)
    fake.add_usage(old, 0.01)
    clock(at + 2 * HOUR)  # idle for an hour: due to be disabled, with a day of grace before the delete
    # Another retire run deletes it; this run's walk still lists it (the list lags behind the write).
    fake.set_realism(Realism(list_lag=60))
    OpenRouterHook().delete_key(old)
    assert old in fake.listed_hashes()
    assert retire(rotation_grace=DAY) == []
    assert [r.status for r in fake.requests if r.method == "PATCH"][-1] == 404


def test_only_the_names_asked_for_are_touched(fake: LocalOpenRouter, clock: Any) -> None:
    mine, at, _ = rotate(fake, "svc-a")
    other, _, _ = rotate(fake, "svc-ab")
    elsewhere, _, _ = rotate(fake, "web-a")
    clock(at + 6 * DAY)
    assert [entry["key_hash"] for entry in retire()] == [mine]
    assert fake.has_key(other)
    by_prefix = RetireApiKeysOperator(task_id="r", name_prefix="svc-", wait=False, **IDLE).execute({})
    assert [entry["key_hash"] for entry in by_prefix] == [other]
    assert fake.has_key(elsewhere)


# ---------------------------------------------------------------------------------- waiting, real clock ---


def test_waiting_in_the_worker_ends_once_the_key_is_idle(fake: LocalOpenRouter) -> None:
    old, _, _ = rotate(fake, "svc-a")
    fake.add_usage(old, 0.01)
    used = time.time()
    op = RetireApiKeysOperator(
        task_id="retire",
        key_name="svc-a",
        retire_when_idle_for=1.5,
        retire_deadline=60,
        deferrable=False,
        poll_interval=0.1,
    )
    result = op.execute({})
    assert only(result)[0] == "delete"
    assert time.time() - used >= 1.0  # last_used_at has whole seconds at best: not before it went idle
    assert not fake.has_key(old)


async def test_deferred_the_trigger_fires_only_once_retiring_is_due(fake: LocalOpenRouter) -> None:
    old, _, _ = rotate(fake, "svc-a")
    fake.add_usage(old, 0.01)
    op = RetireApiKeysOperator(
        task_id="retire",
        key_name="svc-a",
        retire_when_idle_for=1.0,
        retire_deadline=60,
        deferrable=True,
        poll_interval=0.1,
    )
    with pytest.raises(TaskDeferred) as deferred:
        await asyncio.to_thread(op.execute, {})
    trigger = deferred.value.trigger
    assert isinstance(trigger, RetiredKeysTrigger)
    classpath, kwargs = trigger.serialize()
    trigger = RetiredKeysTrigger(**kwargs)  # as the triggerer builds it
    assert classpath.endswith("retired_keys.RetiredKeysTrigger")

    stopped: list[float] = []

    async def keep_using_it() -> None:
        for _ in range(10):
            fake.add_usage(old, 0.01)
            await asyncio.sleep(0.2)
        stopped.append(time.time())

    user = asyncio.create_task(keep_using_it())
    events: list[TriggerEvent] = [event async for event in trigger.run()]
    fired = time.time()
    await user
    [event] = events
    assert event.payload["status"] == "due"
    assert event.payload["key_hash"] == old
    # Not while the key was in use; and promptly once it had been idle for the second.
    assert fired >= stopped[0]
    assert fired - stopped[0] < 3.0
    assert fake.has_key(old)

    result = await asyncio.to_thread(
        op.execute_complete, {}, event=event.payload, **(deferred.value.kwargs or {})
    )
    assert only(result)[0] == "delete"
    assert not fake.has_key(old)


async def test_the_trigger_fires_when_a_watched_key_is_gone(fake: LocalOpenRouter) -> None:
    old, _, _ = rotate(fake, "svc-a")
    name = fake.get_key_state(old)["name"]
    trigger = RetiredKeysTrigger(
        keys=[{"key_hash": old, "key_name": name}],
        rules={
            "retire_when_idle_for": 60,
            "retire_deadline": 600,
            "rotation_overlap": 0,
            "rotation_grace": 0,
        },
        poll_interval=0.05,
    )
    await asyncio.to_thread(OpenRouterHook().delete_key, old)
    [event] = [event async for event in trigger.run()]
    assert event.payload["status"] == "due"


# ---------------------------------------------------------------------------------------- validation ---


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"keep_old_key": "yes", "if_exists": "replace"}, "keep_old_key", id="not-a-bool"),
        pytest.param({"keep_old_key": True}, "keep_old_key", id="needs-replace"),
        pytest.param({"keep_old_key": True, "if_exists": "reuse"}, "keep_old_key", id="not-with-reuse"),
    ],
)
def test_keep_old_key_is_checked_when_the_dag_is_parsed(
    fake: LocalOpenRouter, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        CreateApiKeyOperator(task_id="c", name="svc-a", deliver_to_callable=store, **arguments)
    assert raised.value.field == field
    assert fake.requests == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({}, "key_name, name_prefix", id="neither"),
        pytest.param({"key_name": "a", "name_prefix": "a"}, "key_name, name_prefix", id="both"),
        pytest.param({"key_name": " "}, "key_name", id="blank-name"),
        pytest.param({"key_name": "a", "retire_when_idle_for": 0}, "retire_when_idle_for", id="idle-zero"),
        pytest.param(
            {"key_name": "a", "retire_when_idle_for": DAY, "retire_deadline": HOUR},
            "retire_deadline",
            id="deadline-before-idle",
        ),
        pytest.param({"key_name": "a", "rotation_grace": -1}, "rotation_grace", id="negative-grace"),
        pytest.param({"key_name": "a", "wait": "yes"}, "wait", id="wait-not-a-bool"),
        pytest.param({"key_name": "a", "deferrable": 1}, "deferrable", id="deferrable-not-a-bool"),
        pytest.param({"key_name": "a", "poll_interval": 0}, "poll_interval", id="poll-zero"),
        pytest.param({"key_name": "a", "workspace_id": "nope"}, "workspace_id", id="bad-workspace"),
    ],
)
def test_retire_arguments_are_checked_when_the_dag_is_parsed(
    fake: LocalOpenRouter, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        RetireApiKeysOperator(task_id="r", **arguments)
    assert raised.value.field == field
    assert fake.requests == []


def test_templated_durations_are_checked_once_rendered_before_any_request(fake: LocalOpenRouter) -> None:
    op = RetireApiKeysOperator(task_id="r", key_name="svc-a", retire_deadline="{{ params.deadline }}")
    op.retire_deadline = "soon"  # as rendered
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute({})
    assert raised.value.field == "retire_deadline"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"keys": []}, "keys", id="no-keys"),
        pytest.param(
            {"keys": [{"key_hash": "0" * 64, "key_name": "svc-a"}]}, "keys.key_name", id="not-retired"
        ),
        pytest.param(
            {"keys": [{"key_hash": "x", "key_name": "a [retired 1767225600]"}]}, "key_hash", id="hash"
        ),
        pytest.param({"rules": {"retire_deadline": 0}}, "retire_deadline", id="rules"),
    ],
)
def test_the_trigger_checks_its_arguments(arguments: dict[str, Any], field: str) -> None:
    given: dict[str, Any] = {
        "keys": [{"key_hash": "0" * 64, "key_name": "svc-a [retired 1767225600]"}],
        "rules": {"retire_deadline": DAY},
        **arguments,
    }
    with pytest.raises(OpenRouterValidationError) as raised:
        RetiredKeysTrigger(**given)
    assert raised.value.field == field


def test_importing_the_operator_pulls_in_no_http_client() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, airflow_provider_openrouter.operators.retire; "
        "print([m for m in ('requests', 'aiohttp', 'airflow_provider_openrouter.hooks.openrouter', "
        "'airflow_provider_openrouter.triggers.retired_keys') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
