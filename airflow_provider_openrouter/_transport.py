"""How the hook talks to OpenRouter: one source of truth for the sync and the async path.

Everything that decides *what* happens lives here once, free of I/O: building each endpoint's request
(:class:`Call`), reading answers into typed models, mapping error answers to exceptions
(:func:`~airflow_provider_openrouter.exceptions.api_error_from_response`) and the retry policy
(:func:`is_retryable` plus :class:`RetryPolicy`). :class:`Exchange` drives one logical call across its
attempts. The two transports only move bytes: :class:`SyncTransport` with one ``requests.Session`` per hook,
:class:`AsyncTransport` with one ``aiohttp.ClientSession`` per event loop and base URL, shared by every hook
in that loop (a triggerer running a thousand triggers keeps one pool).

``requests`` and ``aiohttp`` are imported inside the functions that use them: a DAG file that imports the hook
does not pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast
from urllib.parse import quote, urlencode

from airflow_provider_openrouter import __version__
from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._sentinel import UNSET
from airflow_provider_openrouter.exceptions import (
    NotFoundError,
    OpenRouterAPIError,
    OpenRouterError,
    OpenRouterTransportError,
    RateLimitedError,
    UnreadableResponseError,
    api_error_from_response,
)
from airflow_provider_openrouter.models import ApiKey, CreatedApiKey, Credits, CurrentKey

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator, Callable, Mapping

    import aiohttp
    import requests

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig

T = TypeVar("T")

log = logging.getLogger("airflow_provider_openrouter.transport")

USER_AGENT = f"airflow-provider-openrouter/{__version__}"
PAGE_SIZE = 100
# Methods whose repetition does no harm: reads, absolute PATCHes, deletes (a second DELETE at worst 404s).
SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS", "PATCH", "PUT", "DELETE"})


# --------------------------------------------------------------------------------------------- requests ---


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One endpoint call, described without I/O: what to send and how to read the answer.

    ``parse`` receives the decoded JSON document of a 2xx answer. ``recover``, when set, may turn an error
    answer into a result; it gets the error and whether an earlier attempt may have reached the server, and
    re-raises the error when it cannot.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    query: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None
    recover: Callable[[OpenRouterAPIError, bool], T] | None = None

    def target(self, base_url: str) -> str:
        url = base_url + self.path
        return f"{url}?{urlencode(self.query)}" if self.query else url

    def payload(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()


def _wire_bool(value: bool) -> str:
    return "true" if value else "false"


def _key_path(key_hash: str) -> str:
    return "/keys/" + quote(key_hash, safe="")


class Malformed(ValueError):
    """A 2xx answer whose JSON does not have the documented shape."""


def _data(doc: Any) -> Any:
    if not isinstance(doc, dict) or "data" not in doc:
        raise Malformed("the answer has no 'data' object")
    return doc["data"]


def _parse_key(doc: Any) -> ApiKey:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not a key object")
    return ApiKey.from_api(data)


def _parse_page(doc: Any) -> list[ApiKey]:
    data = _data(doc)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise Malformed("'data' is not a list of key objects")
    return [ApiKey.from_api(item) for item in data]


def _parse_created(doc: Any) -> CreatedApiKey:
    plaintext = doc.get("key") if isinstance(doc, dict) else None
    if not isinstance(plaintext, str) or not plaintext:
        raise Malformed("the answer has no plaintext 'key'")
    return CreatedApiKey(api_key=_parse_key(doc), plaintext=plaintext)


def _parse_current(doc: Any) -> CurrentKey:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not an object")
    return CurrentKey.from_api(data)


def _parse_credits(doc: Any) -> Credits:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not an object")
    return Credits.from_api(data)


def _parse_deleted(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("deleted") is not True:
        raise Malformed("the answer does not say 'deleted': true")
    return True


def get_current_key_call() -> Call[CurrentKey]:
    return Call("GET", "/key", _parse_current)


def get_credits_call() -> Call[Credits]:
    return Call("GET", "/credits", _parse_credits)


def get_key_call(key_hash: Any) -> Call[ApiKey]:
    return Call("GET", _key_path(v.validate_key_hash(key_hash)), _parse_key)


class Listing:
    """The pages of one ``GET /keys`` walk; the arguments are validated on creation, before any request.

    The API lists newest first and pages by offset, so a key created during a walk pushes every older key one
    place down and a key deleted pulls them up: a plain walk would report a key twice or skip one. Each page
    is therefore asked for so that it starts with the last key of the page before (the anchor). Found where
    expected, nothing moved; found further down, keys were created and the ones before it were seen already;
    not found, keys were deleted: the walk steps one page back to find the anchor again, and failing that
    starts over. Keys already reported are never reported again, so every key that existed for the whole
    walk is reported exactly once; keys created or deleted during it may or may not be.
    """

    __slots__ = (
        "_anchor",
        "_backed_off",
        "_default_workspace",
        "_seen",
        "done",
        "include_disabled",
        "include_expired",
        "offset",
        "restarts",
        "workspace_id",
    )

    #: Restarts after which a walk gives up: the keys change faster than they can be read.
    MAX_RESTARTS = 20

    def __init__(self, *, include_disabled: Any, include_expired: Any, workspace_id: Any) -> None:
        self.include_disabled = v.validate_bool(include_disabled, field="include_disabled")
        self.include_expired = v.validate_bool(include_expired, field="include_expired")
        self.workspace_id = v.validate_workspace_id(workspace_id)
        self.offset = 0
        self.done = False
        self.restarts = 0
        self._anchor: str | None = None
        self._backed_off = False
        self._seen: set[str] = set()
        self._default_workspace: str | None = None

    def start(self, default_workspace: str | None) -> Listing:
        self._default_workspace = default_workspace
        return self

    def page(self, offset: int, default_workspace: str | None) -> Call[list[ApiKey]]:
        query = [("offset", str(offset))] if offset else []
        query.append(("include_disabled", _wire_bool(self.include_disabled)))
        query.append(("include_expired", _wire_bool(self.include_expired)))
        workspace = self.workspace_id or default_workspace
        if workspace:
            query.append(("workspace_id", workspace))
        return Call("GET", "/keys", _parse_page, query=tuple(query))

    def next_call(self) -> Call[list[ApiKey]]:
        return self.page(self.offset, self._default_workspace)

    def take(self, page: list[ApiKey]) -> list[ApiKey]:
        """The keys of ``page`` not reported yet; sets :attr:`done` after the last page."""
        if self._anchor is None:
            fresh = page
        else:
            at = next((i for i, key in enumerate(page) if key.hash == self._anchor), None)
            if at is None:
                self._lost_anchor()
                return []
            fresh = page[at + 1 :]
        self._backed_off = False
        if len(page) < PAGE_SIZE:
            # No total and no "has more" in the API: a page shorter than the page size is the last one.
            self.done = True
        else:
            self._anchor = page[-1].hash
            self.offset += len(page) - 1
        fresh = [key for key in fresh if key.hash not in self._seen]
        self._seen.update(key.hash for key in fresh)
        return fresh

    def _lost_anchor(self) -> None:
        if self.offset > 0 and not self._backed_off:
            self._backed_off = True
            self.offset = max(0, self.offset - (PAGE_SIZE - 1))
            return
        self.restarts += 1
        if self.restarts > self.MAX_RESTARTS:
            raise OpenRouterError(
                f"Listing keys: the list changed under every one of {self.MAX_RESTARTS} walks (keys are "
                "being created or deleted faster than they can be read); try again later."
            )
        log.info("GET /keys: the list shifted during the walk; walking again (restart %d)", self.restarts)
        self._anchor = None
        self._backed_off = False
        self.offset = 0

    @staticmethod
    def is_last(page: list[ApiKey]) -> bool:
        return len(page) < PAGE_SIZE


def create_key_body(
    *,
    name: Any,
    limit: Any = None,
    limit_reset: Any = None,
    include_byok_in_limit: Any = None,
    expires_at: Any = None,
    workspace_id: Any = None,
    creator_user_id: Any = None,
) -> dict[str, Any]:
    """The validated body of ``POST /keys``: the name and whichever optional fields are set."""
    body: dict[str, Any] = {"name": v.validate_name(name)}
    optional = {
        "limit": v.validate_limit(limit),
        "limit_reset": v.validate_limit_reset(limit_reset),
        "include_byok_in_limit": (
            None
            if include_byok_in_limit is None
            else v.validate_bool(include_byok_in_limit, field="include_byok_in_limit")
        ),
        "expires_at": v.validate_expires_at(expires_at),
        "workspace_id": v.validate_workspace_id(workspace_id),
        "creator_user_id": v.validate_creator_user_id(creator_user_id),
    }
    body.update({field: value for field, value in optional.items() if value is not None})
    return body


def create_key_call(body: Mapping[str, Any], default_workspace: str | None) -> Call[CreatedApiKey]:
    if default_workspace and "workspace_id" not in body:
        body = {**body, "workspace_id": default_workspace}
    return Call("POST", "/keys", _parse_created, body=body)


_UPDATE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": v.validate_name,
    "disabled": lambda value: v.validate_bool(value, field="disabled"),
    "limit": v.validate_limit,
    "limit_reset": v.validate_limit_reset,
    "include_byok_in_limit": lambda value: v.validate_bool(value, field="include_byok_in_limit"),
    "workspace_id": lambda value: v.validate_workspace_id(value, optional=False),
}


def update_key_call(key_hash: Any, changes: Mapping[str, Any]) -> Call[ApiKey]:
    """``PATCH /keys/{hash}`` with only the fields given (``UNSET`` ones left out; ``None`` clears)."""
    path = _key_path(v.validate_key_hash(key_hash))
    body = {field: _UPDATE_CHECKS[field](value) for field, value in changes.items() if value is not UNSET}
    if not body:
        v.fail("fields", f"name at least one field to change ({', '.join(_UPDATE_CHECKS)})")
    return Call("PATCH", path, _parse_key, body=body)


def delete_key_call(key_hash: Any, *, missing_ok: Any) -> Call[bool]:
    path = _key_path(v.validate_key_hash(key_hash))
    v.validate_bool(missing_ok, field="missing_ok")

    def recover(error: OpenRouterAPIError, maybe_done_earlier: bool) -> bool:
        if isinstance(error, NotFoundError):
            # An earlier attempt whose answer got lost may well have done the deleting.
            if maybe_done_earlier:
                return True
            if missing_ok:
                return False
        raise error

    return Call("DELETE", path, _parse_deleted, recover=recover)


# ------------------------------------------------------------------------------------------ retry policy ---


def is_retryable(method: str, *, status: int | None = None, reached_server: bool | None = None) -> bool:
    """Whether an attempt that ended so may be repeated. Pure: the whole retry policy in one place.

    - 429: the server refused without acting, so any method, including ``POST /keys``;
    - 5xx, or no answer after the request may have reached the server (a timeout, a dropped connection):
      only methods that are safe to repeat, since a create may already have happened;
    - the connection was never established (``reached_server=False``): any method.
    """
    if status is not None:
        if status == 429:
            return True
        return status >= 500 and method in SAFE_TO_REPEAT
    if reached_server is False:
        return True
    return method in SAFE_TO_REPEAT


def default_jitter(delay: float) -> float:
    """Spread retries of many clients over [delay/2, delay] so that they do not return in lockstep."""
    return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` retries, each wait at most ``max_wait`` seconds; each attempt at most
    ``attempt_timeout`` seconds in all (``None``: unbounded), so that a whole call has a :attr:`budget`."""

    max_retries: int = 3
    max_wait: float = 60.0
    jitter: Callable[[float], float] = default_jitter
    base_delay: float = 0.5
    attempt_timeout: float | None = None

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0-based)."""
        if retry_after is not None:
            return max(0.0, min(self.max_wait, retry_after))
        backoff = min(self.max_wait, self.base_delay * 2**retry_number)
        return max(0.0, min(self.max_wait, self.jitter(backoff)))

    def waits_too_long(self, retry_after: float | None) -> bool:
        """A server-requested wait beyond ``max_wait``: better spent by Airflow's retry than a worker slot."""
        return retry_after is not None and retry_after > self.max_wait

    @property
    def budget(self) -> float | None:
        """The most one call may take: every attempt at its timeout, every wait at its longest."""
        if self.attempt_timeout is None:
            return None
        return self.attempt_timeout * (self.max_retries + 1) + self.max_wait * self.max_retries


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever client fetched it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """No HTTP answer. ``reached_server``: ``False`` if the request cannot have arrived, ``None`` if unknown.
    ``permanent`` failures (a certificate the client does not trust) are not worth repeating."""

    reached_server: bool | None
    detail: str
    permanent: bool = False
    cause: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, exc: BaseException, reached_server: bool | None, *, permanent: bool = False) -> Failure:
        if getattr(exc, "request", None) is not None:
            # requests keeps the prepared request, Authorization header included, on its exceptions.
            exc.request = None  # type: ignore[attr-defined]
        return cls(reached_server, _root_cause(exc), permanent, exc)


