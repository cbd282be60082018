"""Secret-leak audit: every example DAG runs in one real Airflow against one local OpenRouter, then every
plaintext key the local OpenRouter ever issued (the management key included) is searched for everywhere a
secret could end up:

* the output of each ``airflow dags test`` run: task logs, and the triggerer's, since ``dags test`` runs
  triggers inline, and the scheduling the command does itself;
* every file in the Airflow home (log files, configuration);
* every table of the metadata database, by row and column (XCom, rendered template fields, task instance
  notes, the raw variable table, trigger kwargs, the audit log, DAG run conf, ...);
* the database file's raw bytes (what deleted rows leave behind).

Zero hits are allowed, except in XCom rows under the key an operator writes to only when a DAG opted in with
``push_plaintext_to_xcom=True``. The audit itself is tested: a plaintext planted in each place is found.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from airflow_provider_openrouter.operators.api_key import PLAINTEXT_XCOM_KEY
from airflow_provider_openrouter.operators.fleet_alerts import STATE_VARIABLE_PREFIX
from tests.airflow_runner import ROOT, make_airflow_instance
from tests.example_dag_runs import (
    EXAMPLE_DAG_RUNS,
    SPEND_PER_SECOND,
    DagRunResult,
    discovered_dag_ids,
    run_example_dags,
)
from tests.secret_audit import KEY_PREFIX, audit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

pytestmark = pytest.mark.airflow_db

# Tables the audit must have looked at (they exist in every supported Airflow version).
REQUIRED_TABLES = {
    "xcom",
    "rendered_task_instance_fields",
    "task_instance_note",
    "variable",
    "trigger",
    "log",
}


# ------------------------------------------------------------------------------------- the runs it audits ---


@dataclass
class AuditedRuns:
    instance: AirflowInstance
    fake: LocalOpenRouter
    results: dict[str, DagRunResult]

    @property
    def outputs(self) -> dict[str, str]:
        return {f"{dag_id} (stdout+stderr)": result.output for dag_id, result in self.results.items()}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedRuns]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    base = tmp_path_factory.mktemp("audit")
    instance = make_airflow_instance(base, ROOT / "example_dags")
    secrets_dir = base / "secret-store"  # where the example's own "secret store" callable writes keys
    with LocalOpenRouter(spend_per_second=SPEND_PER_SECOND) as fake:
        results = run_example_dags(instance, fake, secrets_dir)
        yield AuditedRuns(instance, fake, results)


# ------------------------------------------------------------------------------------------------- tests ---


def test_every_example_dag_is_run() -> None:
    assert discovered_dag_ids() == {spec.dag_id for spec in EXAMPLE_DAG_RUNS}


@pytest.mark.parametrize("dag_id", [spec.dag_id for spec in EXAMPLE_DAG_RUNS])
def test_example_dag_succeeds(audited: AuditedRuns, dag_id: str) -> None:
    result = audited.results[dag_id]
    states = result.task_states(audited.instance)
    assert result.process.returncode == 0, result.output[-8000:]
    failed = {task: s for task, s in states.items() if any(x not in ("success", "skipped") for x in s)}
    assert states, f"{dag_id} ran no task"
    assert not failed, f"{dag_id}: {failed}\n{result.output[-8000:]}"
    [(run_state,)] = audited.instance.query("SELECT state FROM dag_run WHERE dag_id = ?", (dag_id,))
    assert run_state == "success"


def test_the_runs_issued_keys_and_delivered_them_encrypted(audited: AuditedRuns) -> None:
    """The audit looks for something real: keys were issued, their plaintexts sit encrypted in Variables."""
    from cryptography.fernet import Fernet

    issued = audited.fake.issued_plaintexts
    assert issued[0] == audited.fake.management_key
    assert (
        len(issued) >= 1 + 3 + 1 + 1 + 3
    )  # tenants, the rotated service key, usage watch, lifecycle tenants

    fernet = Fernet(audited.instance.env["AIRFLOW__CORE__FERNET_KEY"].encode())
    variables = audited.instance.query("SELECT key, val, is_encrypted FROM variable")
    assert variables
    for key, val, is_encrypted in variables:
        assert is_encrypted, f"Variable {key} is stored unencrypted"
        value = fernet.decrypt(str(val).encode()).decode()
        if str(key).startswith(STATE_VARIABLE_PREFIX):
            # The fleet alerts' record of what they reported: fingerprints, never a key.
            assert json.loads(value)["reported"] is not None
            assert not any(plaintext in value for plaintext in issued), f"Variable {key} holds a key"
            continue
        assert value in issued, f"Variable {key} holds no key the local OpenRouter issued"


def test_no_plaintext_key_anywhere(audited: AuditedRuns) -> None:
    report = audit(audited.fake.issued_plaintexts, audited.instance.home, audited.outputs)
    assert report.tables >= REQUIRED_TABLES
    assert not report.hits, "plaintext keys found:\n" + "\n".join(map(str, report.hits))
    # No example DAG opts in to XCom delivery, so not even the exempt place holds a key.
    assert not report.allowed, "\n".join(map(str, report.allowed))


def test_the_audit_finds_planted_leaks(audited: AuditedRuns, tmp_path: Path) -> None:
    """Plant an issued plaintext in each place the audit covers, in a copy of the home: each must be found."""
    home = tmp_path / "home"
    shutil.copytree(audited.instance.home, home)
    secrets = audited.fake.issued_plaintexts
    leaked, opted_in, stripped = secrets[-1], secrets[-2], secrets[0].removeprefix(KEY_PREFIX)

    with sqlite3.connect(home / "airflow.db") as db:
        db.execute(
            "UPDATE xcom SET value = ? "
            "WHERE rowid = (SELECT min(rowid) FROM xcom WHERE key = 'return_value')",
            (f'{{"note": "{leaked}"}}',),
        )
        dag_run_id, task_id, dag_id, run_id = db.execute(
            "SELECT dag_run_id, task_id, dag_id, run_id FROM xcom LIMIT 1"
        ).fetchone()
        db.execute(
            "INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp) "
            "VALUES (?, ?, 7, ?, ?, ?, ?, '2026-01-01 00:00:00')",
            (dag_run_id, task_id, PLAINTEXT_XCOM_KEY, dag_id, run_id, f'"{opted_in}"'),
        )
        db.execute(
            "UPDATE rendered_task_instance_fields SET rendered_fields = ? WHERE rowid = "
            "(SELECT min(rowid) FROM rendered_task_instance_fields)",
            (f'{{"name": "{leaked}"}}',),
        )
        (ti_id,) = db.execute("SELECT id FROM task_instance LIMIT 1").fetchone()
        db.execute(
            "INSERT INTO task_instance_note (ti_id, user_id, content, created_at, updated_at) "
            "VALUES (?, 'auditor', ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (ti_id, f"rotated, new key is {leaked}"),
        )
        db.execute(
            "UPDATE variable SET val = ?, is_encrypted = 0 WHERE rowid = (SELECT min(rowid) FROM variable)",
            (stripped,),
        )
        db.execute("UPDATE log SET extra = ? WHERE rowid = (SELECT min(rowid) FROM log)", (leaked,))
    (home / "logs" / "planted").mkdir(parents=True, exist_ok=True)
    (home / "logs" / "planted" / "attempt=1.log").write_text(f"INFO - created {leaked}\n")
    outputs = {**audited.outputs, "planted output": f"Created key {leaked}"}

    report = audit(secrets, home, outputs)

    found = {hit.channel for hit in report.hits}
    for channel in (
        "airflow dags test output",
        "file",
        "table xcom",
        "table rendered_task_instance_fields",
        "table task_instance_note",
        "table variable",
        "table log",
        "raw database",
    ):
        assert channel in found, f"the planted leak in {channel} was not found: {found}"
    assert any(hit.secret == secrets[0] for hit in report.channel("table variable")), "prefix-less key missed"
    assert [hit.secret for hit in report.allowed] == [opted_in]
    assert all(hit.secret != opted_in for hit in report.channel("table xcom"))
    # Only the planted leaks: the unmodified runs stay clean.
    assert {hit.secret for hit in report.hits} <= {leaked, secrets[0]}


def test_the_audit_finds_a_secret_that_is_really_there(audited: AuditedRuns) -> None:
    """A string that every run's output and the database really contain is found in each of them, so a clean
    audit means absent, not unsearched."""
    marker = "example_openrouter_tenant_lifecycle"
    report = audit([marker], audited.instance.home, audited.outputs)
    channels = {hit.channel for hit in report.hits}
    assert {"airflow dags test output", "table dag_run", "table xcom", "raw database"} <= channels
