"""The deployment tests' session: one real Airflow deployment (``scripts/deployment.py``) for all of them.

It runs the example DAGs and the DAGs in ``tests/deployment_dags/``, with the usage watch polling every
``USAGE_WATCH_POLL_SECONDS``. Whatever happens to the tests, the deployment is stopped at the end of the
session, and at interpreter exit if the session never got that far.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scripts.deployment import AIRFLOW, EXAMPLE_DAGS, Deployment
from tests.airflow_runner import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

DEPLOYMENT_DAGS = ROOT / "tests" / "deployment_dags"
# Above the shortest reschedule interval that survives a real scheduler (RESCHEDULE_MIN_INTERVAL, 5 s).
USAGE_WATCH_POLL_SECONDS = 10


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    with tempfile.TemporaryDirectory(prefix="openrouter-deployment-") as tmp:
        # As root, PostgreSQL runs as another user, who must reach its data directory in here.
        Path(tmp).chmod(0o755)
        secrets_dir = Path(tmp) / "example-secrets"
        dep = Deployment(
            home=Path(tmp) / "home",
            dag_files=sorted(EXAMPLE_DAGS.glob("*.py")) + sorted(DEPLOYMENT_DAGS.glob("*.py")),
            extra_env={
                "OPENROUTER_USAGE_WATCH_POLL_SECONDS": str(USAGE_WATCH_POLL_SECONDS),
                "OPENROUTER_EXAMPLE_SECRETS_DIR": str(secrets_dir),
            },
        )
        atexit.register(dep.stop)
        try:
            dep.start()
            yield dep
        finally:
            dep.stop()
            atexit.unregister(dep.stop)
            left = dep.running()
            assert not left, f"still running after stop: {left}"


def control(dep: Deployment) -> LocalOpenRouterControl:
    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

    return LocalOpenRouterControl(dep.fake_url)


def keys_named(dep: Deployment, name: str) -> list[dict[str, Any]]:
    return [key for key in control(dep).keys() if key["name"] == name]  # noqa: SIM118


def variable_value(dep: Deployment, key: str) -> str | None:
    """A Variable's value as a task reads it. The REST API masks the values of secret-looking Variables
    (``*api_key*``), so it is read from the database and decrypted with the deployment's Fernet key."""
    from cryptography.fernet import Fernet

    rows = dep.sql("SELECT val, is_encrypted FROM variable WHERE key = %s", (key,))
    if not rows:
        return None
    [(value, encrypted)] = rows
    return Fernet(dep.fernet_key.encode()).decrypt(value.encode()).decode() if encrypted else str(value)


def cli(dep: Deployment, *args: str) -> str:
    """Run ``airflow ARGS`` as a user on the deployment's machine would."""
    proc = subprocess.run(
        [str(AIRFLOW), *args], env=dep.airflow_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ti_states(dep: Deployment, dag_id: str, run_id: str) -> dict[str, str]:
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): str(ti["state"])
        for ti in dep.task_instances(dag_id, run_id)
    }
