"""The local OpenRouter's control endpoints under ``/_local``: what the test helpers do, over HTTP.

Each endpoint is one row of ``_ROUTES`` and does what the :class:`~airflow_provider_openrouter.testing.
LocalOpenRouter` method of the same purpose does; :class:`~airflow_provider_openrouter.testing.control.
LocalOpenRouterControl` is their client. They answer without authentication and are not recorded: they exist
only in the fake, which serves on loopback.
"""

from __future__ import annotations

import datetime as dt
import re
import traceback
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter.testing._api import object_body
from airflow_provider_openrouter.testing._http import json_response
from airflow_provider_openrouter.testing._records import ApiError, parse_instant, stamp
from airflow_provider_openrouter.testing.faults import FaultRule
from airflow_provider_openrouter.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.testing._backend import Backend
    from airflow_provider_openrouter.testing._http import Request, Response

CONTROL_PREFIX = "/_local"
_KEY_PATH = re.compile(r"/keys/([^/]+)(/usage)?")


def answer(backend: Backend, request: Request) -> Response:
    """The answer to one request under :data:`CONTROL_PREFIX`; a bad argument is a 400 naming it."""
    method, path = request.method, request.path[len(CONTROL_PREFIX) :].rstrip("/") or "/"
    try:
        status, payload = _route(backend, method, path, request)
    except ApiError as exc:
        status, payload = exc.status, exc.body()
    except (KeyError, ValueError, TypeError) as exc:
        status, payload = 400, ApiError(400, f"{type(exc).__name__}: {exc}").body()
    except Exception as exc:
        traceback.print_exc()
        status, payload = 500, ApiError(500, f"{type(exc).__name__}: {exc}").body()
    return json_response(status, payload)


def _body(request: Request) -> dict[str, Any]:
    return object_body(request.body) if request.body else {}


def _info(backend: Backend, request: Request) -> tuple[int, Any]:
    state = backend.state
    return 200, {
        "base_url": backend.base_url,
        "management_key": state.management_key,
        "now": stamp(state.now()),
        "spend_per_second": state.spend_per_second,
    }


def _keys(backend: Backend, request: Request) -> tuple[int, Any]:
    include_management = request.query.get("include_management") == "true"
    return 200, {"data": backend.state.all_keys(include_management=include_management)}


def _add_key(backend: Backend, request: Request) -> tuple[int, Any]:
    body = _body(request)
    expires = body.get("expires_at")
    data, plaintext = backend.state.add_key(
        **{**body, "expires_at": parse_instant(expires) if expires else None}
    )
    return 201, {"data": data, "key": plaintext}


def _clock(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"now": stamp(backend.state.now())}


def _set_clock(backend: Backend, request: Request) -> tuple[int, Any]:
    body, state = _body(request), backend.state
    if "set" in body:
        now = state.set_clock(parse_instant(str(body["set"])), frozen=bool(body.get("frozen", False)))
    else:
        now = state.advance_clock(dt.timedelta(seconds=float(body.get("advance_seconds", 0))))
    return 200, {"now": stamp(now)}


def _faults(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"data": [rule.to_json() for rule in backend.faults.rules()]}


def _add_fault(backend: Backend, request: Request) -> tuple[int, Any]:
    rule = FaultRule.from_json(_body(request))
    backend.faults.add(rule)
    return 201, {"data": rule.to_json()}


def _clear_faults(backend: Backend, request: Request) -> tuple[int, Any]:
    backend.faults.clear()
    return 200, {"cleared": True}


def _requests(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"data": [r.to_json() for r in backend.log.items()]}


def _clear_requests(backend: Backend, request: Request) -> tuple[int, Any]:
    backend.log.clear()
    return 200, {"cleared": True}


def _issued_plaintexts(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"data": backend.state.issued_plaintexts}


def _spend(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"per_second": backend.state.spend_per_second}


def _set_spend(backend: Backend, request: Request) -> tuple[int, Any]:
    backend.state.set_spend_per_second(float(_body(request)["per_second"]))
    return 200, {"per_second": backend.state.spend_per_second}


def _realism(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"data": backend.state.realism.to_json()}


def _set_realism(backend: Backend, request: Request) -> tuple[int, Any]:
    backend.state.set_realism(Realism.from_json(_body(request)))
    return 200, {"data": backend.state.realism.to_json()}


def _seed_keys(backend: Backend, request: Request) -> tuple[int, Any]:
    body = _body(request)
    count = body["count"]
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError("count must be an integer")
    return 201, {"seeded": backend.state.seed_keys(count, str(body.get("prefix", "filler-")))}


def _listed(backend: Backend, request: Request) -> tuple[int, Any]:
    return 200, {"data": backend.state.listed_hashes()}


_ROUTES: dict[tuple[str, str], Callable[[Backend, Request], tuple[int, Any]]] = {
    ("GET", "/info"): _info,
    ("GET", "/keys"): _keys,
    ("POST", "/keys"): _add_key,
    ("GET", "/clock"): _clock,
    ("POST", "/clock"): _set_clock,
    ("GET", "/faults"): _faults,
    ("POST", "/faults"): _add_fault,
    ("DELETE", "/faults"): _clear_faults,
    ("GET", "/requests"): _requests,
    ("DELETE", "/requests"): _clear_requests,
    ("GET", "/issued-plaintexts"): _issued_plaintexts,
    ("GET", "/spend"): _spend,
    ("PUT", "/spend"): _set_spend,
    ("GET", "/realism"): _realism,
    ("PUT", "/realism"): _set_realism,
    ("POST", "/seed"): _seed_keys,
    ("GET", "/listed"): _listed,
}


def _route(backend: Backend, method: str, path: str, request: Request) -> tuple[int, Any]:
    endpoint = _ROUTES.get((method, path))
    if endpoint is not None:
        return endpoint(backend, request)
    match = _KEY_PATH.fullmatch(path)
    if match is not None:
        key_hash, usage = match.group(1), match.group(2)
        state = backend.state
        try:
            if usage is None and method == "GET":
                return 200, {"data": state.key_state(key_hash)}
            if usage and method == "POST":
                body = _body(request)
                return 200, {
                    "data": state.add_usage(key_hash, float(body["usd"]), byok=bool(body.get("byok", False)))
                }
            if usage and method == "PUT":
                return 200, {"data": state.set_usage(key_hash, _body(request))}
        except KeyError:
            raise ApiError(404, f"no key with hash {key_hash}") from None
    raise ApiError(404, f"no control endpoint {method} {CONTROL_PREFIX}{path}")
