"""DAGs for the asset events of key changes: a DAG that changes a key, and two downstream DAGs, one scheduled
on that key's asset and one on the operators' asset alias, each returning what the events said.

The changing DAG runs only when triggered; the downstream ones run when an event reaches them.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_openrouter.assets import DEFAULT_ASSET_ALIAS, key_asset
from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator

ASSET_KEY = "deploy-asset-tenant"
ASSET_KEY_VARIABLE = "openrouter_api_key_deploy_asset_tenant"
COMMON: dict[str, Any] = {
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "is_paused_upon_creation": False,
    "tags": ["deployment-test"],
}


@task
def events_seen(**context: Any) -> list[dict[str, Any]]:
    """What a downstream task would push to the tenant's app: which key changed, and how."""
    # An event reached through an alias is listed under its asset and under the alias.
    seen = {
        (event.asset.uri, event.timestamp.isoformat()): {"uri": event.asset.uri, "extra": dict(event.extra)}
        for events in context["triggering_asset_events"].values()
        for event in events
    }
    return list(seen.values())


# Every run makes a new key under the name: a create first, a rotation after.
with DAG(dag_id="deploy_key_change", schedule=None, **COMMON):
    CreateApiKeyOperator(
        task_id="create", name=ASSET_KEY, limit=3, if_exists="replace", deliver_to_variable=ASSET_KEY_VARIABLE
    )

with DAG(dag_id="deploy_on_key_asset", schedule=key_asset(ASSET_KEY), **COMMON):
    events_seen()

with DAG(dag_id="deploy_on_key_alias", schedule=AssetAlias(DEFAULT_ASSET_ALIAS), **COMMON):
    events_seen()
