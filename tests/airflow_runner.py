"""Running DAGs in a real Airflow (CLI, metadata database on SQLite) from tests.

``airflow_instance`` gives a migrated AIRFLOW_HOME shared by the whole session; ``AirflowInstance.dags_test``
runs ``airflow dags test`` in a subprocess against it, which runs every task (and trigger, inline) for real.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


@dataclass
class AirflowInstance:
    home: Path
    dags_folder: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def run_cli(
        self, *args: str, extra_env: Mapping[str, str] | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, **(extra_env or {})}
        proc = subprocess.run(
            [str(AIRFLOW_BIN), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-8000:]}"
                f"\n--- stderr ---\n{proc.stderr[-8000:]}"
            )
        return proc

    def dags_test(
        self,
        dag_id: str,
        *,
        extra_env: Mapping[str, str] | None = None,
        conf: str | None = None,
        check: bool = True,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """``airflow dags test DAG_ID`` (tasks and triggers run in the subprocess, state lands in the DB)."""
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["--conf", conf]
        return self.run_cli(*args, extra_env=extra_env, check=check, timeout=timeout)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read the metadata database directly."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute(sql, params))

    def task_log_text(self) -> str:
        """Every task log file written so far, concatenated.

        ``airflow dags test`` on 3.3 writes task logs to its own output rather than to files, so a search for
        secrets must read the command's stdout and stderr as well as this.
        """
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.rglob("*")) if p.is_file())


def make_airflow_instance(base: Path, dags_folder: Path) -> AirflowInstance:
    home = base / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    instance = AirflowInstance(home=home, dags_folder=dags_folder, env=env)
    instance.run_cli("db", "migrate")
    return instance


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def airflow_instance() -> Iterator[AirflowInstance]:
    """A real Airflow home with a migrated SQLite metadata database, DAG folder = example_dags/."""
    with tempfile.TemporaryDirectory(prefix="openrouter-airflow-") as tmp:
        yield make_airflow_instance(Path(tmp), ROOT / "example_dags")
