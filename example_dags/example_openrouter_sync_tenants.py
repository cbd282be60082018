"""Make OpenRouter match a tenants table every day: plan, a person approves, apply.

The table is a CSV shipped beside this file. The plan task logs the plan as a table and returns it; the
approval step shows it to the approver (Airflow's human-in-the-loop ApprovalOperator); the apply task
applies exactly that plan, refusing if the account changed since in a way that matters. Limits in the table
are set again each day, so editing the CSV (or computing it per month) is how limits are changed on schedule
(OpenRouter resets usage itself: that is the keys' ``limit_reset``).

Each tenant also names its tier, a guardrail declared below: a second budget with its own window (a dollar or
five a day, on top of the key's monthly limit; whichever is reached first stops the key) and the models the
tier may use. The sync creates the tiers, keeps their settings as declared, and assigns each tenant's key to
its tier, new keys included, before the apply task succeeds.

A plan nobody answers is rejected when the approval times out: the apply task is skipped and the account is
left as it was. The timeout is ``OPENROUTER_SYNC_APPROVAL_TIMEOUT_SECONDS`` in the environment of the process
that parses this file (default 12 hours, within the day before the next run). From Airflow 3.3 the scheduler
applies it, so a run of ``airflow dags test`` (no scheduler) waits for an answer: give it in the UI or through
the REST API (``PATCH .../taskInstances/approve/-1/hitlDetails``, ``{"chosen_options": ["Approve"]}``).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_openrouter.operators.sync import PLAN_MARKDOWN_XCOM_KEY, SyncApiKeysOperator

TABLE = Path(__file__).parent / "data" / "tenants.csv"
APPROVAL_TIMEOUT = dt.timedelta(
    seconds=float(os.environ.get("OPENROUTER_SYNC_APPROVAL_TIMEOUT_SECONDS", "43200"))
)


# [START howto_guardrails_tiers]
# The tiers. Their names start with the sync's name_prefix: the sync owns them as it owns the keys.
GUARDRAILS: list[dict[str, Any]] = [
    {
        "name": "tenant-tier-basic",
        "description": "Basic tenants: small models, a dollar a day",
        "limit_usd": 1.0,
        "reset_interval": "daily",
        "allowed_models": ["openai/gpt-4o-mini", "google/gemini-2.5-flash"],
    },
    {
        "name": "tenant-tier-pro",
        "description": "Pro tenants: frontier models, five dollars a day",
        "limit_usd": 5.0,
        "reset_interval": "daily",
        "allowed_models": ["openai/gpt-4o", "anthropic/claude-sonnet-4", "openai/gpt-4o-mini"],
    },
]
# [END howto_guardrails_tiers]


def store_in_vault(created: Any, context: Any) -> None:
    """Hand a new key to your secret store here (Vault, AWS Secrets Manager, ...)."""
    from airflow.sdk import Variable

    tenant = created.name.removeprefix("tenant-")
    Variable.set(f"openrouter_api_key_{tenant}", created.plaintext, description=f"key {created.hash}")


# [START howto_operator_openrouter_sync_api_keys]
with DAG(
    dag_id="example_openrouter_sync_tenants",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
) as dag:

    @task
    def tenants_table() -> list[dict[str, Any]]:
        with TABLE.open(newline="") as fh:
            return [dict(row) for row in csv.DictReader(fh)]

    table = tenants_table()
    common: dict[str, Any] = {
        "tenants": table,
        "guardrails": GUARDRAILS,
        "name_prefix": "tenant-",
        "prune": "disable",
        "max_destructive": 0.2,
        "deliver_to_callable": store_in_vault,
    }
    plan = SyncApiKeysOperator(task_id="plan", mode="plan", **common)
    apply = SyncApiKeysOperator(
        task_id="apply", mode="apply", plan="{{ ti.xcom_pull(task_ids='plan') | tojson }}", **common
    )
    try:
        from airflow.providers.standard.operators.hitl import ApprovalOperator
    except ImportError:  # an Airflow without human-in-the-loop operators: plan, then apply
        plan >> apply
    else:
        # The approver sees the plan as a table (Markdown, rendered in the Required Actions page); rejecting
        # skips the apply task. Unanswered by the timeout, the plan is rejected: a sync nobody looked at
        # changes nothing, and the run ends instead of waiting for ever.
        approve = ApprovalOperator(
            task_id="approve",
            response_timeout=APPROVAL_TIMEOUT,
            defaults="Reject",
            # run_after, not ds: a run triggered without a logical date (the CLI's and the REST API's default)
            # has no ds.
            subject="Apply the OpenRouter tenant sync of {{ dag_run.run_after.strftime('%Y-%m-%d') }}?",
            body="{{ ti.xcom_pull(task_ids='plan', key='" + PLAN_MARKDOWN_XCOM_KEY + "') }}",
        )
        plan >> approve >> apply
# [END howto_operator_openrouter_sync_api_keys]
