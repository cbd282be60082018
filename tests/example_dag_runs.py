"""Every example DAG, run the way a user runs it: ``airflow dags test`` in a real Airflow, one after
another in one Airflow home against one local OpenRouter whose keys spend on their own (so usage sensors have
something to wait for).

``EXAMPLE_DAG_RUNS`` says in which order and with which params and environment; the order is the story the
examples tell on one account (provision the tenants, set their monthly limits, decommission one, watch a
tenant's usage, then the whole lifecycle). A DAG file missing here fails ``test_secret_audit``, so a new
example cannot be left out of the run and the audit.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter.sensors.key_usage import RESCHEDULE_MIN_INTERVAL
from tests.airflow_runner import ROOT

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

EXAMPLE_DAGS = ROOT / "example_dags"
# USD per second that every usable key of the local OpenRouter spends, up to its limit.
SPEND_PER_SECOND = 0.5


@dataclass(frozen=True)
class ExampleDagRun:
    dag_id: str
    conf: dict[str, Any] | None = None
    # Environment for the run; "{secrets_dir}" is replaced by a private directory of the run.
    env: dict[str, str] = field(default_factory=dict)


EXAMPLE_DAG_RUNS: tuple[ExampleDagRun, ...] = (
    # Its callable delivery writes key files: into a directory of the test run, not the shared temp dir.
    ExampleDagRun(
        "example_openrouter_provision_tenants", env={"OPENROUTER_EXAMPLE_SECRETS_DIR": "{secrets_dir}"}
    ),
    ExampleDagRun("example_openrouter_monthly_limits"),
    ExampleDagRun("example_openrouter_decommission", conf={"tenant": "initech", "grace_period_seconds": 2}),
    # Its reschedule-mode sensor polls no faster than a real scheduler handles reliably.
    ExampleDagRun(
        "example_openrouter_usage_watch",
        env={"OPENROUTER_USAGE_WATCH_POLL_SECONDS": f"{RESCHEDULE_MIN_INTERVAL:g}"},
    ),
    ExampleDagRun("example_openrouter_tenant_lifecycle", conf={"watch_timeout": 120}),
)


def discovered_dag_ids() -> set[str]:
    """The dag_id of every DAG file in example_dags/ (``DAG_ID = "..."`` or a literal ``dag_id="..."``)."""
    found = set()
    for path in sorted(EXAMPLE_DAGS.glob("*.py")):
        text = path.read_text()
        ids = re.findall(r'^DAG_ID\s*=\s*"([^"]+)"', text, re.MULTILINE) or re.findall(
            r'dag_id\s*=\s*"([^"]+)"', text
        )
        if not ids and "DAG(" not in text and "@dag" not in text:
            continue
        assert ids, f"{path.name}: cannot tell its dag_id"
        found.update(ids)
    return found


@dataclass
class DagRunResult:
    spec: ExampleDagRun
    process: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    def task_states(self, instance: AirflowInstance) -> dict[str, list[str]]:
        states: dict[str, list[str]] = {}
        for task_id, state in instance.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? ORDER BY task_id, map_index",
            (self.spec.dag_id,),
        ):
            states.setdefault(str(task_id), []).append(str(state))
        return states


def run_example_dags(
    instance: AirflowInstance, fake: LocalOpenRouter, secrets_dir: Path
) -> dict[str, DagRunResult]:
    """Run every example DAG in order; a failed run does not stop the others (each is reported on its own)."""
    results = {}
    for spec in EXAMPLE_DAG_RUNS:
        env = {name: value.format(secrets_dir=secrets_dir) for name, value in spec.env.items()}
        started = time.monotonic()
        proc = instance.dags_test(
            spec.dag_id,
            extra_env={**fake.airflow_env(), **env},
            conf=json.dumps(spec.conf) if spec.conf is not None else None,
            check=False,
            timeout=600,
        )
        results[spec.dag_id] = DagRunResult(spec, proc, time.monotonic() - started)
    return results
