"""Every venv the suite runs in was installed from its committed constraints file, and still matches it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "constraints.py"


def constraints_file() -> Path:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return ROOT / "constraints" / f"airflow-{metadata.version('apache-airflow')}-python{python}.txt"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "check", str(path)], capture_output=True, text=True, check=False
    )


def test_this_environment_matches_its_committed_constraints() -> None:
    result = check(constraints_file())
    assert result.returncode == 0, result.stderr


def test_a_drifted_environment_is_named_package_by_package(tmp_path: Path) -> None:
    lines = constraints_file().read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    requests_pin = next(line for line in pins if line.startswith("requests=="))
    dropped = next(line for line in pins if line.startswith("pendulum=="))
    drifted = [line for line in lines if line not in (requests_pin, dropped)]
    drifted += ["requests==0.0.1", "not-a-real-distribution==1.0"]
    path = tmp_path / "drifted.txt"
    path.write_text("\n".join(drifted) + "\n")

    result = check(path)

    assert result.returncode == 1
    installed_requests = metadata.version("requests")
    assert f"requests: 0.0.1 in the file, {installed_requests} installed" in result.stderr
    assert f"pendulum: {metadata.version('pendulum')} installed, not in the file" in result.stderr
    assert "not-a-real-distribution: 1.0 in the file, not installed" in result.stderr
