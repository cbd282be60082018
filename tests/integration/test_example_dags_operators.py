"""The key-operator example DAGs, run for real by ``airflow dags test`` against one local OpenRouter.

They run in the order an operator of the account would run them: provisioning (twice: the second run must
reuse the tenants' keys and rotate the service key), the monthly limits, then a decommission. Every run goes
through Airflow's execution API and metadata database, so this is also where plaintext delivery to Variables
is shown to work, and where the whole database, the task logs and the CLI output are searched for plaintext.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_openrouter.links import key_url
from airflow_provider_openrouter.testing._guardrails import guardrails_of
from tests.airflow_runner import ROOT
from tests.example_dag_runs import AIRFLOW_PARKS_HITL_TASKS, dags_test_answering
from tests.hitl_timeout_sweep import RESOLVED

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

pytestmark = pytest.mark.airflow_db

PROVISION = "example_openrouter_provision_tenants"
LIMITS = "example_openrouter_monthly_limits"
DECOMMISSION = "example_openrouter_decommission"
SYNC = "example_openrouter_sync_tenants"
TENANT_LIMITS = {"acme": 25.0, "globex": 50.0, "initech": 10.0}


@dataclass
class Run:
    """One ``airflow dags test`` run and what the fake saw during it."""

    dag_id: str
    proc: subprocess.CompletedProcess[str] = field(repr=False)
    requests: list[Any] = field(repr=False)
    # Kept out of repr so that a failing assertion does not print the keys.
    variables: dict[str, str] = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    shown: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


@dataclass
class Account:
    fake: LocalOpenRouter
    airflow: AirflowInstance
    secrets_dir: Path
    runs: list[Run] = field(default_factory=list, repr=False)

    def run(
        self, dag_id: str, conf: dict[str, Any] | None = None, answers: dict[str, str] | None = None
    ) -> Run:
        before = len(self.fake.requests)
        started = time.monotonic()
        proc, shown = dags_test_answering(
            self.airflow,
            dag_id,
            answers or {},
            extra_env={**self.fake.airflow_env(), "OPENROUTER_EXAMPLE_SECRETS_DIR": str(self.secrets_dir)},
            conf=json.dumps(conf) if conf is not None else None,
        )
        run = Run(dag_id, proc, self.fake.requests[before:], self.variables(), time.monotonic() - started)
        run.shown = shown
        self.runs.append(run)
        assert proc.returncode == 0, run.output[-6000:]
        failed = self.airflow.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND state != 'success'",
            (dag_id,),
        )
        assert failed == [], run.output[-6000:]
        return run

    def variables(self) -> dict[str, str]:
        """The tenants' Variables, decrypted (they are stored encrypted: checked here too)."""
        fernet = Fernet(self.airflow.env["AIRFLOW__CORE__FERNET_KEY"].encode())
        found = {}
        for key, val, encrypted in self.airflow.query(
            "SELECT key, val, is_encrypted FROM variable WHERE key LIKE 'openrouter_api_key_%'"
        ):
            assert encrypted, key
            found[str(key)] = fernet.decrypt(str(val).encode()).decode()
        return found

    def key_named(self, name: str) -> dict[str, Any]:
        [key] = [k for k in self.fake.keys(include_management=False) if k["name"] == name]
        return key

    def xcom(self, dag_id: str, task_id: str, key: str) -> dict[int, Any]:
        rows = self.airflow.query(
            "SELECT map_index, value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? ORDER BY run_id",
            (dag_id, task_id, key),
        )
        # The last run's value per map index.
        return {int(str(index)): json.loads(value) for index, value in rows}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def account(airflow_instance: AirflowInstance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Account]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        yield Account(fake, airflow_instance, tmp_path_factory.mktemp("secret-store"))


@pytest.fixture(scope="module")
def provisioned(account: Account) -> Run:
    return account.run(PROVISION)


@pytest.fixture(scope="module")
def provisioned_again(account: Account, provisioned: Run) -> Run:
    return account.run(PROVISION)


@pytest.fixture(scope="module")
def limits_applied(account: Account, provisioned_again: Run) -> Run:
    return account.run(LIMITS)


@pytest.fixture(scope="module")
def decommissioned(account: Account, limits_applied: Run) -> Run:
    return account.run(DECOMMISSION, {"tenant": "initech", "grace_period_seconds": 3})


@pytest.fixture(scope="module")
def synced(account: Account, decommissioned: Run) -> Run:
    return account.run(SYNC, answers={"approve": "Approve"})


