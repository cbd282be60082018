"""pytest fixtures for testing against a local OpenRouter.

Opt-in: a test suite enables them with one line in its root ``conftest.py``::

    pytest_plugins = ["airflow_provider_openrouter.testing.pytest_plugin"]

The fake itself is imported when a fixture is first used, so enabling the plugin costs a suite that never asks
for one nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing import LocalOpenRouter


@pytest.fixture
def local_openrouter() -> Iterator[LocalOpenRouter]:
    """A started local OpenRouter, fresh for each test (starting one takes about a millisecond)."""
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        yield fake


@pytest.fixture
def openrouter_conn_env(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> LocalOpenRouter:
    """``local_openrouter`` with ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` pointing at it."""
    for name, value in local_openrouter.airflow_env().items():
        monkeypatch.setenv(name, value)
    return local_openrouter
