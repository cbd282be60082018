"""A tenant's whole life on one OpenRouter account, in one DAG.

1. ``tenant_plan`` reads the tenants (the ``tenants`` param: name, spending limit, limit reset).
2. ``provision_key`` (mapped, one task per tenant) creates each tenant's key with a zero limit, so that it
   cannot spend before its plan applies, and writes the plaintext to the tenant's own Airflow Variable
   ``openrouter_api_key_<tenant>`` (encrypted at rest, masked in logs). The plaintext goes nowhere else.
3. ``apply_plan_limit`` (mapped) sets each key's limit and reset from the plan.
4. ``watch_usage`` (mapped, deferrable) waits in the triggerer until each key has used ``watch_share`` of its
   limit in the limit's window. A tenant that stays below it is skipped after ``watch_timeout`` seconds.
5. ``top_up_limit`` (mapped) doubles the limit of every tenant that reached the threshold.
6. The tenant named by ``decommission`` is disabled (``disable_key``), its key deleted (``delete_key``) and
   its Variable removed (``forget_key_variable``).
7. ``report`` reads every tenant's key back from OpenRouter and returns the table (hashes, masked labels,
   limits, usage; never a plaintext).

Re-running the DAG rotates the keys: ``if_exists="replace"`` creates a new key for each tenant, delivers it,
then deletes the old one.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_openrouter.operators.api_key import (
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor

DAG_ID = "example_openrouter_tenant_lifecycle"
DEFAULT_TENANTS = [
    {"tenant": "acme", "limit": 5.0, "limit_reset": "monthly"},
    {"tenant": "globex", "limit": 2.0, "limit_reset": "daily"},
    {"tenant": "initech", "limit": 1.0, "limit_reset": "weekly"},
]
# A limit resetting daily/weekly/monthly is measured against usage in that window; one that never resets,
# against lifetime usage.
USAGE_WINDOW = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", None: "lifetime"}


def variable_for(tenant: str) -> str:
    """The Variable holding a tenant's key ("api_key" in the name makes Airflow mask it when read)."""
    return f"openrouter_api_key_{tenant}"


def _create_kwargs(tenant: dict[str, Any]) -> dict[str, Any]:
    return {"name": tenant["key_name"], "deliver_to_variable": tenant["variable"]}


