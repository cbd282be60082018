"""The local OpenRouter's API responses: ``/api/v1`` requests in, answers shaped like OpenRouter's out.

For each request: the armed faults are taken (a fault may delay, replace or drop the answer), the request is
routed to :class:`~airflow_provider_openrouter.testing._state.OpenRouterState`, its result or
:class:`~airflow_provider_openrouter.testing._state.ApiError` becomes the answer, and the request is recorded.
The endpoints are the rows of ``_ROUTES``; the rules they enforce live in the state.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_openrouter.testing._backend import RecordedRequest
from airflow_provider_openrouter.testing._checks import check_workspace_id
from airflow_provider_openrouter.testing._guardrails import ROUTES as GUARDRAIL_ROUTES
from airflow_provider_openrouter.testing._guardrails import match_path as match_guardrail_path
from airflow_provider_openrouter.testing._http import DROP, Response, json_response
from airflow_provider_openrouter.testing._records import ApiError, hash_of, iso
from airflow_provider_openrouter.testing.faults import (
    API_PREFIX,
    DropAfterCommit,
    DropBeforeCommit,
    HtmlError,
    Latency,
    Status,
    Trickle,
    default_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from airflow_provider_openrouter.testing._backend import Backend
    from airflow_provider_openrouter.testing._http import Request
    from airflow_provider_openrouter.testing._state import KeyRecord, OpenRouterState

    Endpoint: TypeAlias = Callable[[OpenRouterState, "Call"], tuple[int, Any]]

_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

_HTML_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _redacted_body(body: Any) -> Any:
    # A create can carry a partner's BYOK key under external.api_key: keep it out of the log.
    if isinstance(body, dict) and isinstance(body.get("external"), dict) and "api_key" in body["external"]:
        return {**body, "external": {**body["external"], "api_key": "***"}}
    return body


def _bearer_hash(authorization: str | None) -> str | None:
    if not authorization:
        return None
    _, _, token = authorization.strip().partition(" ")
    return hash_of(token.strip()) if token.strip() else None


# -- faults, then the answer ---------------------------------------------------------------------------------


def answer(backend: Backend, request: Request) -> Response:
    """The answer to one API request, after the faults armed for it."""
    method, path = request.method, request.path
    decisive = None
    for fault in backend.faults.take(method, path):
        if isinstance(fault, Latency):
            time.sleep(fault.seconds)
        else:
            decisive = fault
    try:
        body: Any = json.loads(request.body) if request.body else None
    except ValueError:
        body = request.body.decode("utf-8", "replace")
    headers = {k: v for k, v in request.raw_headers if k.lower() not in _SECRET_HEADERS}

    def record(status: int | None, fault: str | None) -> None:
        backend.log.append(
            RecordedRequest(
                method=method,
                path=path,
                query=request.query,
                body=_redacted_body(body),
                headers=headers,
                status=status,
                fault=fault,
                key_hash=_bearer_hash(request.headers.get("authorization")),
                at=iso(backend.state.now()) or "",
            )
        )

    committed = False
    if isinstance(decisive, DropAfterCommit) or getattr(decisive, "after_commit", False):
        _process(backend.state, request)  # the change happens; its answer is lost
        committed = True
    if isinstance(decisive, (DropBeforeCommit, DropAfterCommit)):
        record(None, "drop_after_commit" if committed else "drop_before_commit")
        return DROP
    if isinstance(decisive, Status):
        extra: list[tuple[str, str]] = []
        if decisive.retry_after is not None:
            extra.append(("Retry-After", _retry_after_text(decisive.retry_after)))
        extra.extend((decisive.headers or {}).items())
        error = ApiError(decisive.code, decisive.message or default_message(decisive.code))
        record(decisive.code, "status")
        return json_response(decisive.code, error.body(), extra)
    if isinstance(decisive, HtmlError):
        reason = default_message(decisive.code)
        page = _HTML_PAGE.format(code=decisive.code, reason=reason).encode()
        record(decisive.code, "html")
        return Response(decisive.code, page, content_type="text/html; charset=utf-8")
    status, payload = _process(backend.state, request)
    if isinstance(decisive, Trickle):
        record(status, "trickle")
        return json_response(status, payload)._replace(trickle=(decisive.interval, decisive.chunk))
    record(status, None)
    return json_response(status, payload)


def _retry_after_text(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _process(state: OpenRouterState, request: Request) -> tuple[int, Any]:
    try:
        return _route(state, request)
    except ApiError as exc:
        return exc.status, exc.body()
    except Exception:
        # A bug in the fake: answer like the real API's 500 rather than dropping the connection, which a
        # client would take for a network failure; the traceback goes to stderr for whoever debugs it.
        traceback.print_exc()
        return 500, ApiError(500, "Internal Server Error").body()


# -- the endpoints -------------------------------------------------------------------------------------------


class Call(NamedTuple):
    """What an endpoint gets: the authenticated caller, the request and the ``{hash}`` of the path, if any."""

    caller: KeyRecord
    request: Request
    key_hash: str


def object_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, refused the way the API refuses it."""
    if not raw:
        raise ApiError(400, "Request body is required")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _flag(query: dict[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise ApiError(400, f"{name}: expected 'true' or 'false' (got {value!r})")
    return value == "true"


def _offset(query: dict[str, str]) -> int:
    value = query.get("offset")
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()):
        raise ApiError(400, f"offset: expected a non-negative integer (got {value!r})")
    return int(value)


def _current_key(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": state.current_key(call.caller)}


def _credits(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": state.credits()}


def _list_keys(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    query = call.request.query
    workspace = query.get("workspace_id")
    keys = state.list_keys(
        offset=_offset(query),
        include_disabled=_flag(query, "include_disabled"),
        include_expired=_flag(query, "include_expired"),
        workspace_id=check_workspace_id(workspace) if workspace else None,
    )
    return 200, {"data": keys}


def _create_key(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    data, plaintext = state.create_key(object_body(call.request.body))
    return 201, {"data": data, "key": plaintext}


def _get_key(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": state.get_key(call.key_hash)}


def _update_key(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": state.update_key(call.key_hash, object_body(call.request.body))}


def _delete_key(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    state.delete_key(call.key_hash)
    return 200, {"deleted": True}


class _Route(NamedTuple):
    methods: dict[str, Endpoint]
    management_only: bool = True


# Path (below /api/v1, "{hash}" standing for a key's hash) -> the endpoint of each method. A regular key may
# call only the routes that are not management_only.
_ROUTES: dict[str, _Route] = {
    "/key": _Route({"GET": _current_key}, management_only=False),
    "/credits": _Route({"GET": _credits}),
    "/keys": _Route({"GET": _list_keys, "POST": _create_key}),
    "/keys/{hash}": _Route({"GET": _get_key, "PATCH": _update_key, "DELETE": _delete_key}),
    **{path: _Route(dict(methods)) for path, methods in GUARDRAIL_ROUTES.items()},
}
_KEY_PATH = re.compile(r"/keys/([^/]+)")


def _route(state: OpenRouterState, request: Request) -> tuple[int, Any]:
    path = request.path
    if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
        raise ApiError(404, "Not Found")
    api_path = path[len(API_PREFIX) :].rstrip("/") or "/"
    key_hash = ""
    route = _ROUTES.get(api_path)
    guardrail_route = match_guardrail_path(api_path) if route is None else None
    if guardrail_route is not None:
        # The guardrail's id travels where a key route's hash does.
        route, key_hash = _ROUTES[guardrail_route[0]], guardrail_route[1]
    if route is None:
        match = _KEY_PATH.fullmatch(api_path)
        if match is None:
            raise ApiError(404, "Not Found")
        route, key_hash = _ROUTES["/keys/{hash}"], match.group(1)
    endpoint = route.methods.get(request.method)
    if endpoint is None:
        raise ApiError(405, "Method Not Allowed")
    caller = state.authenticate(request.headers.get("authorization"))
    if route.management_only:
        state.require_management(caller)
    return endpoint(state, Call(caller, request, key_hash))