def test_provisioning_creates_each_tenant_key_and_writes_its_variable(
    account: Account, provisioned: Run
) -> None:
    for tenant, limit in TENANT_LIMITS.items():
        key = account.key_named(f"tenant-{tenant}")
        assert (key["limit"], key["limit_reset"], key["disabled"]) == (limit, "monthly", False)
        # The Variable holds exactly the plaintext of this tenant's key.
        assert sha256(provisioned.variables[f"openrouter_api_key_{tenant}"]) == key["hash"]

    # The task logs (in the output of `airflow dags test`) say where each plaintext went, and are searched
    # for plaintext at the end.
    assert (
        "Delivered the plaintext of key 'tenant-acme' to Variable openrouter_api_key_acme."
        in provisioned.output
    )
    results = account.xcom(PROVISION, "create_tenant_key", "return_value")
    links = account.xcom(PROVISION, "create_tenant_key", "_link_OpenRouterKeyLink")
    assert sorted(results) == [0, 1, 2]
    for index, result in results.items():
        assert result["action"] == "created"
        assert result["plaintext_delivered_to"] == [f"Variable openrouter_api_key_{result['name'][7:]}"]
        assert links[index] == key_url(result["hash"])


def test_provisioning_hands_the_service_key_to_the_callable_with_a_templated_expiry(
    account: Account, provisioned: Run
) -> None:
    # Created under a provisional name, renamed after delivery.
    claim = "reporting-service [pending delivery "
    [post] = [r for r in provisioned.requests if r.method == "POST" and r.body["name"].startswith(claim)]
    # "{{ data_interval_end.add(days=30) }}", rendered to the API's UTC-with-seconds form.
    assert post.body["expires_at"].endswith("Z")
    assert len(post.body["expires_at"]) == len("2026-01-01T00:00:00Z")
    [result] = account.xcom(PROVISION, "rotate_reporting_key", "return_value").values()
    secret_file = account.secrets_dir / "reporting-service.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert sha256(secret_file.read_text()) == result["hash"]


def test_a_second_provisioning_reuses_tenant_keys_and_rotates_the_service_key(
    account: Account, provisioned: Run, provisioned_again: Run
) -> None:
    posts = [r.body["name"] for r in provisioned_again.requests if r.method == "POST"]
    assert [name.partition(" [pending delivery ")[0] for name in posts] == ["reporting-service"]
    # The tenants' Variables keep the plaintext of the keys they still have.
    assert provisioned_again.variables == provisioned.variables
    for result in account.xcom(PROVISION, "create_tenant_key", "return_value").values():
        assert (result["action"], result["plaintext_issued"], result["plaintext_delivered_to"]) == (
            "reused",
            False,
            [],
        )
    service = account.key_named("reporting-service")
    [result] = account.xcom(PROVISION, "rotate_reporting_key", "return_value").values()
    assert result["action"] == "replaced"
    assert result["hash"] == service["hash"]
    assert not account.fake.has_key(result["replaced_key_hashes"][0])
    assert sha256((account.secrets_dir / "reporting-service.key").read_text()) == service["hash"]


def test_monthly_limits_change_only_what_differs(account: Account, limits_applied: Run) -> None:
    limits = {k["name"]: k["limit"] for k in account.fake.keys(include_management=False)}
    assert (limits["tenant-acme"], limits["tenant-globex"], limits["tenant-initech"]) == (30.0, 50.0, None)
    patches = {r.path.rsplit("/", 1)[1]: r.body for r in limits_applied.requests if r.method == "PATCH"}
    assert patches == {
        account.key_named("tenant-acme")["hash"]: {"limit": 30.0},
        account.key_named("tenant-initech")["hash"]: {"limit": None},
    }
    results = account.xcom(LIMITS, "set_monthly_limit", "return_value")
    assert [results[i]["changed"] for i in range(3)] == [True, False, True]
    # `airflow dags test` runs the tasks in its own process: their logs are in its output.
    assert "already has limit=50.0, limit_reset='monthly': nothing to change" in limits_applied.output


def test_decommission_disables_then_deletes_after_the_grace_period(
    account: Account, limits_applied: Run, decommissioned: Run
) -> None:
    initech = account.xcom(LIMITS, "set_monthly_limit", "return_value")[2]["hash"]
    writes = [(r.method, r.body) for r in decommissioned.requests if r.method in ("PATCH", "DELETE")]
    assert writes == [("PATCH", {"disabled": True}), ("DELETE", None)]
    assert not account.fake.has_key(initech)
    assert sorted(k["name"] for k in account.fake.keys(include_management=False)) == [
        "reporting-service",
        "tenant-acme",
        "tenant-globex",
    ]
    [deleted] = account.xcom(DECOMMISSION, "delete_key", "return_value").values()
    assert (deleted["deleted"], deleted["hash"], deleted["disabled"]) == (True, initech, True)


