"""A local OpenRouter: a stateful fake of the key-management API served over real HTTP on loopback.

::

    from airflow_provider_openrouter.testing import LocalOpenRouter, Status

    with LocalOpenRouter() as fake:
        fake.inject(Status(429, retry_after=1), method="GET", path="/keys")
        ...  # point a connection at fake.base_url with fake.management_key

Standard library only: importing it does not import Airflow.
"""

from __future__ import annotations

from airflow_provider_openrouter.testing._local import (
    LocalOpenRouter,
    airflow_env,
    connection_json,
    connection_uri,
)
from airflow_provider_openrouter.testing._server import RecordedRequest
from airflow_provider_openrouter.testing._state import DEFAULT_WORKSPACE_ID, PAGE_SIZE
from airflow_provider_openrouter.testing.capacity import measure_capacity
from airflow_provider_openrouter.testing.control import LocalOpenRouterControl, LocalOpenRouterControlError
from airflow_provider_openrouter.testing.faults import (
    DropAfterCommit,
    DropBeforeCommit,
    Fault,
    FaultRule,
    HtmlError,
    Latency,
    Status,
    Trickle,
)
from airflow_provider_openrouter.testing.process import LocalOpenRouterProcess

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "PAGE_SIZE",
    "DropAfterCommit",
    "DropBeforeCommit",
    "Fault",
    "FaultRule",
    "HtmlError",
    "Latency",
    "LocalOpenRouter",
    "LocalOpenRouterControl",
    "LocalOpenRouterControlError",
    "LocalOpenRouterProcess",
    "RecordedRequest",
    "Status",
    "Trickle",
    "airflow_env",
    "connection_json",
    "connection_uri",
    "measure_capacity",
]
