"""``make run``: ``scripts/run_flagship.py`` runs the flagship DAG in a private Airflow, prints a summary.

Run here exactly as ``make run`` runs it (a subprocess of the project's Python), once with the embedded local
OpenRouter and once against an account given by ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` (a local OpenRouter of the
test standing in for the real API), whose issued keys are then searched for in everything the run left behind.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.airflow_runner import ROOT
from tests.secret_audit import audit

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

pytestmark = pytest.mark.airflow_db

SCRIPT = ROOT / "scripts" / "run_flagship.py"
DAG_ID = "example_openrouter_tenant_lifecycle"
CONN_VAR = "AIRFLOW_CONN_OPENROUTER_DEFAULT"
FULL_KEY = re.compile(r"sk-or-v1-[0-9a-f]{64}")


def run_script(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    # The user's shell: none of the test session's Airflow settings, no connection unless given.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def _summary_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("acme", "globex", "initech"):
            rows[cells[0]] = line
    return rows


def _dag_run_state(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "airflow.db") as db:
        return [(str(a), str(b)) for a, b in db.execute("SELECT dag_id, state FROM dag_run")]


def test_make_run_with_the_embedded_local_openrouter(tmp_path: Path) -> None:
    home = tmp_path / "airflow-home"
    proc = run_script("--home", str(home))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]

    assert "Started a local OpenRouter at http://127.0.0.1:" in proc.stdout
    assert "Metadata database migrated" in proc.stdout
    rows = _summary_rows(proc.stdout)
    assert set(rows) == {"acme", "globex", "initech"}, proc.stdout
    # acme ($5 monthly) and globex ($2 daily) crossed 80 % of their limits and were topped up (doubled).
    assert "$10.00/monthly" in rows["acme"]
    assert "topped up from $5.00" in rows["acme"]
    assert "$4.00/daily" in rows["globex"]
    assert "topped up from $2.00" in rows["globex"]
    for tenant in ("acme", "globex"):
        assert "active" in rows[tenant]
        assert f"key in Variable openrouter_api_key_{tenant}" in rows[tenant]
        assert re.search(r"\b[0-9a-f]{16}…", rows[tenant]), rows[tenant]
        assert re.search(r"sk-or-v1-[0-9a-f]{3}\.\.\.[0-9a-f]{3}", rows[tenant]), rows[tenant]
    assert "decommissioned: key deleted, Variable removed" in rows["initech"]
    assert "Secret check: none of the" in proc.stdout
    assert "LEAK" not in output
    printed = FULL_KEY.search(output) is not None
    assert not printed, "a plaintext key was printed"

    assert (home / "airflow.cfg").is_file()
    assert _dag_run_state(home) == [(DAG_ID, "success")]
    logged = FULL_KEY.search((home / "dags-test.log").read_text()) is not None
    assert not logged, "a plaintext key is in the DAG run's output"


def test_make_run_against_a_configured_account(tmp_path: Path) -> None:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    home = tmp_path / "airflow-home"
    # The account's keys get used (by the tenants, on a real account) while the DAG watches them.
    with LocalOpenRouter(spend_per_second=0.5) as account:
        proc = run_script(
            "--home", str(home), "--watch-timeout", "90", env={CONN_VAR: account.connection_json()}
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-8000:]
        assert f"Using the OpenRouter account of {CONN_VAR}" in proc.stdout
        assert "Started a local OpenRouter" not in proc.stdout
        assert f"Tenants on {account.base_url}" in proc.stdout

        held = account.keys()
        keys = {key["name"]: key for key in held}
        assert set(keys) == {"airflow-demo-acme", "airflow-demo-globex"}
        acme, globex = keys["airflow-demo-acme"], keys["airflow-demo-globex"]
        assert (acme["limit"], acme["limit_reset"]) == (10, "monthly")
        assert (globex["limit"], globex["limit_reset"]) == (4, "daily")
        rows = _summary_rows(proc.stdout)
        for name, key in keys.items():
            tenant = name.removeprefix("airflow-demo-")
            assert key["hash"][:16] in rows[tenant]
            assert key["label"] in rows[tenant]

        issued = account.issued_plaintexts
        assert len(issued) == 1 + 3  # the management key and one key per tenant

    report = audit(issued, home, {"make run output": output})
    assert not report.hits, "plaintext keys found:\n" + "\n".join(map(str, report.hits))
    assert not report.allowed


def test_make_run_replaces_its_own_home_only(tmp_path: Path) -> None:
    foreign = tmp_path / "someone-elses-dir"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    proc = run_script("--home", str(foreign), timeout=120)
    assert proc.returncode != 0
    assert "was not made by this script" in proc.stdout + proc.stderr
    assert (foreign / "keep.txt").read_text() == "precious"


def test_flagship_dag_shape() -> None:
    """The DAG file imports cleanly and holds the lifecycle: mapped create/update, deferred watch, delete."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("flagship_dag", ROOT / "example_dags" / f"{DAG_ID}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    assert dag.dag_id == DAG_ID
    tasks = {task.task_id: task for task in dag.tasks}
    expected = {
        "provision_key": "CreateApiKeyOperator",
        "apply_plan_limit": "UpdateApiKeyOperator",
        "watch_usage": "OpenRouterKeyUsageSensor",
        "top_up_limit": "UpdateApiKeyOperator",
        "disable_key": "UpdateApiKeyOperator",
        "delete_key": "DeleteApiKeyOperator",
    }
    for task_id, operator in expected.items():
        assert tasks[task_id].operator_name == operator, task_id
    for mapped in ("provision_key", "apply_plan_limit", "watch_usage", "top_up_limit"):
        assert type(tasks[mapped]).__name__ == "MappedOperator", mapped
    watch = tasks["watch_usage"]
    assert watch.partial_kwargs["deferrable"] is True  # type: ignore[attr-defined]
    assert json.loads(json.dumps(dag.params.dump()))["decommission"] == "initech"
