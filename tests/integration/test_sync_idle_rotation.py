"""Rotation that retires the old key once it is idle: the rule as a pure plan, then the operator over HTTP.

The pure tests hand the planner keys made in memory with a ``last_used_at``; the others rotate a key through
``SyncApiKeysOperator`` against the local OpenRouter, spend through the old key with its usage controls, and
run later syncs at chosen moments: the operator's wall clock and the local OpenRouter's clock are held at the
same instant, so "an hour later" takes no hour.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter._claims import retired_name
from airflow_provider_openrouter._sync_plan import Planner, PlanPolicy, validate_tenants
from airflow_provider_openrouter._sync_report import plan_markdown, plan_table
from airflow_provider_openrouter._sync_retirement import span
from airflow_provider_openrouter.exceptions import OpenRouterValidationError, SyncRefusedError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.models import ApiKey
from airflow_provider_openrouter.operators import sync as sync_module
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator
from airflow_provider_openrouter.testing import Realism
from tests.held_clock import holding

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.testing import LocalOpenRouter

PREFIX = "t-"
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc).timestamp()
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
IDLE = {"retire_when_idle_for": HOUR, "retire_deadline": 5 * DAY, "rotation_grace": DAY}


def stamp(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).isoformat()


def key(name: str, number: int, *, last_used: float | None = None, disabled: bool = False) -> ApiKey:
    return ApiKey.from_api(
        {
            "hash": f"{number:064x}",
            "name": name,
            "label": f"sk-or-v1-...{number:03d}",
            "created_at": stamp(NOW - 30 * DAY),
            "disabled": disabled,
            "last_used_at": None if last_used is None else stamp(last_used),
        }
    )


def plan_retired(
    rotated_ago: float, *, last_used_ago: float | None, disabled: bool = False, **policy: Any
) -> dict[str, Any]:
    """The plan for one tenant whose key was rotated ``rotated_ago`` seconds before ``NOW``."""
    used = None if last_used_ago is None else NOW - last_used_ago
    old = key(retired_name("t-r", NOW - rotated_ago), 2, last_used=used, disabled=disabled)
    planner = Planner(
        validate_tenants([{"name": "t-r"}], PREFIX),
        PlanPolicy(name_prefix=PREFIX, now=NOW, **{**IDLE, **policy}),
    )
    keys = [key("t-r", 1), old]
    return dict(planner.plan(lambda _ws: iter(keys), read_back=lambda _h: None))


def only(planned: dict[str, Any]) -> tuple[str, str] | None:
    """The one action on the rotated-out key, as (action, reason)."""
    assert len(planned["actions"]) <= 1
    return next(((a["action"], a["reason"]) for a in planned["actions"]), None)


# ------------------------------------------------------------------------------------------- the rule ---


def test_kept_while_used_with_the_reason_in_the_table_and_the_markdown() -> None:
    planned = plan_retired(2 * HOUR, last_used_ago=3 * MINUTE)

    assert only(planned) == (
        "keep",
        "rotated out of 't-r', still working until idle: last used 3 min ago; idle for 1 h needed; "
        "deadline in 4.9 d",
    )
    # A fixed overlap of an hour would have disabled it by now; idle-aware, nothing destructive is planned.
    assert planned["counts"]["keep"] == 1
    assert planned["counts"]["disable"] == planned["counts"]["delete"] == 0
    assert "last used 3 min ago; idle for 1 h needed; deadline in 4.9 d" in plan_table(planned)
    assert "| keep | t-r [retired " in plan_markdown(planned)


def test_retired_once_idle_then_deleted_after_the_grace() -> None:
    assert only(plan_retired(3 * HOUR, last_used_ago=HOUR + 1)) == (
        "disable",
        "rotated out of 't-r'; idle for 1 h (last used 1 h ago)",
    )
    # Once disabled it cannot be used: the delete follows the grace from the moment it went idle.
    assert only(plan_retired(3 * HOUR, last_used_ago=HOUR + 1, disabled=True)) is None
    assert only(plan_retired(DAY + 3 * HOUR, last_used_ago=DAY + HOUR + 1, disabled=True)) == (
        "delete",
        "rotated out of 't-r'; idle for 1 h; grace over",
    )


def test_the_idle_time_counts_from_the_rotation_at_the_earliest() -> None:
    # Last used a day before the rotation: its clients still get the idle time after it.
    waiting = only(plan_retired(30 * MINUTE, last_used_ago=DAY))
    assert waiting is not None
    assert waiting[0] == "keep"
    assert "not used since the rotation 30 min ago; idle for 1 h needed" in waiting[1]
    assert only(plan_retired(HOUR, last_used_ago=DAY)) == (
        "disable",
        "rotated out of 't-r'; idle for 1 h (not used since the rotation 1 h ago)",
    )


def test_retired_at_the_deadline_however_busy() -> None:
    assert only(plan_retired(5 * DAY, last_used_ago=10.0)) == (
        "disable",
        "rotated out of 't-r'; deadline reached (last used 10 s ago)",
    )
    assert only(plan_retired(6 * DAY, last_used_ago=0.0, disabled=True)) == (
        "delete",
        "rotated out of 't-r'; deadline reached; grace over",
    )


def test_a_key_without_last_used_at_waits_for_the_deadline() -> None:
    assert only(plan_retired(2 * DAY, last_used_ago=None)) == (
        "keep",
        "rotated out of 't-r', still working until idle: no use recorded, so it waits for the deadline "
        "in 3 d",
    )
    assert only(plan_retired(5 * DAY, last_used_ago=None)) == (
        "disable",
        "rotated out of 't-r'; deadline reached (no use recorded)",
    )


def test_without_an_idle_time_the_fixed_overlap_holds() -> None:
    fixed: dict[str, Any] = {"retire_when_idle_for": None, "rotation_overlap": HOUR}
    assert only(plan_retired(30 * MINUTE, last_used_ago=1.0, **fixed)) is None
    assert only(plan_retired(2 * HOUR, last_used_ago=1.0, **fixed)) == (
        "disable",
        "rotated out of 't-r'; overlap over",
    )


def test_spans_read_as_people_say_them() -> None:
    assert [span(s) for s in (0.4, 45, 3 * MINUTE, 90 * MINUTE, 36 * HOUR, 4.94 * DAY, 30 * DAY, -5)] == [
        "0.4 s",
        "45 s",
        "3 min",
        "1.5 h",
        "1.5 d",
        "4.9 d",
        "30 d",
        "0 s",
    ]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"retire_when_idle_for": 0}, "retire_when_idle_for", id="idle-zero"),
        pytest.param({"retire_when_idle_for": "soon"}, "retire_when_idle_for", id="idle-not-a-duration"),
        pytest.param({"retire_deadline": None}, "retire_deadline", id="no-deadline"),
        pytest.param(
            {"retire_when_idle_for": dt.timedelta(days=2), "retire_deadline": DAY},
            "retire_deadline",
            id="deadline-before-idle",
        ),
    ],
)
def test_bad_retirement_arguments_are_refused_when_the_dag_is_parsed(
    arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        SyncApiKeysOperator(task_id="sync", tenants=[], name_prefix=PREFIX, **arguments)
    assert raised.value.field == field


def test_retirement_arguments_take_timedeltas() -> None:
    op = SyncApiKeysOperator(
        task_id="sync",
        tenants=[],
        name_prefix=PREFIX,
        retire_when_idle_for=dt.timedelta(hours=2),
        retire_deadline=dt.timedelta(days=1),
    )
    assert op.retirement["retire_when_idle_for"] == 2 * HOUR
    assert op.retirement["retire_deadline"] == DAY


# ------------------------------------------------------------------ the operator over real HTTP ---


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


@pytest.fixture
def clock(fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``clock(moment)``: the operator and the local OpenRouter both at ``moment`` (epoch seconds)."""
    return holding(sync_module, fake, monkeypatch)


