"""Reschedule mode below the interval a real scheduler handles reliably warns at DAG parse time."""

from __future__ import annotations

import warnings

import pytest

from airflow_provider_openrouter.sensors.key_usage import RESCHEDULE_MIN_INTERVAL, OpenRouterKeyUsageSensor


def _sensor(**kwargs: object) -> OpenRouterKeyUsageSensor:
    return OpenRouterKeyUsageSensor(task_id="watch", key_name="tenant-a", usage_at_least=1.0, **kwargs)  # type: ignore[arg-type]


def test_reschedule_below_the_reliable_interval_warns() -> None:
    with pytest.warns(UserWarning, match=r"watch: poke_interval=2 s in reschedule mode is below 5 s.*71172"):
        _sensor(mode="reschedule", poke_interval=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "reschedule", "poke_interval": RESCHEDULE_MIN_INTERVAL},
        {"mode": "reschedule", "poke_interval": 300},
        {"mode": "poke", "poke_interval": 1},
        {"mode": "reschedule", "poke_interval": 1, "deferrable": True},
    ],
)
def test_no_warning_at_or_above_it_or_in_other_modes(kwargs: dict[str, object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _sensor(**kwargs)
