"""DAGs the deployment tests trigger (besides the example DAGs): provisioning over shared tenants, a create
that a killed worker leaves half done and deferred sensors that outlive their triggerer
(``reschedule_probe_dags.py``: reschedule-mode sensors polling at a given interval).

Every DAG here runs unpaused and only when triggered.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG

from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor

TENANTS = [f"t{n}" for n in range(6)]
KILLED_KEY = "deploy-killed"
WATCHED = 4
COMMON = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "is_paused_upon_creation": False,
    "max_active_runs": 16,
    "tags": ["deployment-test"],
}


def key_name(tenant: str) -> str:
    return f"deploy-tenant-{tenant}"


def variable_name(tenant: str) -> str:
    return f"openrouter_api_key_deploy_{tenant}"


# One task per tenant: two runs of this DAG at once race for every tenant.
with DAG(dag_id="deploy_provision_each", **COMMON):
    for tenant in TENANTS:
        CreateApiKeyOperator(
            task_id=f"create_{tenant}",
            name=key_name(tenant),
            limit=5,
            if_exists="reuse",
            deliver_to_variable=variable_name(tenant),
        )

# The same tenants, mapped.
with DAG(dag_id="deploy_provision_mapped", **COMMON):
    CreateApiKeyOperator.partial(task_id="create", limit=5, if_exists="reuse").expand_kwargs(
        [{"name": key_name(t), "deliver_to_variable": variable_name(t)} for t in TENANTS]
    )

# A create that Airflow retries when its worker dies. A killed try leaves its claim (a provisional key) for
# claim_lease plus a grace as long as one call may take with the connection (300 s with the default one): the
# retry waits that out, reading the claim by hash, then collects it and creates, as the operator documents.
with DAG(dag_id="deploy_provision_killed", **COMMON):
    CreateApiKeyOperator(
        task_id="create",
        name=KILLED_KEY,
        limit=5,
        if_exists="reuse",
        deliver_to_variable="openrouter_api_key_deploy_killed",
        claim_lease=10,
        retries=4,
        retry_delay=dt.timedelta(seconds=10),
    )

# Deferred sensors, each waiting for its key's usage (the local OpenRouter's keys spend on their own).
with DAG(dag_id="deploy_deferred_watch", params={"prefix": "deploy-watch", "usd": 10.0}, **COMMON):
    for n in range(WATCHED):
        OpenRouterKeyUsageSensor(
            task_id=f"watch_{n}",
            key_name=f"{{{{ params.prefix }}}}-{n}",
            usage_window="lifetime",
            usage_at_least="{{ params.usd }}",
            deferrable=True,
            poke_interval=1,
            timeout=dt.timedelta(minutes=10),
        )
