"""Apache Airflow provider for managing OpenRouter API keys."""

from __future__ import annotations

import re
import sys

__version__ = "0.3.0"

__all__ = ["__version__"]

MIN_AIRFLOW_VERSION = (3, 1, 0)


def _airflow_version() -> str | None:
    """The installed Airflow's version, without importing Airflow when nothing has yet.

    Tasks, the scheduler and the provider manager have imported Airflow already; the local OpenRouter's
    command line and a test suite's conftest may not have, and importing it here would cost them seconds.
    """
    version = getattr(sys.modules.get("airflow"), "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    # Airflow 3 ships its code in apache-airflow-core; Airflow 2 had apache-airflow alone.
    for distribution in ("apache-airflow-core", "apache-airflow"):
        try:
            return distribution_version(distribution)
        except PackageNotFoundError:
            continue
    return None


def _check_airflow_version(found: str | None) -> None:
    # Pre-releases of the minimum (3.1.0rc1) pass, as the official providers' base_version check lets them.
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", found or "")
    if match and tuple(int(part) for part in match.groups()) < MIN_AIRFLOW_VERSION:
        raise RuntimeError(
            f"The package `airflow-provider-openrouter:{__version__}` needs Apache Airflow "
            f"{'.'.join(map(str, MIN_AIRFLOW_VERSION))}+, but Airflow {found} is installed."
        )


_check_airflow_version(_airflow_version())
