"""``example_openrouter_fleet_alerts`` run twice by ``airflow dags test`` in a real Airflow, against a local
OpenRouter and a real SMTP server on loopback: the first run e-mails once about the key near its limit and the
key about to expire (not the quiet key), the second run sends nothing about them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.smtp_server import running_smtp_server

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance
    from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.airflow_db

DAG_ID = "example_openrouter_fleet_alerts"
TASK_ID = "alert_on_tenant_keys"
RECIPIENT = "tenant-ops@example.com"


@dataclass
class Fleet:
    airflow: AirflowInstance
    fake: LocalOpenRouter
    smtp: SmtpServer
    names: dict[str, str]  # role -> key name

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {**self.fake.airflow_env(), **self.smtp.airflow_env(), "OPENROUTER_ALERTS_TO": RECIPIENT}
        proc = self.airflow.dags_test(DAG_ID, extra_env=env, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        return proc

    def reports(self) -> list[dict[str, Any]]:
        """The alerts task's return value, run by run."""
        rows = self.airflow.query(
            "SELECT x.value FROM xcom x JOIN dag_run r ON r.run_id = x.run_id AND r.dag_id = x.dag_id "
            "WHERE x.dag_id = ? AND x.task_id = ? AND x.key = 'return_value' ORDER BY r.id",
            (DAG_ID, TASK_ID),
        )
        return [json.loads(str(value)) for (value,) in rows]


@pytest.fixture(scope="module")
def fleet(airflow_instance: AirflowInstance) -> Iterator[Fleet]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake, running_smtp_server() as smtp:
        hot = fake.add_key("tenant-near-limit", limit=10.0, limit_reset="daily")
        fake.add_usage(hot.api_key.hash, 8.5)
        fake.add_key("tenant-expiring", expires_at=fake.now + dt.timedelta(days=3))
        quiet = fake.add_key(
            "tenant-quiet", limit=10.0, limit_reset="daily", expires_at=fake.now + dt.timedelta(days=60)
        )
        fake.add_usage(quiet.api_key.hash, 1.0)
        # Near its limit, but not a tenant's key: outside the watched prefix.
        internal = fake.add_key("internal-batch", limit=1.0)
        fake.add_usage(internal.api_key.hash, 1.0)
        names = {"hot": "tenant-near-limit", "expiring": "tenant-expiring", "quiet": "tenant-quiet"}
        yield Fleet(airflow_instance, fake, smtp, names)


def test_two_runs_send_one_e_mail_about_the_hot_and_the_expiring_key(fleet: Fleet) -> None:
    first = fleet.run()
    [mail] = fleet.smtp.wait_for(1)
    assert mail.rcpt_tos == [RECIPIENT]
    assert mail.subject.startswith("OpenRouter alerts for keys named tenant-*")
    assert "tenant-near-limit" in mail.body
    assert "85 %" in mail.body
    assert "tenant-expiring" in mail.body
    assert "tenant-quiet" not in mail.body
    assert "internal-batch" not in mail.body
    for plaintext in fleet.fake.issued_plaintexts:
        assert plaintext not in mail.body
        assert plaintext not in first.stdout + first.stderr

    fleet.run()
    # Give a stray second message the time to arrive before counting.
    assert len(fleet.smtp.wait_for(2, timeout=2.0)) == 1

    first_report, second_report = fleet.reports()
    assert first_report["sent"] == 2
    assert {(f["condition"], f["key_name"]) for f in first_report["findings"] if f["new"]} == {
        ("usage", "tenant-near-limit"),
        ("expiring", "tenant-expiring"),
    }
    assert second_report["sent"] == 0
    assert {f["key_name"] for f in second_report["findings"]} == {"tenant-near-limit", "tenant-expiring"}
    assert not any(f["new"] for f in second_report["findings"])
    states = fleet.airflow.query(
        "SELECT task_id, state FROM task_instance WHERE dag_id = ? ORDER BY task_id", (DAG_ID,)
    )
    assert {state for _, state in states} == {"success"}