class Exchange(Generic[T]):
    """One logical call across its attempts: decides, per outcome, whether to finish or wait and retry.

    The call has a deadline (:attr:`RetryPolicy.budget` from its start): each attempt gets what is left of it
    up to the attempt timeout (:meth:`attempt_budget`), and a retry whose wait would end past it is not made.
    """

    __slots__ = ("_error", "_maybe_done", "_result", "attempts", "call", "deadline", "policy")

    def __init__(self, call: Call[T], policy: RetryPolicy) -> None:
        self.call = call
        self.policy = policy
        self.attempts = 0
        self._maybe_done = False
        self._result: T | None = None
        self._error: OpenRouterError | None = None
        budget = policy.budget
        self.deadline = None if budget is None else time.monotonic() + budget

    def attempt_budget(self) -> float | None:
        """Seconds the next attempt may take in all (connect, send, headers, body); ``None``: unbounded."""
        timeout = self.policy.attempt_timeout
        if timeout is None or self.deadline is None:
            return timeout
        return max(0.001, min(timeout, self.deadline - time.monotonic()))

    def settle(self, outcome: Answer | Failure) -> float | None:
        """Take an attempt's outcome. ``None``: finished, see :meth:`result`; a number: wait, then retry."""
        self.attempts += 1
        call = self.call
        if isinstance(outcome, Answer):
            if 200 <= outcome.status < 300:
                log.debug("%s %s -> %s (attempt %d)", call.method, call.path, outcome.status, self.attempts)
                self._read(outcome)
                return None
            api_error = api_error_from_response(
                outcome.status,
                outcome.body.decode("utf-8", "replace"),
                method=call.method,
                path=call.path,
                headers=outcome.headers,
            )
            if call.recover is not None:
                try:
                    self._result = call.recover(api_error, self._maybe_done)
                except OpenRouterAPIError:
                    pass
                else:
                    log.info("%s %s: HTTP %s, taken as the outcome", call.method, call.path, outcome.status)
                    return None
            if outcome.status >= 500:
                # A gateway may give up while the API goes ahead: the change may have been made.
                self._maybe_done = True
            error: OpenRouterError = api_error
            retryable = is_retryable(call.method, status=outcome.status)
            retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
            what = f"HTTP {outcome.status}"
            if self.policy.waits_too_long(retry_after):
                log.warning(
                    "%s %s: HTTP 429 asks to wait %.0f s, longer than max_retry_wait (%.0f s): not waiting",
                    call.method,
                    call.path,
                    retry_after,
                    self.policy.max_wait,
                )
                self._error = error
                return None
        else:
            error = OpenRouterTransportError(
                call.method, call.path, outcome.detail, reached_server=outcome.reached_server
            )
            error.__cause__ = outcome.cause
            if outcome.reached_server is not False:
                self._maybe_done = True
            retryable = not outcome.permanent and is_retryable(
                call.method, reached_server=outcome.reached_server
            )
            retry_after = None
            what = outcome.detail
        if retryable and self.attempts <= self.policy.max_retries:
            wait = self.policy.delay(self.attempts - 1, retry_after)
            if self.deadline is not None and time.monotonic() + wait >= self.deadline:
                log.warning("%s %s: %s; no time left for a retry", call.method, call.path, what)
                self._error = error
                return None
            log.warning(
                "%s %s: %s; retry %d of %d in %.2f s",
                call.method,
                call.path,
                what,
                self.attempts,
                self.policy.max_retries,
                wait,
            )
            return wait
        if retryable:
            log.warning("%s %s: %s; giving up after %d attempts", call.method, call.path, what, self.attempts)
        else:
            log.debug("%s %s: %s (not retried)", call.method, call.path, what)
        self._error = error
        return None

    def _read(self, answer: Answer) -> None:
        call = self.call
        try:
            self._result = call.parse(json.loads(answer.body))
        except (ValueError, KeyError, TypeError) as exc:
            # Neither the body nor a value from it is quoted: a create's answer carries a plaintext key.
            if isinstance(exc, json.JSONDecodeError):
                kind = answer.headers.get("Content-Type", "no content type")
                problem = f"the body is not JSON ({kind}, {len(answer.body)} bytes)"
            elif isinstance(exc, Malformed):
                problem = str(exc)
            elif isinstance(exc, KeyError):
                problem = f"a required field is missing: {exc.args[0]!r}"
            else:
                problem = f"a field has a value of the wrong type ({type(exc).__name__})"
            self._error = UnreadableResponseError(
                answer.status, f"unreadable answer: {problem}", method=call.method, path=call.path
            )

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return cast("T", self._result)


