"""The usage-watch example DAG run for real by ``airflow dags test`` (tasks and trigger) against the fake.

The test process owns the local OpenRouter and plays the tenant: once the DAG has created the key it spends
60 % of the daily limit, and once the deferred sensor's trigger is polling it spends past 80 %.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_openrouter.sensors.key_usage import RESCHEDULE_MIN_INTERVAL

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

DAG_ID = "example_openrouter_usage_watch"
KEY_NAME = "tenant-usage-watch"


def _key_hash(fake: LocalOpenRouter) -> str | None:
    keys = fake.keys()
    return next((k["hash"] for k in keys if k["name"] == KEY_NAME), None)


def _gets_of(fake: LocalOpenRouter, key_hash: str) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith(f"/keys/{key_hash}"))


def _state(airflow: AirflowInstance, task_id: str) -> str | None:
    try:
        rows = airflow.query(
            "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = ?", (DAG_ID, task_id)
        )
    except sqlite3.OperationalError:  # the DAG run holds a write lock for a moment
        return None
    return str(rows[-1][0]) if rows else None


class Tenant(threading.Thread):
    """Spends on the tenant's key as the DAG reaches each stage."""

    def __init__(self, fake: LocalOpenRouter, airflow: AirflowInstance) -> None:
        super().__init__(daemon=True)
        self.fake = fake
        self.airflow = airflow
        self.done = threading.Event()
        self.stop = threading.Event()
        self.gets_before_trigger = 0

    def wait_for(self, condition: object) -> bool:
        while not self.stop.is_set():
            if callable(condition) and condition():
                return True
            time.sleep(0.05)
        return False

    def run(self) -> None:
        if not self.wait_for(lambda: _key_hash(self.fake) is not None):
            return
        key_hash = _key_hash(self.fake)
        assert key_hash is not None
        self.fake.add_usage(key_hash, 3.0)  # 60 % of 5 USD: past the warning, short of the cut-off
        if not self.wait_for(lambda: _state(self.airflow, "warn_at_half_limit") == "success"):
            return
        # The deferrable sensor checks once by name (a list request); GETs of the key by hash come from its
        # trigger, so this one shows the trigger is polling.
        self.gets_before_trigger = _gets_of(self.fake, key_hash)
        if not self.wait_for(lambda: _gets_of(self.fake, key_hash) > self.gets_before_trigger):
            return
        self.fake.add_usage(key_hash, 1.25)  # 85 %
        self.done.set()


@pytest.mark.airflow_db
def test_example_dag_warns_then_disables_the_key(
    airflow_instance: AirflowInstance, local_openrouter: LocalOpenRouter
) -> None:
    fake = local_openrouter
    tenant = Tenant(fake, airflow_instance)
    tenant.start()
    try:
        proc = airflow_instance.dags_test(
            DAG_ID,
            extra_env={
                **fake.airflow_env(),
                "OPENROUTER_USAGE_WATCH_POLL_SECONDS": f"{RESCHEDULE_MIN_INTERVAL:g}",
            },
            conf=json.dumps({"key_name": KEY_NAME, "daily_limit": 5}),
            check=False,
            timeout=300,
        )
    finally:
        tenant.stop.set()
        tenant.join(timeout=5)
    output = proc.stdout + proc.stderr + airflow_instance.task_log_text()
    assert tenant.done.is_set(), output[-6000:]

    states = dict(
        airflow_instance.query("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,))
    )
    assert states == {
        "ensure_tenant_key": "success",
        "warn_at_half_limit": "success",
        "warn_tenant": "success",
        "watch_daily_usage": "success",
        "notify_owner": "success",
        "disable_tenant_key": "success",
    }, output[-6000:]

    keys = fake.keys()
    assert [k["name"] for k in keys] == [KEY_NAME]
    key = keys[0]
    assert key["disabled"] is True
    assert (key["limit"], key["limit_reset"]) == (5, "daily")
    # The trigger polled by hash after the sensor deferred: at least once before the spend, once after.
    assert _gets_of(fake, key["hash"]) >= tenant.gets_before_trigger + 2

    assert "usage_daily $3.00 is 60 % of the $5.00 limit (threshold 80 %) → waiting" in output
    assert "usage_daily $4.25 is 85 % of the $5.00 limit (threshold 80 %) → condition met" in output
    assert (
        f"Tenant key '{KEY_NAME}' reached 85% of its $5.00 daily limit ($4.25 today): disabling it" in output
    )
    # The new key's plaintext went to the tenant's Variable only, never to a log.
    for plaintext in fake.issued_plaintexts:
        assert plaintext not in output