@pytest.fixture(scope="module")
def decommissioned_again(account: Account, decommissioned: Run) -> Run:
    return account.run(DECOMMISSION, {"tenant": "initech", "grace_period_seconds": 0})


def test_decommissioning_a_tenant_again_succeeds_and_writes_nothing(
    account: Account, decommissioned: Run, decommissioned_again: Run
) -> None:
    # A rerun (or a second trigger for a tenant already gone) finds no key to disable or delete.
    assert [r.method for r in decommissioned_again.requests if r.method != "GET"] == []
    [disabled] = account.xcom(DECOMMISSION, "disable_key", "return_value").values()
    assert (disabled["found"], disabled["changed"], disabled["name"]) == (False, False, "tenant-initech")
    [deleted] = account.xcom(DECOMMISSION, "delete_key", "return_value").values()
    assert (deleted["deleted"], deleted["name"]) == (False, "tenant-initech")
    assert "No key with name 'tenant-initech' exists: nothing to update (missing_ok=True)." in (
        decommissioned_again.output
    )


def test_sync_plans_an_approver_sees_the_plan_then_it_applies(
    account: Account, decommissioned: Run, synced: Run
) -> None:
    """The tenants table against the account the decommission left: acme's limit raised, initech back with a
    daily limit, hooli new. The plan task changes nothing; the approver is shown the plan as a table while
    the run waits; the apply task makes exactly the plan."""
    writes = [r for r in synced.requests if r.method in ("POST", "PATCH", "DELETE")]
    assert writes
    assert {r.method for r in synced.requests[: synced.requests.index(writes[0])]} == {"GET"}

    if AIRFLOW_PARKS_HITL_TASKS:
        shown = synced.shown["approve"]
        assert shown["subject"].startswith("Apply the OpenRouter tenant sync of ")
        body = shown["body"]
        assert "| Action | Tenant / key | Hash | Changes / reason |" in body
        acme = account.key_named("tenant-acme")
        assert f"| update | tenant-acme | `{acme['hash'][:12]}` | limit: 30.0 → 40.0 |" in body
        assert (
            "| create | tenant-initech | (new) | "
            "limit: None → 10.0, limit_reset: None → 'daily', disabled: None → False |"
        ) in body
        assert "| create | tenant-hooli | (new) | limit: None → 20.0, limit_reset: None → 'monthly'" in body
        assert "**Counts:** create 2, update 1, unchanged 1, rotate 0, keep 0, disable 0, delete 0" in body
    else:
        # Before 3.3, `dags test` runs the approval's trigger inline and it never sees an answer: the harness
        # marks only that task approved. The deployment tests approve it for real on these versions.
        assert "approve" not in synced.shown

    keys = {k["name"]: k for k in account.fake.keys(include_management=False)}
    assert (keys["tenant-acme"]["limit"], keys["tenant-acme"]["limit_reset"]) == (40.0, "monthly")
    assert (keys["tenant-initech"]["limit"], keys["tenant-initech"]["limit_reset"]) == (10.0, "daily")
    assert keys["tenant-hooli"]["limit"] == 20.0
    # New keys went to the secret store (here Variables, encrypted) and nowhere else.
    for tenant in ("initech", "hooli"):
        assert sha256(synced.variables[f"openrouter_api_key_{tenant}"]) == keys[f"tenant-{tenant}"]["hash"]
    [applied] = account.xcom(SYNC, "apply", "return_value").values()
    assert applied["applied"]["counts"]["create"] == 2
    assert applied["applied"]["counts"]["update"] == 1
    # Every tenant's key, new ones included, holds its tier: a second budget window and a model allowlist.
    store = guardrails_of(account.fake._state)
    tiers = {a["key_name"]: store.get(a["guardrail_id"]) for a in store.assignments(None)}
    assert {name: tier["name"] for name, tier in tiers.items()} == {
        "tenant-acme": "tenant-tier-basic",
        "tenant-globex": "tenant-tier-pro",
        "tenant-initech": "tenant-tier-basic",
        "tenant-hooli": "tenant-tier-pro",
    }
    basic = tiers["tenant-acme"]
    assert (basic["limit_usd"], basic["reset_interval"]) == (1.0, "daily")
    assert basic["allowed_models"] == ["openai/gpt-4o-mini", "google/gemini-2.5-flash"]
    assert applied["applied"]["guardrail_counts"]["create"] == 2
    [(state,)] = account.airflow.query(
        "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = 'approve'", (SYNC,)
    )
    assert state == "success"