# ----------------------------------------------------------------------------------------- environment ---


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """What the environment says about reaching a base URL: proxies (already filtered by ``NO_PROXY``)
    and the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE``; ``None``: default)."""

    proxies: Mapping[str, str]
    ca_bundle: str | None

    @classmethod
    def from_environment(cls, base_url: str) -> NetworkSettings:
        from requests.utils import get_environ_proxies

        ca_bundle = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or os.environ.get("SSL_CERT_FILE")
        )
        return cls(proxies=dict(get_environ_proxies(base_url)), ca_bundle=ca_bundle or None)

    def proxy_for(self, url: str) -> str | None:
        from requests.utils import select_proxy

        return select_proxy(url, dict(self.proxies))


def static_headers(config: OpenRouterConnectionConfig) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {config.api_key}",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": USER_AGENT,
    }
    if config.http_referer:
        headers["HTTP-Referer"] = config.http_referer
    if config.app_title:
        headers["X-OpenRouter-Title"] = config.app_title
    if config.app_categories:
        headers["X-OpenRouter-Categories"] = config.app_categories
    return headers


def policy_for(config: OpenRouterConnectionConfig, jitter: Callable[[float], float] | None) -> RetryPolicy:
    return RetryPolicy(
        max_retries=config.max_retries,
        max_wait=config.max_retry_wait,
        jitter=jitter or default_jitter,
        attempt_timeout=config.timeout,
    )


