"""pytest fixtures for testing against a local OpenRouter.

Opt-in: a test suite enables them with one line in its root ``conftest.py``::

    pytest_plugins = ["airflow_provider_openrouter.testing.pytest_plugin"]

The fake itself is imported when a fixture is first used, so enabling the plugin costs a suite that never asks
for one nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing import LocalOpenRouter


class ConnectOpenRouter(Protocol):
    """The ``openrouter_connection`` fixture: point a connection at a local OpenRouter."""

    def __call__(
        self, fake: LocalOpenRouter | None = None, *, conn_id: str = ..., **extras: Any
    ) -> LocalOpenRouter: ...


@pytest.fixture
def local_openrouter() -> Iterator[LocalOpenRouter]:
    """A started local OpenRouter, fresh for each test (starting one takes about a millisecond)."""
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        yield fake


@pytest.fixture
def openrouter_connection(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> ConnectOpenRouter:
    """A function that points an Airflow connection (``openrouter_default`` unless ``conn_id`` says) at a
    local OpenRouter (``local_openrouter`` unless ``fake`` is given), with ``extras`` as the connection's
    settings (``max_retries=0``, ``timeout=5``, ...), for this test only; it returns that local OpenRouter::

        def test_no_retries(openrouter_connection):
            fake = openrouter_connection(max_retries=0)
    """
    from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID

    def connect(
        fake: LocalOpenRouter | None = None, *, conn_id: str = DEFAULT_CONN_ID, **extras: Any
    ) -> LocalOpenRouter:
        fake = local_openrouter if fake is None else fake
        for name, value in fake.airflow_env(conn_id, **extras).items():
            monkeypatch.setenv(name, value)
        return fake

    return connect


@pytest.fixture
def openrouter_conn_env(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    """``local_openrouter`` with ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` pointing at it."""
    return openrouter_connection()
