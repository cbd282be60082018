"""Decommission a tenant: disable its OpenRouter key at once, delete it after a grace period.

Disabling stops the key immediately and can still be undone (``UpdateApiKeyOperator(disabled=False)``);
deleting is final. The grace period between the two is waited out by a deferrable sensor, so it holds no
worker slot however long it is.

Params: ``tenant`` (the key is ``tenant-<tenant>``, as :mod:`example_openrouter_provision_tenants` names it)
and ``grace_period_seconds`` (default: 7 days).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG, Param, task

from airflow_provider_openrouter.operators.api_key import DeleteApiKeyOperator, UpdateApiKeyOperator

DAG_ID = "example_openrouter_decommission"

with DAG(
    dag_id=DAG_ID,
    description="Disable a tenant's OpenRouter key, then delete it after a grace period",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    params={
        "tenant": Param("initech", type="string", description="tenant to decommission"),
        "grace_period_seconds": Param(7 * 24 * 3600, type="integer", minimum=0),
    },
    doc_md=__doc__,
):
    # [START howto_operator_openrouter_delete_key]
    disable_key = UpdateApiKeyOperator(
        task_id="disable_key",
        key_name="tenant-{{ params.tenant }}",
        disabled=True,
        # A tenant decommissioned before has no key left to disable: nothing to do, not a failure.
        missing_ok=True,
    )

    @task
    def grace_period_end(params: dict[str, Any] | None = None) -> str:
        """When the grace period that starts now ends (ISO 8601, UTC)."""
        assert params is not None
        return pendulum.now("UTC").add(seconds=int(params["grace_period_seconds"])).isoformat()

    grace_end = grace_period_end()
    wait_grace_period = DateTimeSensorAsync(task_id="wait_grace_period", target_time=grace_end)

    delete_key = DeleteApiKeyOperator(
        task_id="delete_key",
        key_name="tenant-{{ params.tenant }}",
        # A rerun after the key was deleted succeeds instead of failing.
        missing_ok=True,
    )

    disable_key >> grace_end
    wait_grace_period >> delete_key
    # [END howto_operator_openrouter_delete_key]
