"""The provider on a real, distributed Airflow: PostgreSQL, Redis, a scheduler, a DAG processor, a triggerer,
an API server and two Celery workers (``scripts/deployment.py``), the ``openrouter_default`` connection in
the metadata database, the local OpenRouter in its own process. Runs are triggered through the REST API (or
the CLI) as a user triggers them; what the runs did is read back from the local OpenRouter's account, the
REST API and the metadata database.

The tests share one deployment and one account and run in the order they are written; the secret audit
comes last and looks at everything the others left behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.operators.api_key import PLAINTEXT_XCOM_KEY
from airflow_provider_openrouter.testing.faults import Latency
from tests import deployment_support, secret_audit
from tests.deployment_dags.asset_event_dags import ASSET_KEY, ASSET_KEY_VARIABLE
from tests.deployment_dags.deployment_test_dags import (
    KILLED_KEY,
    TENANTS,
    WATCHED,
    key_name,
    variable_name,
)
from tests.deployment_support import (
    cli,
    control,
    keys_named,
    ti_states,
    variable_value,
    wait_for,
)
from tests.example_dag_runs import discovered_dag_ids
from tests.smtp_server import running_smtp_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from scripts.deployment import Deployment
    from tests.smtp_server import SmtpServer

# The session's deployment (a fixture used by name).
deployment = deployment_support.deployment
pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]


# The DAGs scheduled on a key's asset and on the key operators' asset alias.
ON_KEY_DAGS = ("deploy_on_key_asset", "deploy_on_key_alias")


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def assert_single_key_guarantees(dep: Deployment, names_to_variables: dict[str, str]) -> None:
    """Exactly one key per name; its plaintext in its Variable; no Variable holds a key that is gone."""
    live = {key["hash"]: key for key in control(dep).keys() if not key["disabled"]}  # noqa: SIM118
    problems = []
    for name, variable in names_to_variables.items():
        named = keys_named(dep, name)
        if len(named) != 1:
            problems.append(f"{name}: {len(named)} keys ({[k['hash'][:12] for k in named]})")
        value = variable_value(dep, variable)
        if value is None:
            problems.append(f"{name}: Variable {variable} missing")
            continue
        held = _hash(value)
        if held not in live:
            problems.append(f"{name}: Variable {variable} holds a key that is not live ({held[:12]})")
        elif named and held not in {k["hash"] for k in named}:
            problems.append(f"{name}: Variable {variable} holds another key ({held[:12]})")
    assert not problems, "single-key provisioning guarantees broken:\n" + "\n".join(problems)


def trigger_logs(dep: Deployment, dag_id: str, task_id: str) -> list[Path]:
    """The task logs the triggerer wrote for a task's triggers (one per task instance and triggerer job)."""
    folder = dep.airflow_home / "logs" / f"dag_id={dag_id}"
    return sorted(folder.glob(f"run_id=*/task_id={task_id}/**/*.trigger.*.log"))


def test_the_deployment_runs_every_component(deployment: Deployment) -> None:
    health = deployment.api_ok("GET", "/api/v2/monitor/health")
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    assert set(deployment.running()) >= {
        "postgres",
        "redis",
        "openrouter",
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker-1",
        "worker-2",
    }
    # The connection lives in the metadata database, not in any component's environment.
    conn = deployment.api_ok("GET", "/api/v2/connections/openrouter_default")
    assert conn["conn_type"] == "openrouter"
    assert conn["host"] == deployment.fake_url
    assert not any(name.startswith("AIRFLOW_CONN_") for name in deployment.airflow_env())
    rows = deployment.sql("SELECT conn_id, is_encrypted FROM connection WHERE conn_id = 'openrouter_default'")
    assert rows == [("openrouter_default", True)]


def test_flagship_dag_end_to_end(deployment: Deployment) -> None:
    dag_id = "example_openrouter_tenant_lifecycle"
    deployment.set_paused(dag_id, False)
    run_id = deployment.trigger(dag_id, conf={"watch_timeout": 180})
    state = deployment.wait_run(dag_id, run_id, timeout=600)
    states = ti_states(deployment, dag_id, run_id)
    assert state == "success", states
    watched = {task: s for task, s in states.items() if task.startswith("watch_usage")}
    assert watched, states
    assert set(watched.values()) == {"success"}, states
    # The deferrable sensor waited in the triggerer process (a tenant whose key had already crossed the line
    # at the first poke never defers): its trigger log is written by the triggerer job,
    # ``<task log>.trigger.<triggerer job id>.log``.
    assert trigger_logs(deployment, dag_id, "watch_usage"), "no sensor deferred to the triggerer"
    report = deployment.api_ok(
        "GET",
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value?deserialize=true",
    )
    assert report["value"]


