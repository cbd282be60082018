"""The local OpenRouter's server: which layer answers which URL.

::

    HTTP (_http) --Request--> serve()'s dispatch --/_local/...--> _controls.answer --+
                                                 --anything else--> _api.answer -----+--> Backend (_backend)
                                                                                        state (_state)
                                                                                        faults (faults)
                                                                                        request log (_backend)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_openrouter.testing import _api, _controls
from airflow_provider_openrouter.testing._http import HttpServer, json_response
from airflow_provider_openrouter.testing._records import ApiError

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing._backend import Backend
    from airflow_provider_openrouter.testing._http import Request, Response


def _malformed(message: str) -> Response:
    return json_response(400, ApiError(400, message).body())


def serve(backend: Backend, host: str, port: int) -> HttpServer:
    """An HTTP server (not yet started) answering the API and the control endpoints from ``backend``."""
    control_prefix = _controls.CONTROL_PREFIX

    def dispatch(request: Request) -> Response:
        path = request.path
        if path == control_prefix or path.startswith(control_prefix + "/"):
            return _controls.answer(backend, request)
        return _api.answer(backend, request)

    return HttpServer(dispatch, _malformed, host, port)