def _root_cause(exc: BaseException) -> str:
    """A short description of the innermost cause, e.g. ``ConnectionRefusedError: [Errno 111] ...``."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        if nested is None:
            nested = current.__cause__ or current.__context__
        if nested is None:
            break
        current = nested
    text = str(current)
    # urllib3 prefixes messages with the repr of its connection object: noise.
    text = text.split(": ", 1)[-1] if text.startswith("<") else text
    return (f"{type(current).__name__}: {text}" if text else type(current).__name__)[:300]


# ---------------------------------------------------------------------------------------------- sync ---


class _Watch:
    """One sync attempt under watch: its deadline and, once the pool hands one out, its connection."""

    __slots__ = ("conn", "deadline", "done", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.done = False
        self.fired = False


# The attempt the current thread is making, for the pool to attach the connection it hands out.
_IN_FLIGHT = threading.local()


class _Watchdog:
    """Cuts the connection of a sync attempt that overruns its time.

    A read timeout bounds each socket read, not an answer: a server that trickles a byte every few seconds
    would hold a worker forever. One thread per process wakes at the earliest deadline and shuts the socket
    of an attempt still running, which ends its blocking read at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float) -> _Watch:
        import heapq

        watch = _Watch(time.monotonic() + seconds)
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (watch.deadline, self._seq, watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="openrouter-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._cond.notify()
        return watch

    def _run(self) -> None:
        import heapq
        import socket

        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, watch = self._heap[0]
                if watch.done:
                    heapq.heappop(self._heap)
                    continue
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                watch.fired = True
                sock = getattr(watch.conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _after_fork(self) -> None:
        # The thread does not exist in a forked child, and the lock may have been held at the fork.
        self.__init__()  # type: ignore[misc]


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


@functools.lru_cache(maxsize=1)
def _watched_pools() -> dict[str, type]:
    """urllib3 pools that tell the attempt under watch which connection it got."""
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def _get_conn(self: Any, timeout: float | None = None) -> Any:
        conn = HTTPConnectionPool._get_conn(self, timeout)
        watch = getattr(_IN_FLIGHT, "watch", None)
        if watch is not None:
            watch.conn = conn
            if watch.fired:  # the deadline passed while waiting for a connection
                raise TimeoutError("no time left for this attempt")
        return conn

    http = type("_WatchedHTTPConnectionPool", (HTTPConnectionPool,), {"_get_conn": _get_conn})
    https = type("_WatchedHTTPSConnectionPool", (HTTPSConnectionPool,), {"_get_conn": _get_conn})
    return {"http": http, "https": https}


class SyncTransport:
    """Blocking I/O with one ``requests.Session`` (one connection pool), created on first use.

    The environment (proxies, ``NO_PROXY``, CA bundle) is read once per session rather than on every request,
    and ``~/.netrc`` is not consulted: the Authorization header is ours to set. Requests go straight to the
    session's adapter: the session-level machinery skipped (cookies, redirects, per-request environment scans)
    has nothing to do for this API, and skipping it is what makes the hook faster than a plain ``Session``.
    """

    def __init__(self, config: OpenRouterConnectionConfig, policy: RetryPolicy) -> None:
        self.config = config
        self.policy = policy
        self._session: requests.Session | None = None
        self._adapter: requests.adapters.BaseAdapter | None = None
        self._base_url = config.base_url
        self._headers: Mapping[str, str] = static_headers(config)
        self._send_kwargs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _open(self) -> requests.adapters.BaseAdapter:
        with self._lock:  # threads sharing a hook share one session
            return self._adapter or self._open_locked()

    def _open_locked(self) -> requests.adapters.BaseAdapter:
        import requests
        from requests.structures import CaseInsensitiveDict

        network = NetworkSettings.from_environment(self.config.base_url)
        session = requests.Session()
        session.trust_env = False
        # Normalised once (IDNA host, quoting) the way requests would on every request; paths appended later
        # are already quoted.
        probe = requests.PreparedRequest()
        probe.prepare_url(self.config.base_url, None)
        self._base_url = str(probe.url).rstrip("/")
        self._headers = CaseInsensitiveDict(static_headers(self.config))
        self._send_kwargs = {
            "stream": False,
            "timeout": self.config.timeout,
            "verify": network.ca_bundle or True,
            "cert": None,
            "proxies": dict(network.proxies),
        }
        self._session = session
        adapter = session.get_adapter(self._base_url)
        poolmanager = getattr(adapter, "poolmanager", None)
        if poolmanager is not None:
            poolmanager.pool_classes_by_scheme = _watched_pools()
        self._adapter = adapter
        return adapter

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
            self._adapter = None

    def call(self, call: Call[T]) -> T:
        adapter = self._adapter or self._open()
        exchange = Exchange(call, self.policy)
        url = call.target(self._base_url)
        body = call.payload()
        while True:
            budget = exchange.attempt_budget()
            wait = exchange.settle(self._attempt(adapter, call.method, url, body, budget))
            if wait is None:
                return exchange.result()
            time.sleep(wait)

    def _attempt(
        self,
        adapter: requests.adapters.BaseAdapter,
        method: str,
        url: str,
        body: bytes | None,
        budget: float | None,
    ) -> Answer | Failure:
        if budget is None:
            return self._exchange_bytes(adapter, method, url, body, self._send_kwargs)
        kwargs = self._send_kwargs
        if budget < self.config.timeout:
            kwargs = {**kwargs, "timeout": budget}
        watch = _IN_FLIGHT.watch = _WATCHDOG.watch(budget)
        try:
            outcome = self._exchange_bytes(adapter, method, url, body, kwargs)
        finally:
            watch.done = True
            _IN_FLIGHT.watch = None
        if watch.fired:
            # Cut off: whatever was read (possibly a body cut short without an error) is not the answer.
            cause = outcome.cause if isinstance(outcome, Failure) else None
            return Failure(None, f"no complete answer within {budget:.1f} s", cause=cause)
        return outcome

    def _exchange_bytes(
        self,
        adapter: requests.adapters.BaseAdapter,
        method: str,
        url: str,
        body: bytes | None,
        send_kwargs: dict[str, Any],
    ) -> Answer | Failure:
        import requests
        from urllib3.exceptions import HTTPError, NewConnectionError

        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        prepared.headers = self._headers.copy()  # type: ignore[attr-defined]
        if body is not None:
            prepared.headers["Content-Type"] = "application/json"
            prepared.headers["Content-Length"] = str(len(body))
            prepared.body = body
        elif method not in ("GET", "HEAD"):
            prepared.headers["Content-Length"] = "0"
        try:
            response = adapter.send(prepared, **send_kwargs)
            # One read of the whole body rather than requests' 10 KiB chunks joined (a page of keys: ~60 KiB).
            # urllib3 returns the connection to the pool once the body is read.
            body_bytes = response.raw.read(decode_content=True)
            return Answer(response.status_code, response.headers, body_bytes)
        except requests.exceptions.SSLError as exc:
            return Failure.of(exc, False, permanent=True)
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError) as exc:
            return Failure.of(exc, False)
        except requests.exceptions.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            return Failure.of(exc, False if isinstance(reason, NewConnectionError) else None)
        except (requests.exceptions.RequestException, HTTPError, OSError) as exc:
            return Failure.of(exc, None)


# --------------------------------------------------------------------------------------------- async ---


@dataclass(slots=True)
class _Shared:
    session: aiohttp.ClientSession
    keeper: AsyncGenerator[None, None]


# Per running loop, per base URL: one session. Keyed weakly so a finished loop does not stay alive through it.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK = threading.Lock()


async def _keep_until_shutdown(
    loop: asyncio.AbstractEventLoop, key: str, session: aiohttp.ClientSession
) -> AsyncGenerator[None, None]:
    """Closes ``session`` when the loop shuts down.

    A suspended async generator is one the loop itself finalises: ``asyncio.run`` (and ``asyncio.Runner``,
    and the triggerer, which runs on them) call ``loop.shutdown_asyncgens()``, which runs the ``finally``
    below before the loop closes. So the shared session is closed cleanly without any owner calling close.
    """
    try:
        yield
    finally:
        with _SHARED_LOCK:
            per_loop = _SHARED.get(loop)
            if per_loop is not None and per_loop.get(key) is not None and per_loop[key].session is session:
                del per_loop[key]
        await session.close()


async def shared_session(key: str) -> aiohttp.ClientSession:
    """The running loop's session for ``key`` (base URL and network settings), created on first use."""
    import aiohttp

    loop = asyncio.get_running_loop()
    with _SHARED_LOCK:
        per_loop = _SHARED.get(loop)
        if per_loop is None:
            # Loops closed without shutting down their async generators never cleaned up after themselves.
            for closed in [other for other in _SHARED if other.is_closed()]:
                del _SHARED[closed]
            per_loop = _SHARED[loop] = {}
        shared = per_loop.get(key)
        if shared is not None and not shared.session.closed:
            return shared.session
        # Headers and timeouts are per request, so hooks with different keys and settings share the pool.
        session = aiohttp.ClientSession(trust_env=False, auto_decompress=True)
        keeper = _keep_until_shutdown(loop, key, session)
        per_loop[key] = _Shared(session, keeper)
    await keeper.__anext__()
    return session


async def aclose_shared_sessions() -> None:
    """Close the running loop's shared sessions now (they are otherwise closed when the loop shuts down)."""
    loop = asyncio.get_running_loop()
    with _SHARED_LOCK:
        shared = list(_SHARED.pop(loop, {}).values())
    for entry in shared:
        await entry.session.close()
        await entry.keeper.aclose()


def _ssl_for(base_url: str, network: NetworkSettings) -> Any:
    """aiohttp's ``ssl=``: the default (``True``), or a context trusting the configured CA bundle."""
    if network.ca_bundle is None or not base_url.startswith("https:"):
        return True
    return _ssl_context(network.ca_bundle)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_bundle: str) -> ssl.SSLContext:
    # Loading a CA bundle takes tens of milliseconds: once per bundle, not once per hook or connection.
    import ssl

    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


