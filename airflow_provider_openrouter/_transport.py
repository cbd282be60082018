"""The I/O of a call: moving bytes to OpenRouter and back, and nothing else.

What to send is :mod:`~airflow_provider_openrouter._endpoints`'; what an outcome means and whether to try
again is :mod:`~airflow_provider_openrouter._retry`'s (:class:`~airflow_provider_openrouter._retry.Exchange`).
:class:`SyncTransport` keeps one ``requests.Session`` per hook, :class:`AsyncTransport` one
``aiohttp.ClientSession`` per event loop and base URL, shared by every hook in that loop (a triggerer
running a thousand triggers keeps one pool).

``requests`` and ``aiohttp`` are imported inside the functions that use them: a DAG file that imports the hook
does not pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow_provider_openrouter import __version__
from airflow_provider_openrouter._retry import Answer, Exchange, Failure, RateGate, RetryPolicy

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator, Mapping

    import aiohttp
    import requests

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter._endpoints import Call

T = TypeVar("T")

USER_AGENT = f"airflow-provider-openrouter/{__version__}"


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
            if self._seq % 256 == 0 and len(self._heap) > 256:
                # Finished attempts wait in the heap for their deadline (a connection timeout away): thousands
                # of them in a busy apply. Dropped in one pass now and then, which costs O(1) per attempt.
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
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


#: The most threads that share a hook: a sync's ``max_workers`` (at most 64) and a walk's ``pages_in_flight``
#: (at most 10), which a sync's check walks beside.
CONNECTIONS_KEPT: Final = 64 + 10


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

    def __init__(
        self, config: OpenRouterConnectionConfig, policy: RetryPolicy, gate: RateGate | None = None
    ) -> None:
        self.config = config
        self.policy = policy
        self.gate = gate
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
        # A connection kept for every thread that may share the hook: a pool smaller than that closes the
        # connections it cannot keep, and the next requests pay for new ones.
        pooled = requests.adapters.HTTPAdapter(pool_maxsize=CONNECTIONS_KEPT)
        session.mount("http://", pooled)
        session.mount("https://", pooled)
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
        exchange = Exchange(call, self.policy, self.gate)
        url = call.target(self._base_url)
        body = call.payload()
        while True:
            hold = exchange.hold()
            if hold is None:
                return exchange.result()
            if hold > 0:
                time.sleep(hold)
                continue
            budget = exchange.attempt_budget()
            try:
                outcome = self._attempt(adapter, call.method, url, body, budget)
            except BaseException:
                exchange.abandon()
                raise
            wait = exchange.settle(outcome)
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

    def __init__(
        self, config: OpenRouterConnectionConfig, policy: RetryPolicy, gate: RateGate | None = None
    ) -> None:
        self.config = config
        self.policy = policy
        self.gate = gate
        self._headers = static_headers(config)
        self._proxy: str | None = None
        self._ssl: Any = True
        self._session_key = ""
        self._never_connected: tuple[type[BaseException], ...] = ()
        self._timeout: aiohttp.ClientTimeout | None = None
        self._preparing: asyncio.Future[None] | None = None

    async def call(self, call: Call[T]) -> T:
        exchange = Exchange(call, self.policy, self.gate)
        url = call.target(self.config.base_url)
        body = call.payload()
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        while True:
            hold = exchange.hold()
            if hold is None:
                return exchange.result()
            if hold > 0:
                await asyncio.sleep(hold)
                continue
            budget = exchange.attempt_budget()
            try:
                outcome = await self._attempt(call.method, url, headers, body, budget)
            except BaseException:  # cancelled, most likely: another request must be free to go first
                exchange.abandon()
                raise
            wait = exchange.settle(outcome)
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