def test_concurrent_provisioning_keeps_one_key_per_tenant(deployment: Deployment) -> None:
    runs = [
        ("deploy_provision_each", deployment.trigger("deploy_provision_each")),
        ("deploy_provision_each", deployment.trigger("deploy_provision_each")),
        ("deploy_provision_mapped", deployment.trigger("deploy_provision_mapped")),
    ]
    outcome = {run_id: deployment.wait_run(dag_id, run_id, timeout=300) for dag_id, run_id in runs}
    failed = {
        run_id: ti_states(deployment, dag_id, run_id)
        for dag_id, run_id in runs
        if outcome[run_id] != "success"
    }
    assert_single_key_guarantees(deployment, {key_name(t): variable_name(t) for t in TENANTS})
    assert not failed, failed


def test_worker_killed_during_a_create_is_retried(deployment: Deployment) -> None:
    import psutil

    fake = control(deployment)
    # The create is held for a while on the server (and then acted on, as a slow OpenRouter does): the
    # worker running it dies while it waits for the answer.
    fake.inject(Latency(25), method="POST", path="/keys", times=1)
    dag_id = "deploy_provision_killed"
    run_id = deployment.trigger(dag_id)

    def running_pid() -> int | None:
        rows = deployment.sql(
            "SELECT pid FROM task_instance WHERE dag_id = %s AND run_id = %s AND state = 'running'",
            (dag_id, run_id),
        )
        return int(rows[0][0]) if rows and rows[0][0] else None

    pid = wait_for(running_pid, 120, "the create to run")
    # The task has started; wait until its POST is out (it lists the keys first, then creates).
    wait_for(lambda: any(r.method == "GET" and r.path.endswith("/keys") for r in fake.requests), 30, "list")
    time.sleep(3)
    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    [victim] = [
        name
        for name in ("worker-1", "worker-2")
        if deployment.components[name].pid in ancestors or deployment.components[name].pid == pid
    ]
    killed_at = time.monotonic()
    try:
        deployment.stop_component(victim, signal.SIGKILL)
        assert not deployment.components[victim].running()
        # Heartbeat timeout, retry delay, then the retry waits out the claim's lease and grace (~310 s).
        state = deployment.wait_run(dag_id, run_id, timeout=600)
    finally:
        deployment.start_component(victim)
    [ti] = deployment.task_instances(dag_id, run_id)
    logs = sorted((deployment.airflow_home / "logs" / f"dag_id={dag_id}").rglob("attempt=*.log"))
    last_log = "\n".join(line[:300] for line in logs[-1].read_text().splitlines()[-15:]) if logs else ""
    assert state == "success", (
        f"{ti['state']} after {ti['try_number']} tries; the last one's log:\n{last_log}"
    )
    assert ti["try_number"] >= 2, ti
    assert time.monotonic() - killed_at > 10
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/keys")]
    assert len(posts) >= 1
    assert_single_key_guarantees(deployment, {KILLED_KEY: "openrouter_api_key_deploy_killed"})
    # The killed try's provisional key, whose plaintext went nowhere, was cleaned up by a later try.
    leftovers = [k["name"] for k in fake.keys() if k["name"].startswith(f"{KILLED_KEY} [")]  # noqa: SIM118
    assert not leftovers, leftovers


def test_deferred_sensors_survive_a_triggerer_restart(deployment: Deployment) -> None:
    fake = control(deployment)
    prefix = "deploy-watch"
    for n in range(WATCHED):
        fake.add_key(f"{prefix}-{n}", limit=100)
    dag_id = "deploy_deferred_watch"
    # The keys spend 0.5 USD a second: 30 USD takes a minute, long enough to restart the triggerer.
    run_id = deployment.trigger(dag_id, conf={"prefix": prefix, "usd": 30.0})

    def all_deferred() -> bool:
        return set(ti_states(deployment, dag_id, run_id).values()) == {"deferred"}

    wait_for(all_deferred, 120, "every sensor to defer")
    # ... and every trigger to run in the triggerer (it writes each one's log).
    wait_for(
        lambda: all(trigger_logs(deployment, dag_id, f"watch_{n}") for n in range(WATCHED)),
        120,
        "the triggerer to run every trigger",
    )
    deployment.stop_component("triggerer", signal.SIGKILL)
    assert not deployment.components["triggerer"].running()
    time.sleep(2)
    assert set(ti_states(deployment, dag_id, run_id).values()) == {"deferred"}
    deployment.start_component("triggerer")
    state = deployment.wait_run(dag_id, run_id, timeout=300)
    assert state == "success", ti_states(deployment, dag_id, run_id)

    # Each sensor's trigger ran in both triggerers: the killed one, then the new one (each writes the task's
    # trigger log under its own job id).
    def jobs_of(n: int) -> set[str]:
        logs = trigger_logs(deployment, dag_id, f"watch_{n}")
        return {path.name.rsplit(".trigger.", 1)[1] for path in logs}

    try:
        wait_for(lambda: all(len(jobs_of(n)) == 2 for n in range(WATCHED)), 60, "each triggerer's logs")
    except AssertionError as exc:
        triggerers = deployment.api_ok("GET", "/api/v2/jobs?job_type=TriggererJob&limit=100")["jobs"]
        found = {n: sorted(jobs_of(n)) for n in range(WATCHED)}
        raise AssertionError(
            f"{exc}: trigger logs by sensor {found}; triggerer jobs "
            f"{[(job['id'], job['state'], job['start_date'], job['end_date']) for job in triggerers]}"
        ) from None


