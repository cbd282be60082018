"""Reschedule-mode sensors polling every N seconds, each until its key has spent ``params.usd``: what
``scripts/measure_reschedule_interval.py`` runs. A file of its own: the sensors below the reliable interval
warn when it is parsed, and only their own tasks parse it.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG

from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor

RESCHEDULE_INTERVALS = (2, 5, 10)
WATCHED = 4
# The DAG folder is all Airflow's processes see of this repository: nothing is imported from tests/.
COMMON = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "is_paused_upon_creation": False,
    "max_active_runs": 16,
    "tags": ["deployment-test"],
}

# Reschedule-mode sensors polling every N seconds, each until its key has spent params.usd.
for interval in RESCHEDULE_INTERVALS:
    with DAG(dag_id=f"deploy_reschedule_every_{interval}s", params={"prefix": "probe", "usd": 1.0}, **COMMON):
        for n in range(WATCHED):
            OpenRouterKeyUsageSensor(
                task_id=f"wait_{n}",
                key_name=f"{{{{ params.prefix }}}}-{n}",
                usage_window="lifetime",
                usage_at_least="{{ params.usd }}",
                mode="reschedule",
                poke_interval=interval,
                timeout=dt.timedelta(minutes=10),
            )
