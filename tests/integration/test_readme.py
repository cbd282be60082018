"""The DAGs a new user copies first run as written, under ``airflow dags test``, against a local OpenRouter.

Covered: the README's "Use it in a DAG" example and the quick start of ``docs/index.rst``. Each code block is
written unchanged into a DAG folder of its own Airflow home and run there. The local OpenRouter's keys spend
on their own, fast enough that a key is at its limit by the time any sensor first looks, so the README's
usage sensor has something to see without the DAG being changed for the test.

The README's other Python blocks are fragments (a ``conftest.py`` line, a test skeleton with ``...``), and the
testing page's examples run in ``tests/integration/test_docs.py``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.fernet import Fernet

from tests.airflow_runner import make_airflow_instance
from tests.conftest import ROOT
from tests.integration.test_docs import PYTHON_BLOCKS

if TYPE_CHECKING:
    import subprocess

    from tests.airflow_runner import AirflowInstance

pytestmark = pytest.mark.airflow_db

# USD per second every usable key spends, up to its limit: the README's key (limit 5) is at its limit within
# milliseconds of its creation, long before its sensor first polls.
SPEND_PER_SECOND = 1000.0


def readme_dag_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    examples = [block for block in blocks if "@dag" in block]
    assert len(examples) == 1, "the README should hold exactly one DAG example"
    return examples[0]


def quick_start_example() -> str:
    [code] = [code for where, code in PYTHON_BLOCKS if where.startswith("docs/index.rst")]
    return code


@dataclass
class Run:
    """One ``airflow dags test`` on a local OpenRouter of its own, and what it left behind."""

    proc: subprocess.CompletedProcess[str] = field(repr=False)
    states: dict[str, list[str]]
    run_state: str
    keys: list[dict[str, Any]] = field(repr=False)
    # Kept out of repr so that a failing assertion does not print a key.
    variables: dict[str, str] = field(repr=False)

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def key_named(self, name: str) -> dict[str, Any]:
        [key] = [k for k in self.keys if k["name"] == name]
        return key


def _run(airflow: AirflowInstance, dag_id: str) -> Run:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter(spend_per_second=SPEND_PER_SECOND) as fake:
        proc = airflow.dags_test(dag_id, extra_env=fake.airflow_env(), check=False)
        keys = fake.keys()
    states: dict[str, list[str]] = {}
    for task_id, state in airflow.query(
        "SELECT task_id, state FROM task_instance WHERE dag_id = ? ORDER BY task_id, map_index", (dag_id,)
    ):
        states.setdefault(str(task_id), []).append(str(state))
    run_states = airflow.query("SELECT state FROM dag_run WHERE dag_id = ?", (dag_id,))
    fernet = Fernet(airflow.env["AIRFLOW__CORE__FERNET_KEY"].encode())
    variables = {}
    for name, val, encrypted in airflow.query("SELECT key, val, is_encrypted FROM variable"):
        assert encrypted, name
        variables[str(name)] = fernet.decrypt(str(val).encode()).decode()
    # Both examples write the same Variable: each run starts without it.
    airflow.run_cli("variables", "delete", "openrouter_api_key_acme", check=False)
    return Run(proc, states, str(run_states[0][0]) if run_states else "", keys, variables)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("readme")
    dags = base / "dags"
    dags.mkdir()
    (dags / "tenant_keys.py").write_text(readme_dag_example())
    (dags / "provision_one_tenant.py").write_text(quick_start_example())
    airflow = make_airflow_instance(base, dags)
    return {dag_id: _run(airflow, dag_id) for dag_id in ("tenant_keys", "provision_one_tenant")}


def test_readme_dag_runs_as_written(runs: dict[str, Run]) -> None:
    run = runs["tenant_keys"]
    assert run.proc.returncode == 0, run.output[-8000:]
    assert run.states == {
        "tenants": ["success"],
        "create": ["success"],
        "at_80_percent": ["success"],
        "disable": ["success"],
    }
    assert run.run_state == "success"

    # The key was created, its plaintext is in the tenant's Variable, and the sensor let the disable run.
    key = run.key_named("tenant-acme")
    assert (key["limit"], key["limit_reset"], key["disabled"]) == (5.0, "daily", True)
    assert key["usage_daily"] >= 0.8 * 5.0
    plaintext = run.variables["openrouter_api_key_acme"]
    assert hashlib.sha256(plaintext.encode()).hexdigest() == key["hash"]
    assert plaintext not in run.output


def test_readme_sensor_waits_for_the_create() -> None:
    # Parsed without running: the order the run above depends on, stated where a reader of a failure looks.
    namespace: dict[str, object] = {}
    exec(compile(readme_dag_example(), "README.md", "exec"), namespace)
    build = namespace["tenant_keys"]
    assert callable(build)
    dag = build()
    assert dag.task_dict["at_80_percent"].upstream_task_ids == {"create"}
    assert dag.task_dict["disable"].upstream_task_ids == {"at_80_percent"}


def test_quick_start_runs_as_written(runs: dict[str, Run]) -> None:
    run = runs["provision_one_tenant"]
    assert run.proc.returncode == 0, run.output[-8000:]
    assert run.states == {"create_key": ["success"]}
    assert run.run_state == "success"
    key = run.key_named("tenant-acme")
    assert (key["limit"], key["limit_reset"], key["disabled"]) == (25.0, "monthly", False)
    plaintext = run.variables["openrouter_api_key_acme"]
    assert hashlib.sha256(plaintext.encode()).hexdigest() == key["hash"]
    assert plaintext not in run.output
