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
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter.sensors.key_usage import RESCHEDULE_MIN_INTERVAL
from tests.airflow_runner import ROOT
from tests.hitl_respond import SHOWN

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

EXAMPLE_DAGS = ROOT / "example_dags"
# USD per second that every usable key of the local OpenRouter spends, up to its limit.
SPEND_PER_SECOND = 0.5


def _airflow_version() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


# From 3.3 a human-in-the-loop task waits in AWAITING_INPUT, answered through the REST API while `dags test`
# waits; before, it defers to a trigger.
AIRFLOW_PARKS_HITL_TASKS = _airflow_version() >= (3, 3)


@dataclass(frozen=True)
class ExampleDagRun:
    dag_id: str
    conf: dict[str, Any] | None = None
    # Environment for the run; "{secrets_dir}" is replaced by a private directory of the run.
    env: dict[str, str] = field(default_factory=dict)
    # Human-in-the-loop tasks a person answers while the run waits (tests/hitl_respond.py): task -> option.
    answers: dict[str, str] = field(default_factory=dict)


EXAMPLE_DAG_RUNS: tuple[ExampleDagRun, ...] = (
    # Its callable delivery writes key files: into a directory of the test run, not the shared temp dir.
    ExampleDagRun(
        "example_openrouter_provision_tenants", env={"OPENROUTER_EXAMPLE_SECRETS_DIR": "{secrets_dir}"}
    ),
    ExampleDagRun("example_openrouter_monthly_limits"),
    ExampleDagRun("example_openrouter_decommission", conf={"tenant": "initech", "grace_period_seconds": 2}),
    # After the decommission: acme's limit raised, initech back (daily limit), hooli new; approved in between.
    ExampleDagRun("example_openrouter_sync_tenants", answers={"approve": "Approve"}),
    # Its reschedule-mode sensor polls no faster than a real scheduler handles reliably.
    ExampleDagRun(
        "example_openrouter_usage_watch",
        env={"OPENROUTER_USAGE_WATCH_POLL_SECONDS": f"{RESCHEDULE_MIN_INTERVAL:g}"},
    ),
    # E-mails through smtp_default: a loopback SMTP server of the test run (its messages are audited too).
    ExampleDagRun("example_openrouter_fleet_alerts"),
    ExampleDagRun("example_openrouter_tenant_lifecycle", conf={"watch_timeout": 120}),
    # The provisioning example's service key, rotated with an overlap; keys spend on their own here, so the
    # old key never goes idle and is retired at the deadline: seconds, not the default fortnight.
    ExampleDagRun(
        "example_openrouter_rotate_key",
        conf={"key_name": "reporting-service", "idle_seconds": 1, "deadline_seconds": 5},
    ),
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
    # What each human-in-the-loop task showed the person who answered it: task -> {"subject", "body"}.
    shown: dict[str, dict[str, str]] = field(default_factory=dict)
    # The e-mails the run sent: subject and decoded body.
    mails: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr + "".join(self.mails)

    def task_states(self, instance: AirflowInstance) -> dict[str, list[str]]:
        states: dict[str, list[str]] = {}
        for task_id, state in instance.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? ORDER BY task_id, map_index",
            (self.spec.dag_id,),
        ):
            states.setdefault(str(task_id), []).append(str(state))
        return states


def dags_test_answering(
    instance: AirflowInstance,
    dag_id: str,
    answers: Mapping[str, str],
    *,
    extra_env: Mapping[str, str],
    conf: str | None = None,
    timeout: float = 600,
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, str]]]:
    """``airflow dags test``, with a person answering each human-in-the-loop task while the run waits.

    Each answer comes from a process of its own (tests/hitl_respond.py), through the handler of the REST
    endpoint the Airflow UI calls, once the task has asked; the run goes on only then.
    """
    if not AIRFLOW_PARKS_HITL_TASKS:
        # Before Airflow 3.3 a HITL task defers to HITLTrigger, and `dags test` runs triggers in its own
        # process through a task supervisor that does not serve the trigger's request for the response (it
        # gets None and fails; seen on 3.1.8 with the standard provider 1.21.0). A real triggerer serves it.
        # There the approval is marked successful without running, the rest of the DAG runs for real; the
        # approval itself is exercised on 3.3+.
        args = ["dags", "test", dag_id, "--mark-success-pattern", "|".join(map(re.escape, answers))]
        if conf is not None:
            args += ["--conf", conf]
        if not answers:
            args = args[:3] + args[5:]
        return instance.run_cli(*args, extra_env=extra_env, check=False, timeout=timeout), {}
    env = {**os.environ, **instance.env, **extra_env}
    responders = {
        task_id: subprocess.Popen(
            [sys.executable, "-m", "tests.hitl_respond", dag_id, task_id, option, "--timeout", str(timeout)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for task_id, option in answers.items()
    }
    try:
        proc = instance.dags_test(dag_id, extra_env=extra_env, conf=conf, check=False, timeout=timeout)
    finally:
        for responder in responders.values():
            if responder.poll() is None:
                responder.kill()
    shown: dict[str, dict[str, str]] = {}
    for task_id, responder in responders.items():
        out, err = responder.communicate()
        if responder.returncode != 0:
            proc.stderr += f"\n--- responder for {task_id} exited {responder.returncode} ---\n{err[-4000:]}"
        for line in out.splitlines():
            if line.startswith(SHOWN + " "):
                shown[task_id] = json.loads(line.removeprefix(SHOWN + " "))
    return proc, shown


def run_example_dags(
    instance: AirflowInstance, fake: LocalOpenRouter, secrets_dir: Path
) -> dict[str, DagRunResult]:
    """Run every example DAG in order; a failed run does not stop the others (each is reported on its own)."""
    from tests.smtp_server import running_smtp_server

    results = {}
    with running_smtp_server() as smtp:
        for spec in EXAMPLE_DAG_RUNS:
            env = {name: value.format(secrets_dir=secrets_dir) for name, value in spec.env.items()}
            started = time.monotonic()
            before = len(smtp.received())
            proc, shown = dags_test_answering(
                instance,
                spec.dag_id,
                spec.answers,
                extra_env={**fake.airflow_env(), **smtp.airflow_env(), **env},
                conf=json.dumps(spec.conf) if spec.conf is not None else None,
            )
            mails = [f"{m.subject}\n{m.body}\n" for m in smtp.received()[before:]]
            results[spec.dag_id] = DagRunResult(spec, proc, time.monotonic() - started, shown, mails)
    return results