def _connect_timeout(aiohttp: Any) -> tuple[type[BaseException], ...]:
    # aiohttp >= 3.10 tells a connect timeout from a read timeout; before that both count as "maybe sent".
    error = getattr(aiohttp, "ConnectionTimeoutError", None)
    return (error,) if error is not None else ()


class AsyncTransport:
    """Non-blocking I/O over the loop's shared ``aiohttp`` session; the decisions are :class:`Exchange`'s."""

    def __init__(self, config: OpenRouterConnectionConfig, policy: RetryPolicy) -> None:
        self.config = config
        self.policy = policy
        self._headers = static_headers(config)
        self._proxy: str | None = None
        self._ssl: Any = True
        self._session_key = ""
        self._never_connected: tuple[type[BaseException], ...] = ()
        self._timeout: aiohttp.ClientTimeout | None = None
        self._preparing: asyncio.Future[None] | None = None

    async def call(self, call: Call[T]) -> T:
        exchange = Exchange(call, self.policy)
        url = call.target(self.config.base_url)
        body = call.payload()
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        while True:
            budget = exchange.attempt_budget()
            wait = exchange.settle(await self._attempt(call.method, url, headers, body, budget))
            if wait is None:
                return exchange.result()
            await asyncio.sleep(wait)

    def _prepare(self) -> None:
        import aiohttp

        network = NetworkSettings.from_environment(self.config.base_url)
        self._proxy = network.proxy_for(self.config.base_url)
        self._ssl = _ssl_for(self.config.base_url, network)
        self._session_key = f"{self.config.base_url}|{self._proxy}|{network.ca_bundle}"
        self._never_connected = (aiohttp.ClientConnectorError, *_connect_timeout(aiohttp))
        # Set last: it is what marks the transport as prepared.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.config.timeout, sock_read=self.config.timeout
        )

    async def _attempt(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, budget: float | None
    ) -> Answer | Failure:
        if self._timeout is None:
            if self._preparing is None:
                # First use imports aiohttp and requests' proxy helpers, reads the environment and may load a
                # CA bundle: tens of milliseconds that must not stall every other trigger on the loop.
                self._preparing = asyncio.ensure_future(asyncio.to_thread(self._prepare))
            await self._preparing
        import aiohttp  # imported by _prepare: a dictionary lookup now

        session = await shared_session(self._session_key)
        timeout = self._timeout
        if budget is not None:
            # ``total`` bounds the whole attempt, a trickling answer included; the socket timeouts stay.
            timeout = aiohttp.ClientTimeout(
                total=budget,
                sock_connect=min(budget, self.config.timeout),
                sock_read=min(budget, self.config.timeout),
            )
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                proxy=self._proxy,
                ssl=self._ssl,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                return Answer(response.status, response.headers, payload)
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            return Failure.of(exc, False, permanent=True)
        except self._never_connected as exc:
            return Failure.of(exc, False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Failure.of(exc, None)