def test_no_plaintext_in_logs_xcom_rendered_fields_or_output(account: Account, synced: Run) -> None:
    assert len(account.runs) == 6
    print("dags test durations:", [(run.dag_id, round(run.seconds)) for run in account.runs])
    plaintexts = account.fake.issued_plaintexts  # the management key and every key issued
    assert len(plaintexts) >= 6
    places = {
        "task log files": account.airflow.task_log_text(),
        "task logs and CLI output": "\n".join(run.output for run in account.runs),
    }
    for table, columns in {
        "xcom": "key, value",
        "rendered_task_instance_fields": "rendered_fields",
        "variable": "key, val",
        "dag_run": "conf",
    }.items():
        rows = account.airflow.query(f"SELECT {columns} FROM {table}")
        places[table] = "\n".join(repr(row) for row in rows)
    assert places["xcom"]
    for where, text in places.items():
        for plaintext in plaintexts:
            assert plaintext not in text, f"a plaintext key appears in {where}"


def _sync_approval() -> Any:
    # Parsed in this process, where OPENROUTER_SYNC_APPROVAL_TIMEOUT_SECONDS is unset: the defaults apply.
    dag = runpy.run_path(str(ROOT / "example_dags" / f"{SYNC}.py"))["dag"]
    return dag.task_dict["approve"]


def test_the_sync_approval_ends_by_default_in_a_rejection() -> None:
    approve = _sync_approval()
    # Unanswered for 12 hours (less than the day until the next run), the plan is rejected.
    assert approve.response_timeout.total_seconds() == 12 * 3600
    assert approve.defaults == ["Reject"]


@dataclass
class UnansweredSync:
    run: Run
    chosen: list[str]  # what the approval's timeout chose
    keys: list[dict[str, Any]] = field(repr=False)


@pytest.fixture(scope="module")
def unanswered_sync(airflow_instance: AirflowInstance) -> UnansweredSync | None:
    """The sync example on an account of its own (an empty one: the plan creates every tenant's key), its
    approval left unanswered, with the timeout set short through the environment variable the example reads.

    ``None`` before Airflow 3.3: there ``dags test`` cannot run the approval's trigger (see
    ``dags_test_answering``), and the triggerer of a deployment applies the timeout instead.
    """
    from airflow_provider_openrouter.testing import LocalOpenRouter

    if not AIRFLOW_PARKS_HITL_TASKS:
        return None
    with LocalOpenRouter() as fake:
        extra_env = {**fake.airflow_env(), "OPENROUTER_SYNC_APPROVAL_TIMEOUT_SECONDS": "1"}
        # The scheduler's share of the wait: its timeout sweep, in a process of its own (no scheduler runs).
        sweeper = subprocess.Popen(
            [sys.executable, "-m", "tests.hitl_timeout_sweep", SYNC, "approve", "--timeout", "300"],
            cwd=ROOT,
            env={**os.environ, **airflow_instance.env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Seconds once the sweep resolves the approval; the timeout is for a sweep that never does.
            proc = airflow_instance.dags_test(SYNC, extra_env=extra_env, check=False, timeout=300)
        finally:
            if sweeper.poll() is None:
                sweeper.kill()
        out, err = sweeper.communicate()
        run = Run(SYNC, proc, fake.requests)
        keys = fake.keys()
    assert sweeper.returncode == 0, err[-4000:] + run.output[-6000:]
    [chosen] = [line.removeprefix(RESOLVED + " ") for line in out.splitlines() if line.startswith(RESOLVED)]
    return UnansweredSync(run, json.loads(chosen), keys)


def test_an_unanswered_sync_approval_times_out_and_applies_nothing(
    airflow_instance: AirflowInstance, unanswered_sync: UnansweredSync | None
) -> None:
    if unanswered_sync is None:
        # Before 3.3 the same operator settings reach the trigger that applies the timeout.
        assert _sync_approval().defaults == ["Reject"]
        return
    run = unanswered_sync.run
    assert run.proc.returncode == 0, run.output[-6000:]
    [(run_id,)] = airflow_instance.query(
        "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (SYNC,)
    )
    # The plan read the (empty) account and found a key to create for every tenant...
    [(plan,)] = airflow_instance.query(
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'plan' "
        "AND key = 'return_value'",
        (SYNC, run_id),
    )
    assert json.loads(str(plan))["counts"]["create"] == 4
    # ...and with nobody answering, the timeout rejected it: nothing was written.
    assert unanswered_sync.chosen == ["Reject"]
    assert [r.method for r in run.requests if r.method != "GET"] == []
    assert unanswered_sync.keys == []
    states = dict(
        airflow_instance.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (SYNC, run_id)
        )
    )
    assert states == {"tenants_table": "success", "plan": "success", "approve": "success", "apply": "skipped"}