with DAG(
    dag_id=DAG_ID,
    description="Provision, limit, watch, top up and decommission per-tenant OpenRouter keys",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    params={
        "tenants": Param(DEFAULT_TENANTS, type="array", description="tenant, limit (USD), limit_reset"),
        "key_prefix": Param("airflow-demo-", type="string", description="prefix of each tenant's key name"),
        "decommission": Param("initech", type=["string", "null"], description="tenant to decommission"),
        "watch_share": Param(0.8, type="number", exclusiveMinimum=0, maximum=1),
        "watch_timeout": Param(300, type="integer", minimum=1, description="seconds to wait per tenant"),
    },
    doc_md=__doc__,
) as dag:
    # [START howto_tenant_lifecycle]
    @task
    def tenant_plan(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        assert params is not None
        plan = []
        for row in params["tenants"]:
            tenant = str(row["tenant"])
            plan.append(
                {
                    "tenant": tenant,
                    "key_name": f"{params['key_prefix']}{tenant}",
                    "variable": variable_for(tenant),
                    "limit": float(row["limit"]),
                    "limit_reset": row.get("limit_reset"),
                }
            )
        names = [t["tenant"] for t in plan]
        if len(set(names)) != len(names):
            raise ValueError(f"tenants: each tenant must appear once (got {names})")
        if params["decommission"] is not None and params["decommission"] not in names:
            raise ValueError(f"decommission: {params['decommission']!r} is not one of the tenants {names}")
        return plan

    plan = tenant_plan()

    # One key per tenant, born with a zero limit; its plaintext goes only to the tenant's Variable.
    provision = CreateApiKeyOperator.partial(
        task_id="provision_key", limit=0, if_exists="replace"
    ).expand_kwargs(plan.map(_create_kwargs))

    @task
    def plan_limits(plan: list[dict[str, Any]], created: list[dict[str, Any]]) -> list[dict[str, Any]]:
        hashes = {key["name"]: key["hash"] for key in created}
        return [
            {"key_hash": hashes[t["key_name"]], "limit": t["limit"], "limit_reset": t["limit_reset"]}
            for t in plan
        ]

    apply_limits = UpdateApiKeyOperator.partial(task_id="apply_plan_limit").expand_kwargs(
        plan_limits(plan, provision.output)
    )

    @task
    def watch_targets(
        applied: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        assert params is not None
        return [
            {
                "key_hash": key["hash"],
                "usage_window": USAGE_WINDOW[key["limit_reset"]],
                "limit_fraction_at_least": params["watch_share"],
                "timeout": params["watch_timeout"],
            }
            for key in applied
        ]

    # Deferrable: while it waits, a sensor holds no worker slot; the triggerer polls every key from one loop.
    watch = OpenRouterKeyUsageSensor.partial(
        task_id="watch_usage", deferrable=True, poke_interval=2, soft_fail=True
    ).expand_kwargs(watch_targets(apply_limits.output))

    @task(trigger_rule="none_failed")
    def plan_top_ups(
        plan: list[dict[str, Any]], watched: list[dict[str, Any] | None], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        assert params is not None
        leaving = f"{params['key_prefix']}{params['decommission']}" if params["decommission"] else None
        crossed = [snap for snap in watched if snap and snap["key_name"] != leaving]
        return [{"key_hash": snap["key_hash"], "limit": round(2 * snap["limit"], 2)} for snap in crossed]

    top_up = UpdateApiKeyOperator.partial(task_id="top_up_limit").expand_kwargs(
        plan_top_ups(plan, watch.output)
    )

    leaving_key = "{{ params.key_prefix }}{{ params.decommission }}"
    disable = UpdateApiKeyOperator(
        task_id="disable_key", key_name=leaving_key, disabled=True, trigger_rule="none_failed"
    )
    delete = DeleteApiKeyOperator(task_id="delete_key", key_name=leaving_key, missing_ok=True)

    @task
    def forget_key_variable(params: dict[str, Any] | None = None) -> str:
        from airflow.sdk import Variable

        assert params is not None
        name = variable_for(params["decommission"])
        Variable.delete(name)
        return name

    @task(trigger_rule="none_failed")
    def report(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        hook = OpenRouterHook()
        rows = []
        for tenant in plan:
            key = hook.find_key_by_name(tenant["key_name"])
            row: dict[str, Any] = {"tenant": tenant["tenant"], "key_name": tenant["key_name"]}
            if key is None:
                row["status"] = "deleted"
            else:
                row.update(
                    status="disabled" if key.disabled else "active",
                    hash=key.hash,
                    label=key.label,
                    limit=key.limit,
                    limit_reset=key.limit_reset,
                    usage=key.usage,
                    usage_in_window={
                        "daily": key.usage_daily,
                        "weekly": key.usage_weekly,
                        "monthly": key.usage_monthly,
                    }.get(key.limit_reset or "", key.usage),
                )
            rows.append(row)
            if key is None:
                print(f"{tenant['tenant']:<12} deleted")
            else:
                print(
                    f"{tenant['tenant']:<12} {row['status']:<9} {key.hash[:16]}…  {key.label:<20}"
                    f" limit {'none' if key.limit is None else f'${key.limit:,.2f}'}"
                    f" ({key.limit_reset or 'never resets'})"
                    f"  usage ${row['usage_in_window']:,.2f} in window, ${key.usage:,.2f} lifetime"
                )
        return rows

    summary = report(plan)
    watch >> disable >> delete >> forget_key_variable() >> summary
    top_up >> summary
    # [END howto_tenant_lifecycle]
