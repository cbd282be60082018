"""Usage conditions shared by the sensor and the trigger: validation, decisions, progress lines, import."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_openrouter._usage import (
    UsageConditions,
    evaluate,
    money,
    unavailable_reason,
)
from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.models import ApiKey

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def api_key(**fields: Any) -> ApiKey:
    data: dict[str, Any] = {
        "hash": "0123456789ab" + "c" * 52,
        "name": "tenant-acme",
        "label": "sk-or-v1-abc...123",
        "created_at": "2026-11-01T00:00:00Z",
        "limit": 5.0,
        "limit_remaining": 1.8,
        "limit_reset": "daily",
        "usage": 40.0,
        "usage_daily": 3.2,
        "usage_weekly": 12.0,
        "usage_monthly": 30.0,
        "byok_usage_daily": 0.5,
    }
    data.update(fields)
    return ApiKey.from_api(data)


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (3.2, "$3.20"),
        (0.0, "$0.00"),
        (0.0042, "$0.0042"),
        (1234.5, "$1,234.50"),
        (None, "none"),
        (-2, "-$2.00"),
    ],
)
def test_money(usd: float | None, shown: str) -> None:
    assert money(usd) == shown


def test_the_progress_line_reads_like_a_sentence() -> None:
    check = evaluate(api_key(), UsageConditions(usage_at_least=5.0), now=NOW)
    assert check.progress == (
        "key 'tenant-acme' (0123456789ab…): usage_daily $3.20 of $5.00 threshold (64 %) → waiting"
    )
    assert not check.met


def test_every_condition_on_one_line() -> None:
    conditions = UsageConditions(
        usage_window="daily",
        usage_at_least=3.0,
        limit_fraction_at_least=0.8,
        limit_remaining_at_most=1.0,
        include_byok=True,
    )
    check = evaluate(api_key(), conditions, now=NOW)
    assert check.progress == (
        "key 'tenant-acme' (0123456789ab…): usage_daily+byok $3.70 of $3.00 threshold (123 %); "
        "usage_daily+byok $3.70 is 74 % of the $5.00 limit (threshold 80 %); "
        "limit_remaining $1.80 of $5.00 (threshold at most $1.00) → condition met"
    )
    assert check.met
    assert [c["met"] for c in check.snapshot["conditions"].values()] == [True, False, False]
    assert json.loads(json.dumps(check.snapshot)) == check.snapshot
    assert check.snapshot["checked_at"] == "2026-11-25T12:00:00Z"
    assert "label" not in check.snapshot  # nothing derived from the key's secret


def test_a_zero_limit_is_spent_from_the_start() -> None:
    check = evaluate(api_key(limit=0.0, usage_daily=0.0), UsageConditions(limit_fraction_at_least=1), now=NOW)
    assert check.met
    assert "is all of the $0.00 limit" in check.progress
    assert check.snapshot["fraction_of_limit"] is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"disabled": True}, "disabled"),
        ({"expires_at": "2026-11-25T11:59:59Z"}, "expired"),
        ({"expires_at": "2026-11-25T11:59:59+00:00"}, "expired"),
        ({"expires_at": "2026-11-25T12:00:01Z"}, None),
        ({"expires_at": None}, None),
        ({"disabled": True, "expires_at": "2020-01-01T00:00:00Z"}, "disabled"),
    ],
)
def test_unavailable_reason(fields: dict[str, Any], reason: str | None) -> None:
    key = api_key(**fields)
    assert unavailable_reason(key, NOW) == reason
    check = evaluate(key, UsageConditions(usage_at_least=0.01), now=NOW)
    # A key that can no longer spend never counts as "met", even past the threshold.
    assert check.met is (reason is None)
    assert check.unavailable == reason
    if reason:
        assert check.progress.endswith(f"→ key is {reason}")


def test_conditions_round_trip_and_compare() -> None:
    conditions = UsageConditions(
        usage_window="monthly", usage_at_least="12.5", limit_remaining_at_most=0, match_all=True
    )
    assert conditions.usage_at_least == 12.5  # rendered templates are strings
    assert UsageConditions(**json.loads(json.dumps(conditions.to_dict()))) == conditions
    assert conditions != UsageConditions(usage_at_least=12.5)
    assert conditions.given() == ["usage_at_least", "limit_remaining_at_most"]
    assert "usage_window='monthly'" in repr(conditions)


@pytest.mark.parametrize(
    ("kwargs", "field", "problem"),
    [
        ({"usage_window": "yearly", "usage_at_least": 1}, "usage_window", "daily, weekly, monthly, lifetime"),
        ({"usage_at_least": float("nan")}, "usage_at_least", "finite"),
        ({"limit_fraction_at_least": "eighty"}, "limit_fraction_at_least", "ratio"),
        ({"limit_fraction_at_least": True}, "limit_fraction_at_least", "ratio"),
        ({"limit_fraction_at_least": 1.01}, "limit_fraction_at_least", "at most 1"),
        ({"limit_remaining_at_most": [1]}, "limit_remaining_at_most", "number"),
        ({}, "usage_at_least/limit_fraction_at_least/limit_remaining_at_most", "at least one condition"),
    ],
)
def test_validation_names_the_field(kwargs: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(OpenRouterValidationError, match=problem) as err:
        UsageConditions(**kwargs)
    assert err.value.field == field


# -- what a DAG file pays to import the sensor -------------------------------------------------------------

PROBE = """
import json, sys
import airflow.sdk
before = set(sys.modules)
import airflow_provider_openrouter.sensors.key_usage as module
sensor = module.OpenRouterKeyUsageSensor(task_id="t", key_name="k", usage_at_least=1)
print(json.dumps({"new": sorted(set(sys.modules) - before), "deferrable": sensor.deferrable}))
"""


@pytest.mark.parametrize("default_deferrable", ["False", "True"])
def test_importing_the_sensor_is_light_and_reads_default_deferrable(default_deferrable: str) -> None:
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": default_deferrable}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    heavy = ("aiohttp", "requests", "airflow.triggers", "airflow_provider_openrouter.testing")
    assert [m for m in result["new"] if m.startswith(heavy)] == []
    assert "airflow_provider_openrouter.hooks.openrouter" not in result["new"]
    assert result["deferrable"] is (default_deferrable == "True")
