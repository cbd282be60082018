"""Test-wide setup.

Airflow reads its configuration when first imported, so the environment it needs is set here, before any
test module imports it: a private AIRFLOW_HOME per test session, no example DAGs, our example DAGs as the DAG
folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"

_home = Path(tempfile.mkdtemp(prefix="openrouter-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("AIRFLOW_CONN_OPENROUTER_DEFAULT", None)

pytest_plugins = ["tests.airflow_runner", "airflow_provider_openrouter.testing.pytest_plugin"]
