"""E-mail the platform team when a tenant's OpenRouter key needs attention.

Every hour ``alert_on_tenant_keys`` walks the keys named ``tenant-*`` once and finds those that have used 80 %
of their spending limit in the current limit window, and those that expire within seven days (or already
have). What it has not reported before goes out as one e-mail through the SMTP connection ``smtp_default``;
a key already reported is not reported again until the next limit window (or, for an expiry, until the key
gets another one). The findings are returned for the tasks after it, here ``summarise``.

``OPENROUTER_ALERTS_TO`` sets the recipient (default ``platform-team@example.com``).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pendulum
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, task

from airflow_provider_openrouter.operators.fleet_alerts import ApiKeyAlertsOperator

DAG_ID = "example_openrouter_fleet_alerts"

with DAG(
    dag_id=DAG_ID,
    description="E-mail once per occurrence when a tenant key nears its limit or its expiry",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["openrouter", "example"],
    doc_md=__doc__,
):
    # [START howto_operator_openrouter_fleet_alerts]
    alerts = ApiKeyAlertsOperator(
        task_id="alert_on_tenant_keys",
        name_prefix="tenant-",
        limit_fraction_at_least=0.8,
        expires_within=dt.timedelta(days=7),
        notifier=SmtpNotifier(
            to=os.environ.get("OPENROUTER_ALERTS_TO", "platform-team@example.com"),
            from_email="airflow@example.com",
            subject="{{ fleet_alerts.subject }}",
            html_content="{{ fleet_alerts.html }}",
            smtp_conn_id="smtp_default",
        ),
    )
    # [END howto_operator_openrouter_fleet_alerts]

    @task
    def summarise(report: dict[str, Any]) -> None:
        new = [f for f in report["findings"] if f["new"]]
        print(
            f"{report['keys_checked']} keys checked, {len(report['findings'])} need attention, "
            f"{len(new)} reported by this run"
        )

    summarise(alerts.output)
