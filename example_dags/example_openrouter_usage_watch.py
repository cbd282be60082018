"""Watch one tenant's daily OpenRouter spend: warn at half of its daily limit, cut it off at 80 %.

1. ``ensure_tenant_key`` makes sure the tenant has a key (named by the ``key_name`` param) with a daily limit:
   an existing key of that name is reused as it is; otherwise one is created and its plaintext written to the
   Airflow Variable ``openrouter_api_key_<key_name>`` for the tenant to collect.
2. ``warn_at_half_limit`` (reschedule mode: no worker slot between polls) waits until the key has used half
   of its limit today, and ``warn_tenant`` logs a warning.
3. ``watch_daily_usage`` (deferrable: the triggerer polls, no worker slot at all) waits until 80 % is used;
   ``notify_owner`` logs who crossed the line and by how much, and ``disable_tenant_key`` disables the key.

The run is daily; a tenant that stays below a threshold all day is skipped at the sensor's timeout rather than
failed (``soft_fail``), and the tasks after it are skipped with it. A key that is disabled, expired or deleted
while it is watched ends the wait the same way.

``OPENROUTER_USAGE_WATCH_POLL_SECONDS`` (default 300) sets how often the sensors poll OpenRouter.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator, UpdateApiKeyOperator
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor

DAG_ID = "example_openrouter_usage_watch"
POLL_SECONDS = float(os.environ.get("OPENROUTER_USAGE_WATCH_POLL_SECONDS", "300"))

with DAG(
    dag_id=DAG_ID,
    description="Warn a tenant at 50 % of its daily OpenRouter limit; at 80 %, notify and disable its key",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    params={
        "key_name": Param("airflow-demo-usage-watch", type="string", description="the tenant's key name"),
        "daily_limit": Param(5.0, type="number", exclusiveMinimum=0, description="USD per UTC day"),
    },
    doc_md=__doc__,
) as dag:
    ensure_tenant_key = CreateApiKeyOperator(
        task_id="ensure_tenant_key",
        name="{{ params.key_name }}",
        limit="{{ params.daily_limit }}",
        limit_reset="daily",
        if_exists="reuse",
        deliver_to_variable="openrouter_api_key_{{ params.key_name }}",
    )

    # [START howto_sensor_openrouter_key_usage]
    warn_at_half_limit = OpenRouterKeyUsageSensor(
        task_id="warn_at_half_limit",
        key_name="{{ params.key_name }}",
        usage_window="daily",
        limit_fraction_at_least=0.5,
        mode="reschedule",
        poke_interval=POLL_SECONDS,
        timeout=dt.timedelta(days=1),
        soft_fail=True,
    )
    # [END howto_sensor_openrouter_key_usage]

    @task
    def warn_tenant(snapshot: dict[str, Any]) -> None:
        print(
            f"Tenant key {snapshot['key_name']!r} has used {snapshot['fraction_of_limit']:.0%} of its "
            f"${snapshot['limit']:.2f} daily limit (${snapshot['measured_usage']:.2f} today)"
        )

    # [START howto_sensor_openrouter_key_usage_deferrable]
    watch_daily_usage = OpenRouterKeyUsageSensor(
        task_id="watch_daily_usage",
        key_name="{{ params.key_name }}",
        usage_window="daily",
        limit_fraction_at_least=0.8,
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=dt.timedelta(days=1),
        soft_fail=True,
    )

    @task
    def notify_owner(snapshot: dict[str, Any]) -> str:
        # Swap the log line for your alerting: a Slack or e-mail notifier, a ticket, a webhook.
        message = (
            f"Tenant key {snapshot['key_name']!r} reached {snapshot['fraction_of_limit']:.0%} of its "
            f"${snapshot['limit']:.2f} daily limit (${snapshot['measured_usage']:.2f} today): disabling it"
        )
        print(message)
        return message

    disable_tenant_key = UpdateApiKeyOperator(
        task_id="disable_tenant_key", key_name="{{ params.key_name }}", disabled=True
    )

    notify_owner(watch_daily_usage.output) >> disable_tenant_key
    # [END howto_sensor_openrouter_key_usage_deferrable]

    ensure_tenant_key >> warn_at_half_limit >> warn_tenant(warn_at_half_limit.output) >> watch_daily_usage