def sync(tenants: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    op = SyncApiKeysOperator(
        task_id="sync",
        tenants=tenants,
        name_prefix=PREFIX,
        deliver_to_callable=lambda created, context: None,
        **{**IDLE, **kwargs},
    )
    return op.execute({})


def rotate(fake: LocalOpenRouter, name: str) -> tuple[str, float]:
    """Rotate ``name``'s key through the operator; the old key's hash and the rotation's epoch."""
    old = fake.add_key(name=name)
    sync([{"name": name, "rotate": True}])
    [retired] = [k for k in fake.keys() if k["name"].startswith(f"{name} [retired ")]  # noqa: SIM118
    assert retired["hash"] == old.hash
    match = re.search(r"\[retired (\d+)\]", retired["name"])
    assert match is not None
    return old.hash, float(match[1])


def state(fake: LocalOpenRouter, key_hash: str) -> dict[str, Any] | None:
    return fake.get_key_state(key_hash) if fake.has_key(key_hash) else None


def retired_action(result: dict[str, Any], key_hash: str) -> tuple[str, str] | None:
    return next(((a["action"], a["reason"]) for a in result["actions"] if a["key_hash"] == key_hash), None)


def test_the_old_key_is_kept_while_used_and_retired_once_idle(fake: LocalOpenRouter, clock: Any) -> None:
    old, at = rotate(fake, "t-busy")
    tenants = [{"name": "t-busy"}]

    # Spent through twice, each time within the hour before the next run: kept well past an hour's overlap.
    for used, run in ((10 * MINUTE, 50 * MINUTE), (2 * HOUR, 2 * HOUR + 30 * MINUTE)):
        clock(at + used)
        fake.add_usage(old, 0.01)
        clock(at + run)
        result = sync(tenants)
        action = retired_action(result, old)
        assert action is not None
        assert action[0] == "keep"
        assert f"last used {span(run - used)} ago; idle for 1 h needed" in action[1]
        assert result["applied"]["counts"]["disable"] == 0
        kept = state(fake, old)
        assert kept is not None
        assert kept["disabled"] is False

    # An hour after the last use the next run disables it; a day (the grace) later one deletes it.
    clock(at + 3 * HOUR + 31 * MINUTE)
    result = sync(tenants)
    assert retired_action(result, old) == (
        "disable",
        "rotated out of 't-busy'; idle for 1 h (last used 1.5 h ago)",
    )
    disabled = state(fake, old)
    assert disabled is not None
    assert disabled["disabled"] is True
    clock(at + 3 * HOUR + DAY + 31 * MINUTE)
    sync(tenants)
    assert state(fake, old) is None
    assert [k["name"] for k in fake.keys()] == ["t-busy"]  # noqa: SIM118


def test_the_old_key_is_retired_at_the_deadline_though_still_used(fake: LocalOpenRouter, clock: Any) -> None:
    old, at = rotate(fake, "t-late")
    clock(at + 5 * DAY - 5 * MINUTE)
    fake.add_usage(old, 0.01)
    clock(at + 5 * DAY)
    result = sync([{"name": "t-late"}])
    assert retired_action(result, old) == (
        "disable",
        "rotated out of 't-late'; deadline reached (last used 5 min ago)",
    )
    disabled = state(fake, old)
    assert disabled is not None
    assert disabled["disabled"] is True


def test_an_old_key_deleted_by_another_run_since_the_walk_is_gone_not_a_failure(
    fake: LocalOpenRouter, clock: Any
) -> None:
    old, at = rotate(fake, "t-gone")
    clock(at + 5 * DAY)
    # A retire task (or another sync) deletes it; this run's walk still lists it (the list lags the write).
    fake.set_realism(Realism(list_lag=60))
    OpenRouterHook().delete_key(old)
    assert old in fake.listed_hashes()
    result = sync([{"name": "t-gone"}])
    assert retired_action(result, old) is not None
    assert [r.status for r in fake.requests if r.method == "PATCH"][-1] == 404
    assert result["applied"]["counts"]["disable"] == 0


def test_an_approved_plan_applies_though_the_waiting_reason_changed(
    fake: LocalOpenRouter, clock: Any
) -> None:
    old, at = rotate(fake, "t-ok")
    clock(at + 10 * MINUTE)
    fake.add_usage(old, 0.01)
    tenants = [{"name": "t-ok"}]
    clock(at + 20 * MINUTE)
    approved = sync(tenants, mode="plan")
    clock(at + 40 * MINUTE)
    result = sync(tenants, mode="apply", plan=approved)
    before, after = retired_action(approved, old), retired_action(result, old)
    assert before is not None
    assert after is not None
    assert before[0] == after[0] == "keep"
    assert before[1] != after[1]  # 10 min ago, then 30 min ago: not an action the approver did not see
    # Gone idle since the approval: a disable nobody approved, so the apply refuses and changes nothing.
    clock(at + 2 * HOUR)
    with pytest.raises(SyncRefusedError, match="not approved"):
        sync(tenants, mode="apply", plan=approved)
    kept = state(fake, old)
    assert kept is not None
    assert kept["disabled"] is False
