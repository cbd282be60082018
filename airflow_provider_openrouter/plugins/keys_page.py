"""The "OpenRouter keys" page in the Airflow UI: an Airflow plugin with a FastAPI app under ``/openrouter``.

Airflow imports this module wherever it loads plugins (the scheduler, the API server, ``airflow plugins``),
so it imports nothing but the plugin base class: the FastAPI app, and FastAPI itself, are built on first
access to ``fastapi_apps``, which only the API server (and ``airflow plugins``) makes.

Who sees what: the page and its JSON answer only a signed-in Airflow user whom the auth manager allows to read
the connection shown (``GET`` on that connection, the permission the Connections page itself needs). The
management key never leaves the API server.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_openrouter.plugins import PAGE_NAME

URL_PREFIX: Final = "/openrouter"
# A key, drawn small enough to sit in the navigation beside Airflow's own icons.
_ICON: Final = (
    "data:image/svg+xml;utf8,"
    "%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='%23718096' "
    "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'%3E"
    "%3Ccircle cx='7.5' cy='15.5' r='4.5'/%3E%3Cpath d='m10.7 12.3 9.3-9.3M16 7l3 3M14 9l2 2'/%3E%3C/svg%3E"
)


@functools.cache
def _apps() -> list[dict[str, Any]]:
    from airflow_provider_openrouter.plugins._keys_app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": PAGE_NAME}]


class _BuiltOnFirstAccess:
    """``fastapi_apps`` as a class attribute that builds the app when read, not when this module loads."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        return _apps()


class OpenRouterKeysPlugin(AirflowPlugin):
    """Adds "OpenRouter keys" under Browse: every key of an ``openrouter`` connection's account."""

    name = "openrouter_keys"
    fastapi_apps = _BuiltOnFirstAccess()
    external_views = [  # noqa: RUF012 (Airflow's own declaration is a mutable class attribute)
        {
            "name": PAGE_NAME,
            "href": f"{URL_PREFIX}/",
            "icon": _ICON,
            "destination": "nav",
            "category": "browse",
            "url_route": "openrouter-keys",
        }
    ]
