"""Provision an OpenRouter API key per tenant, and rotate a service's key.

* ``tenant_keys`` lists the tenants (in a real deployment: reads the tenants table) as one row of operator
  arguments per tenant.
* ``create_tenant_key`` (mapped, one task per tenant) makes sure each tenant has a key named
  ``tenant-<tenant>`` with a monthly spending limit. A new key's plaintext goes to the tenant's own Airflow
  Variable ``openrouter_api_key_<tenant>``, and nowhere else. With ``if_exists="reuse"`` a tenant that already
  has its key keeps it (and its Variable keeps the plaintext it got when the key was created): the DAG can
  run every day and only provisions new tenants.
* ``rotate_reporting_key`` replaces the reporting service's key on every run: it creates a new key that
  expires after 30 days, hands its plaintext to the service's secret store through a Python callable, then
  deletes the old key.

The tenants here are examples; the DAG runs as is against an empty OpenRouter account.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openrouter.models import CreatedApiKey

DAG_ID = "example_openrouter_provision_tenants"
TENANTS = [
    {"tenant": "acme", "monthly_limit_usd": 25.0},
    {"tenant": "globex", "monthly_limit_usd": 50.0},
    {"tenant": "initech", "monthly_limit_usd": 10.0},
]


def store_in_secret_store(created: CreatedApiKey, context: Context) -> None:
    """Stand-in for a real secret store (HashiCorp Vault, AWS Secrets Manager, ...): one file per key.

    The directory is ``$OPENROUTER_EXAMPLE_SECRETS_DIR`` (default: ``openrouter-example-secrets`` in the
    temporary directory); the file is readable by its owner only. Raise when the key could not be stored: the
    operator then deletes the new key again and keeps the old one.
    """
    default = Path(tempfile.gettempdir()) / "openrouter-example-secrets"
    directory = Path(os.environ.get("OPENROUTER_EXAMPLE_SECRETS_DIR", default))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / f"{created.name}.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as secret_file:
        secret_file.write(created.plaintext)


with DAG(
    dag_id=DAG_ID,
    description="Create each tenant's OpenRouter key, its plaintext to a per-tenant Variable; rotate a key",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    doc_md=__doc__,
):
    # [START howto_operator_openrouter_create_key]
    @task
    def tenant_keys() -> list[dict[str, Any]]:
        """One row of CreateApiKeyOperator arguments per tenant."""
        return [
            {
                "name": f"tenant-{row['tenant']}",
                "limit": row["monthly_limit_usd"],
                # "api_key" in the name makes Airflow mask the value in the logs of tasks that read it.
                "deliver_to_variable": f"openrouter_api_key_{row['tenant']}",
            }
            for row in TENANTS
        ]

    CreateApiKeyOperator.partial(
        task_id="create_tenant_key",
        limit_reset="monthly",
        if_exists="reuse",
    ).expand_kwargs(tenant_keys())
    # [END howto_operator_openrouter_create_key]

    # [START howto_operator_openrouter_create_key_callable]
    CreateApiKeyOperator(
        task_id="rotate_reporting_key",
        name="reporting-service",
        limit=100,
        limit_reset="monthly",
        # run_after, not data_interval_end: a run triggered without a logical date (the CLI's and the REST
        # API's default) has no data interval.
        expires_at="{{ dag_run.run_after + macros.timedelta(days=30) }}",
        if_exists="replace",
        deliver_to_callable=store_in_secret_store,
    )
    # [END howto_operator_openrouter_create_key_callable]
