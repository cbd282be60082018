"""Set every tenant's OpenRouter spending limit for the month.

On the 1st of each month ``tenants_table`` reads the limits from the tenants table (here: a fixed list) and
``set_monthly_limit`` applies them, one mapped task per tenant. A key that already has its row's settings gets
no write at all (its task logs "nothing to change"), so the DAG can be rerun safely. ``None`` as a limit
removes the limit.

The keys are the ones :mod:`example_openrouter_provision_tenants` creates (``tenant-<tenant>``); run that DAG
first on an empty account.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_openrouter.operators.api_key import UpdateApiKeyOperator

DAG_ID = "example_openrouter_monthly_limits"

with DAG(
    dag_id=DAG_ID,
    description="Apply each tenant's monthly OpenRouter spending limit from the tenants table",
    schedule="@monthly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    doc_md=__doc__,
):

    @task
    def tenants_table() -> list[dict[str, Any]]:
        """This month's plan per tenant, as UpdateApiKeyOperator arguments."""
        return [
            {"key_name": "tenant-acme", "limit": 30.0, "limit_reset": "monthly"},
            {"key_name": "tenant-globex", "limit": 50.0, "limit_reset": "monthly"},
            # An enterprise plan: no limit at all.
            {"key_name": "tenant-initech", "limit": None},
        ]

    # [START howto_operator_openrouter_update_key]
    UpdateApiKeyOperator.partial(task_id="set_monthly_limit").expand_kwargs(tenants_table())
    # [END howto_operator_openrouter_update_key]