PER_TRIGGER_TENANT = {"ui": "initech", "cli": "globex", "rest": "acme"}

# The example DAGs in the order of the story they tell on one account, with the conf a manual run gets
# (the scheduled runs take the DAG's defaults).
EXAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    ("example_openrouter_provision_tenants", {}, True),
    ("example_openrouter_monthly_limits", {}, True),
    # Each run decommissions another tenant, so that every run disables and deletes a key of its own.
    (
        "example_openrouter_decommission",
        {how: {"tenant": tenant, "grace_period_seconds": 2} for how, tenant in PER_TRIGGER_TENANT.items()},
        False,
    ),
    ("example_openrouter_usage_watch", {}, True),
    ("example_openrouter_tenant_lifecycle", {"watch_timeout": 120, "key_prefix": "ui-"}, False),
    # Its approval step waits for a person: the test approves through the REST API, as the UI does.
    ("example_openrouter_sync_tenants", {}, True),
    # E-mails through smtp_default: a loopback SMTP server of the test (deployment_smtp).
    ("example_openrouter_fleet_alerts", {}, True),
    # The provisioning example's service key, rotated with an overlap; its old key is retired in the real
    # triggerer, at a deadline of seconds (the local OpenRouter's keys spend on their own: never idle).
    (
        "example_openrouter_rotate_key",
        {"key_name": "reporting-service", "idle_seconds": 1, "deadline_seconds": 5},
        False,
    ),
]
NEEDS_SMTP = {"example_openrouter_fleet_alerts"}


