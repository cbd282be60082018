"""The two DAGs ``benchmarks/mapped_vs_sync.py`` runs on the deployment: the same tenants provisioned by one
mapped ``CreateApiKeyOperator`` task per tenant, and by one ``SyncApiKeysOperator`` task.

Both read the tenants table the same way (an upstream task; here it makes ``params.count`` rows) and deliver
each new key to an Airflow Variable of its own, the provider's built-in destination. Each DAG has its own
name prefix, so the two runs create different keys.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

MAPPED_DAG_ID = "bench_provision_mapped"
SYNC_DAG_ID = "bench_provision_sync"
MAPPED_PREFIX = "bench-mapped-"
SYNC_PREFIX = "bench-sync-"
VARIABLE_PREFIX = "openrouter_api_key_"
COMMON: dict[str, Any] = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "is_paused_upon_creation": False,
    "params": {"count": 200},
    "tags": ["benchmark"],
}


def variable_name(key_name: str) -> str:
    return VARIABLE_PREFIX + key_name.replace("-", "_")


def tenant_rows(prefix: str, count: int) -> list[dict[str, Any]]:
    names = [f"{prefix}{n:05d}" for n in range(count)]
    return [{"name": name, "limit": 5, "deliver_to_variable": variable_name(name)} for name in names]


@task
def tenants(prefix: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The tenants table: ``params.count`` fresh names under ``prefix``."""
    assert params is not None
    return tenant_rows(prefix, int(params["count"]))


with DAG(dag_id=MAPPED_DAG_ID, **COMMON):
    CreateApiKeyOperator.partial(task_id="create", if_exists="reuse").expand_kwargs(tenants(MAPPED_PREFIX))

with DAG(dag_id=SYNC_DAG_ID, **COMMON):
    SyncApiKeysOperator(task_id="sync", tenants=tenants(SYNC_PREFIX), name_prefix=SYNC_PREFIX)
