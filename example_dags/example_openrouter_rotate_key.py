"""Rotate one service key with an overlap: a new key, pushed to its clients, the old one retired once idle.

``CreateApiKeyOperator(if_exists="replace", keep_old_key=True)`` makes the new key, delivers it to a Variable,
and renames the old key ``<name> [retired <epoch>]`` instead of deleting it, so clients still holding it keep
working. A task then tells the service to reload its key (here: it logs what a real DAG would push). Last,
``RetireApiKeysOperator`` waits, in the triggerer, until the old key has gone unused for the idle time (or
the deadline has come, however busy it still is), and deletes it.

Params: ``key_name`` (default ``service-billing``), ``idle_seconds`` (default 6 hours) and
``deadline_seconds`` (default 14 days): how long the old key must go unused, and the latest it is retired.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.operators.retire import RetireApiKeysOperator

DAG_ID = "example_openrouter_rotate_key"

with DAG(
    dag_id=DAG_ID,
    description="Rotate one OpenRouter key with an overlap; retire the old key once it is idle",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    params={
        "key_name": Param("service-billing", type="string", description="the key to rotate"),
        "idle_seconds": Param(6 * 3600, type="integer", minimum=1),
        "deadline_seconds": Param(14 * 24 * 3600, type="integer", minimum=1),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
):
    # [START howto_operator_openrouter_rotate_key]
    rotate_key = CreateApiKeyOperator(
        task_id="rotate_key",
        name="{{ params.key_name }}",
        if_exists="replace",
        # The old key is renamed "<name> [retired <epoch>]" and keeps working: no client is cut off.
        keep_old_key=True,
        deliver_to_variable="openrouter_key_{{ params.key_name | replace('-', '_') }}",
    )

    @task
    def push_new_key(rotated: dict[str, Any]) -> None:
        """Where a real DAG tells the service to reload its key from the Variable (a deploy, a restart)."""
        kept = ", ".join(key_hash[:12] for key_hash in rotated["retired_key_hashes"])
        print(f"New key {rotated['hash'][:12]} delivered; the old key still works: {kept}")

    retire_old_key = RetireApiKeysOperator(
        task_id="retire_old_key",
        key_name="{{ params.key_name }}",
        retire_when_idle_for="{{ params.idle_seconds }}",
        retire_deadline="{{ params.deadline_seconds }}",
        # Waits in the triggerer, holding no worker slot, until the old key is idle; then deletes it.
        deferrable=True,
        poll_interval=60,
    )

    push_new_key(rotate_key.output) >> retire_old_key
    # [END howto_operator_openrouter_rotate_key]
