"""A local OpenRouter: a stateful fake of the key-management API served over real HTTP on loopback.

::

    from airflow_provider_openrouter.testing import LocalOpenRouter, Status

    with LocalOpenRouter() as fake:
        fake.inject(Status(429, retry_after=1), method="GET", path="/keys")
        ...  # point a connection at fake.base_url with fake.management_key

What a test needs is exported here: the fake, its faults, how hard it is (:class:`Realism`, :data:`HARD`),
the records it keeps, and the client of a fake
served by ``python -m airflow_provider_openrouter.testing`` in another process. The pytest fixtures are in
:mod:`airflow_provider_openrouter.testing.pytest_plugin`, enabled by a test suite that asks for them.

Standard library only: importing it does not import Airflow.
"""

from __future__ import annotations

from airflow_provider_openrouter.testing._backend import RecordedRequest
from airflow_provider_openrouter.testing._local import LocalOpenRouter
from airflow_provider_openrouter.testing.control import LocalOpenRouterControl, LocalOpenRouterControlError
from airflow_provider_openrouter.testing.faults import (
    DropAfterCommit,
    DropBeforeCommit,
    Fault,
    FaultRule,
    HtmlError,
    Latency,
    RateLimit,
    Status,
    Trickle,
)
from airflow_provider_openrouter.testing.realism import HARD, Realism

__all__ = [
    "HARD",
    "DropAfterCommit",
    "DropBeforeCommit",
    "Fault",
    "FaultRule",
    "HtmlError",
    "Latency",
    "LocalOpenRouter",
    "LocalOpenRouterControl",
    "LocalOpenRouterControlError",
    "RateLimit",
    "Realism",
    "RecordedRequest",
    "Status",
    "Trickle",
]
