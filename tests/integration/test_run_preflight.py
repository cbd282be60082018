"""``make run`` (scripts/run_flagship.py) with a connection that cannot work: it tests the connection first
and says in one line what is wrong and how to fix it, instead of running the DAG into a wall of task
tracebacks.

Each test runs the script for real, in a subprocess, as ``make run`` does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_openrouter.testing import LocalOpenRouter

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run_flagship.py"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_script(home: Path, connection: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home.parent),
        "AIRFLOW_CONN_OPENROUTER_DEFAULT": json.dumps(connection),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_one_line_verdict(result: subprocess.CompletedProcess[str], home: Path, *secrets: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # Stopped before Airflow's database was migrated and the DAG was run.
    assert not (home / "dags-test.log").exists()
    assert not (home / "migrate.log").exists()
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
    return lines[0]


def test_a_closed_port_is_named_before_the_dag_runs(tmp_path: Path) -> None:
    port = closed_port()
    key = "sk-or-v1-" + "5" * 64
    home = tmp_path / "home"
    result = run_script(
        home, {"conn_type": "openrouter", "host": f"http://127.0.0.1:{port}/api/v1", "password": key}
    )
    verdict = assert_one_line_verdict(result, home, key)
    assert f"nothing usable answers at http://127.0.0.1:{port}/api/v1" in verdict
    assert "Connection refused" in verdict
    assert "Fix its Base URL" in verdict
    assert "unset AIRFLOW_CONN_OPENROUTER_DEFAULT" in verdict


@pytest.fixture
def local_openrouter() -> Iterator[LocalOpenRouter]:
    with LocalOpenRouter() as fake:
        yield fake


def test_a_regular_key_is_named_before_the_dag_runs(
    tmp_path: Path, local_openrouter: LocalOpenRouter
) -> None:
    regular = local_openrouter.add_key("an-inference-key")
    home = tmp_path / "home"
    result = run_script(
        home, {"conn_type": "openrouter", "host": local_openrouter.base_url, "password": regular.plaintext}
    )
    verdict = assert_one_line_verdict(result, home, regular.plaintext, local_openrouter.management_key)
    assert "is a regular API key" in verdict
    assert "https://openrouter.ai/settings/management-keys" in verdict
    # One connection test, then nothing: no key was listed, created or changed.
    assert [(r.method, r.path) for r in local_openrouter.requests] == [("GET", "/api/v1/key")]
    assert [key["name"] for key in local_openrouter.keys(include_management=False)] == ["an-inference-key"]


def test_a_refused_key_is_named_before_the_dag_runs(
    tmp_path: Path, local_openrouter: LocalOpenRouter
) -> None:
    wrong = "sk-or-v1-" + "0" * 64
    home = tmp_path / "home"
    result = run_script(
        home, {"conn_type": "openrouter", "host": local_openrouter.base_url, "password": wrong}
    )
    verdict = assert_one_line_verdict(result, home, wrong)
    assert "refused its key (401" in verdict
    assert "password field" in verdict