@pytest.fixture(scope="module")
def deployment_smtp(deployment: Deployment) -> Iterator[SmtpServer]:
    """A loopback SMTP server, and the ``smtp_default`` connection to it in the metadata database."""
    with running_smtp_server() as server:
        deployment.api("DELETE", "/api/v2/connections/smtp_default")
        extra = {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com", "timeout": 10}
        deployment.api_ok(
            "POST",
            "/api/v2/connections",
            {
                "connection_id": "smtp_default",
                "conn_type": "smtp",
                "host": server.host,
                "port": server.port,
                "extra": json.dumps(extra),
            },
        )
        yield server


def test_every_example_dag_is_triggered() -> None:
    assert {dag_id for dag_id, _, _ in EXAMPLES} == discovered_dag_ids()


def finish(dep: Deployment, dag_id: str, run_id: str, timeout: float = 300) -> str:
    """Wait for the run to end, approving any human-in-the-loop step it asks for on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(dep.dag_run(dag_id, run_id)["state"])
        if state in ("success", "failed"):
            return state
        for ti in dep.task_instances(dag_id, run_id):
            if ti["task_id"] == "approve" and ti["state"] in ("deferred", "awaiting_input"):
                dep.api(
                    "PATCH",
                    f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/{ti['map_index']}/hitlDetails",
                    {"chosen_options": ["Approve"]},
                )
        time.sleep(1)
    raise AssertionError(f"{dag_id} {run_id} still not finished after {timeout:.0f} s")


@pytest.mark.parametrize(("dag_id", "conf", "scheduled"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_dag_triggered_every_way(
    deployment: Deployment,
    dag_id: str,
    conf: dict[str, Any],
    scheduled: bool,
    request: pytest.FixtureRequest,
) -> None:
    """On its schedule (a logical date), from the UI (the trigger form sends a logical date), from the CLI
    and the REST API (no logical date, as both default to in Airflow 3)."""
    if dag_id in NEEDS_SMTP:
        request.getfixturevalue("deployment_smtp")
    runs: dict[str, str] = {}
    if scheduled:
        deployment.set_paused(dag_id, False)
        found = wait_for(
            lambda: [
                r
                for r in deployment.api_ok("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
                if r["run_type"] == "scheduled"
            ],
            120,
            "the scheduled run",
        )
        runs["schedule"] = found[0]["dag_run_id"]
        assert found[0]["logical_date"] is not None
        finish(deployment, dag_id, runs["schedule"])
    else:
        deployment.set_paused(dag_id, False)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    confs = conf if set(conf) == set(PER_TRIGGER_TENANT) else dict.fromkeys(PER_TRIGGER_TENANT, conf)
    runs["ui"] = deployment.trigger(dag_id, conf=confs["ui"], logical_date=now)
    finish(deployment, dag_id, runs["ui"])
    out = cli(deployment, "dags", "trigger", dag_id, "--conf", json.dumps(confs["cli"]), "--output", "json")
    # Airflow logs its own warnings to stdout too: the JSON is the last line.
    runs["cli"] = json.loads(out.strip().splitlines()[-1])[0]["dag_run_id"]
    finish(deployment, dag_id, runs["cli"])
    runs["rest"] = deployment.trigger(dag_id, conf=confs["rest"])
    finish(deployment, dag_id, runs["rest"])
    deployment.set_paused(dag_id, True)
    results = {how: deployment.dag_run(dag_id, run_id) for how, run_id in runs.items()}
    assert results["rest"]["logical_date"] is None
    assert results["cli"]["logical_date"] is None
    assert results["ui"]["logical_date"] is not None
    failed = {
        how: ti_states(deployment, dag_id, run["dag_run_id"])
        for how, run in results.items()
        if run["state"] != "success"
    }
    assert not failed, failed


def _asset_runs(dep: Deployment, dag_id: str) -> list[dict[str, Any]]:
    runs = dep.api_ok("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    return [run for run in runs if run["run_type"] == "asset_triggered"]


def _events_seen(dep: Deployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    assert dep.wait_run(dag_id, run_id, timeout=180) == "success", ti_states(dep, dag_id, run_id)
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/events_seen/xcomEntries/return_value"
    seen: list[dict[str, Any]] = dep.api_ok("GET", f"{path}?deserialize=true")["value"]
    return seen


def test_a_key_change_triggers_the_dags_scheduled_on_its_asset_and_the_alias(deployment: Deployment) -> None:
    from airflow_provider_openrouter.assets import key_uri

    before = {dag_id: len(_asset_runs(deployment, dag_id)) for dag_id in ON_KEY_DAGS}
    run_id = deployment.trigger("deploy_key_change")
    assert deployment.wait_run("deploy_key_change", run_id) == "success"
    [key] = keys_named(deployment, ASSET_KEY)
    plaintext = variable_value(deployment, ASSET_KEY_VARIABLE)
    assert plaintext is not None
    assert _hash(plaintext) == key["hash"]
    for dag_id in ON_KEY_DAGS:
        runs = wait_for(
            lambda dag_id=dag_id: _asset_runs(deployment, dag_id)[before[dag_id] :] or None,
            180,
            f"{dag_id} to be triggered by the key's asset event",
            interval=2,
        )
        seen = [e for run in runs for e in _events_seen(deployment, dag_id, run["dag_run_id"])]
        ours = [e for e in seen if e["extra"].get("key_hash") == key["hash"]]
        assert ours, seen
        assert ours[0]["uri"] == key_uri(ASSET_KEY)
        assert ours[0]["extra"]["action"] in ("created", "rotated")
        assert ours[0]["extra"]["key_name"] == ASSET_KEY
        assert ours[0]["extra"]["plaintext_delivered_to"] == [f"Variable {ASSET_KEY_VARIABLE}"]
        assert plaintext not in json.dumps(seen)


def test_no_secret_in_any_log_or_the_database(deployment: Deployment) -> None:
    fake = control(deployment)
    secrets = [*fake.issued_plaintexts, fake.management_key]
    # Compare a count, never the list: a failing assertion must not print a key.
    issued = len(secrets)
    assert issued > 20, f"only {issued} keys to look for: did the other tests run?"
    deployment.sql("CHECKPOINT")
    # The local OpenRouter's own log is OpenRouter's side: it prints its management key on purpose.
    logs = {
        path.name: path.read_text(errors="replace")
        for path in deployment.logs_dir.glob("*.log")
        if path.name != "openrouter.log"
    }
    report = secret_audit.audit_deployment(
        secrets,
        component_logs=logs,
        airflow_home=deployment.airflow_home,
        dsn=deployment.dsn,
        pgdata=deployment.pgdata,
        redis_port=deployment.ports["redis"],
    )
    assert set(logs) >= {f"{c}.log" for c in ("scheduler", "triggerer", "api-server", "worker-1", "postgres")}
    assert {"xcom", "variable", "connection", "task_instance", "log"} <= report.tables
    assert report.files_scanned > 10
    # Celery's own bookkeeping (bindings, at least) is there to be read; queues may be empty by now.
    assert report.redis_keys > 0
    assert not report.hits, "\n".join(map(str, report.hits))
    assert all(hit.where.startswith("xcom") for hit in report.allowed)
    assert PLAINTEXT_XCOM_KEY
