"""HTTP for the local OpenRouter: the API under ``/api/v1`` and the test controls under ``/_local``.

A threaded stdlib server. Two details make it fast: ``TCP_NODELAY`` and writing each answer (status line,
headers and body) with one ``sendall``. Without them the client's delayed ACK meets Nagle's algorithm on every
keep-alive request and the server manages about 22 requests a second instead of thousands.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import email.utils
import json
import re
import selectors
import socket
import socketserver
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow_provider_openrouter.testing._state import (
    ApiError,
    OpenRouterState,
    check_workspace_id,
    hash_of,
    iso,
    parse_instant,
)
from airflow_provider_openrouter.testing.faults import (
    API_PREFIX,
    DropAfterCommit,
    DropBeforeCommit,
    FaultPlan,
    FaultRule,
    HtmlError,
    Latency,
    Status,
    Trickle,
    default_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

ADMIN_PREFIX = "/_local"
_KEY_PATH = re.compile(r"/keys/([^/]+)")
_ADMIN_KEY_PATH = re.compile(r"/keys/([^/]+)(/usage)?")
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

_HTML_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the local OpenRouter saw it. Never holds the ``Authorization`` header.

    ``status`` is ``None`` when a fault dropped the connection instead of answering; ``fault`` names the fault
    that decided the answer, if any; ``key_hash`` is the hash of the bearer key the request carried.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int | None
    fault: str | None
    key_hash: str | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedRequest:
        return cls(**data)


class RequestLog:
    """The API requests served, oldest first, bounded so that a long benchmark does not grow memory."""

    def __init__(self, maxlen: int) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[RecordedRequest] = collections.deque(maxlen=maxlen)

    def append(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _redacted_body(body: Any) -> Any:
    # A create can carry a partner's BYOK key under external.api_key: keep it out of the log.
    if isinstance(body, dict) and isinstance(body.get("external"), dict) and "api_key" in body["external"]:
        return {**body, "external": {**body["external"], "api_key": "***"}}
    return body


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


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


def _bearer_hash(authorization: str | None) -> str | None:
    if not authorization:
        return None
    _, _, token = authorization.strip().partition(" ")
    return hash_of(token.strip()) if token.strip() else None


class Backend:
    """What the server needs: the state, the armed faults and the request log."""

    def __init__(self, state: OpenRouterState, faults: FaultPlan, log: RequestLog) -> None:
        self.state = state
        self.faults = faults
        self.log = log
        self.base_url = ""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket, *, open_: bool) -> None:
        with self._open_lock:
            if open_:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_all_connections(self) -> None:
        """Close idle keep-alive connections, whose handler threads would otherwise wait on them forever."""
        with self._open_lock:
            socks = list(self._open)
            self._open.clear()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _BadRequest(Exception):
    pass


_MAX_LINE = 65536
_MAX_HEADERS = 100
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.formatdate(second, usegmt=True))
    return _date_cache[1]


class _Handler(socketserver.StreamRequestHandler):
    """A lean HTTP/1.1 handler with keep-alive.

    ``http.server.BaseHTTPRequestHandler`` parses headers with the ``email`` package, which costs more than
    everything else a request does here; the API needs only the request line, a few headers and a
    ``Content-Length`` (or chunked) body.
    """

    disable_nagle_algorithm = True  # TCP_NODELAY, see the module docstring
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)
        self.close_connection = False
        self.headers: dict[str, str] = {}
        self.raw_headers: list[tuple[str, str]] = []

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            while not self.close_connection:
                try:
                    if not self._handle_one():
                        return
                except _BadRequest as exc:
                    self.close_connection = True
                    self._send_json(400, ApiError(400, str(exc)).body())
                    return

    def _readline(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest("Line too long")
        return line

    def _handle_one(self) -> bool:
        line = self._readline()
        while line in (b"\r\n", b"\n"):  # tolerated between requests (RFC 9112 2.2)
            line = self._readline()
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest("Malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        raw_headers: list[tuple[str, str]] = []
        while True:
            header = self._readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, sep, value = header.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest("Malformed header line")
            if len(raw_headers) >= _MAX_HEADERS:
                raise _BadRequest("Too many headers")
            name, value = name.strip(), value.strip()
            raw_headers.append((name, value))
            headers[name.lower()] = value
        self.headers, self.raw_headers = headers, raw_headers
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw = self._read_body(headers)
        self._dispatch(method.upper(), target, raw)
        return True

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self._readline().split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise _BadRequest("Malformed chunk size") from None
                if size == 0:
                    while self._readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self._readline()
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _BadRequest("Malformed Content-Length") from None
        return self.rfile.read(length) if length > 0 else b""

    # -- plumbing ------------------------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {_http_date()}",
            "Server: LocalOpenRouter",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)  # one write, one segment: see the module docstring

    def _send_json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, _json_bytes(payload), headers=headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, method: str, target: str, raw: bytes) -> None:
        url = urlsplit(target)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            self._admin(method, path[len(ADMIN_PREFIX) :], query, raw)
        else:
            self._api(method, path, query, raw)

    # -- the API -------------------------------------------------------------------------------------------

    def _api(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        backend = self.server.backend
        decisive = None
        for fault in backend.faults.take(method, path):
            if isinstance(fault, Latency):
                time.sleep(fault.seconds)
            else:
                decisive = fault
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k: v for k, v in self.raw_headers if k.lower() not in _SECRET_HEADERS}

        def record(status: int | None, fault: str | None) -> None:
            backend.log.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    query=query,
                    body=_redacted_body(body),
                    headers=headers,
                    status=status,
                    fault=fault,
                    key_hash=_bearer_hash(self.headers.get("authorization")),
                    at=iso(backend.state.now()) or "",
                )
            )

        committed = False
        if isinstance(decisive, DropAfterCommit) or getattr(decisive, "after_commit", False):
            self._process(method, path, query, raw)  # the change happens; its answer is lost
            committed = True
        if isinstance(decisive, (DropBeforeCommit, DropAfterCommit)):
            record(None, "drop_after_commit" if committed else "drop_before_commit")
            self._drop()
            return
        if isinstance(decisive, Status):
            extra: list[tuple[str, str]] = []
            if decisive.retry_after is not None:
                extra.append(("Retry-After", _retry_after_text(decisive.retry_after)))
            extra.extend((decisive.headers or {}).items())
            error = ApiError(decisive.code, decisive.message or default_message(decisive.code))
            record(decisive.code, "status")
            self._send_json(decisive.code, error.body(), extra)
            return
        if isinstance(decisive, HtmlError):
            reason = default_message(decisive.code)
            page = _HTML_PAGE.format(code=decisive.code, reason=reason).encode()
            record(decisive.code, "html")
            self._send(decisive.code, page, content_type="text/html; charset=utf-8")
            return
        status, payload = self._process(method, path, query, raw)
        record(status, "trickle" if isinstance(decisive, Trickle) else None)
        if isinstance(decisive, Trickle):
            self._trickle(status, _json_bytes(payload), decisive)
            return
        self._send_json(status, payload)

    def _trickle(self, status: int, body: bytes, fault: Trickle) -> None:
        self.close_connection = True
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        answer = head + body
        step = max(1, fault.chunk)
        for start in range(0, len(answer), step):
            self.wfile.write(answer[start : start + step])
            self.wfile.flush()
            time.sleep(fault.interval)

    def _process(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            return self._route(method, path, query, raw)
        except ApiError as exc:
            return exc.status, exc.body()
        except Exception:
            # A bug in the fake: answer like the real API's 500 rather than dropping the connection, which a
            # client would take for a network failure; the traceback goes to stderr for whoever debugs it.
            traceback.print_exc()
            return 500, ApiError(500, "Internal Server Error").body()

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        state = self.server.backend.state
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            raise ApiError(404, "Not Found")
        api_path = path[len(API_PREFIX) :].rstrip("/") or "/"
        match = _KEY_PATH.fullmatch(api_path)
        if api_path not in ("/key", "/keys", "/credits") and match is None:
            raise ApiError(404, "Not Found")
        allowed = {"/key": ("GET",), "/keys": ("GET", "POST"), "/credits": ("GET",)}.get(
            api_path, ("GET", "PATCH", "DELETE")
        )
        if method not in allowed:
            raise ApiError(405, "Method Not Allowed")

        caller = state.authenticate(self.headers.get("authorization"))
        if api_path == "/key":
            return 200, {"data": state.current_key(caller)}
        state.require_management(caller)
        if api_path == "/credits":
            return 200, {"data": state.credits()}
        if api_path == "/keys":
            if method == "GET":
                workspace = query.get("workspace_id")
                return 200, {
                    "data": state.list_keys(
                        offset=_offset(query),
                        include_disabled=_flag(query, "include_disabled"),
                        include_expired=_flag(query, "include_expired"),
                        workspace_id=check_workspace_id(workspace) if workspace else None,
                    )
                }
            data, plaintext = state.create_key(_object_body(raw))
            return 201, {"data": data, "key": plaintext}
        assert match is not None
        key_hash = match.group(1)
        if method == "GET":
            return 200, {"data": state.get_key(key_hash)}
        if method == "PATCH":
            return 200, {"data": state.update_key(key_hash, _object_body(raw))}
        state.delete_key(key_hash)
        return 200, {"deleted": True}

    # -- test controls ---------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        try:
            status, payload = _admin_route(self.server.backend, method, path.rstrip("/") or "/", query, raw)
        except ApiError as exc:
            status, payload = exc.status, exc.body()
        except (KeyError, ValueError, TypeError) as exc:
            status, payload = 400, ApiError(400, f"{type(exc).__name__}: {exc}").body()
        except Exception as exc:
            traceback.print_exc()
            status, payload = 500, ApiError(500, f"{type(exc).__name__}: {exc}").body()
        self._send_json(status, payload)


def _retry_after_text(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _object_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise ApiError(400, "Request body is required")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _admin_body(raw: bytes) -> dict[str, Any]:
    return _object_body(raw) if raw else {}


def _admin_route(
    backend: Backend, method: str, path: str, query: dict[str, str], raw: bytes
) -> tuple[int, Any]:
    state = backend.state
    handlers: dict[tuple[str, str], Callable[[], tuple[int, Any]]] = {
        ("GET", "/info"): lambda: (
            200,
            {
                "base_url": backend.base_url,
                "management_key": state.management_key,
                "now": iso(state.now()),
                "spend_per_second": state.spend_per_second,
            },
        ),
        ("GET", "/keys"): lambda: (
            200,
            {"data": state.all_keys(include_management=query.get("include_management") == "true")},
        ),
        ("POST", "/keys"): lambda: _admin_add_key(state, _admin_body(raw)),
        ("GET", "/clock"): lambda: (200, {"now": iso(state.now())}),
        ("POST", "/clock"): lambda: _admin_clock(state, _admin_body(raw)),
        ("GET", "/faults"): lambda: (200, {"data": [rule.to_json() for rule in backend.faults.rules()]}),
        ("POST", "/faults"): lambda: _admin_add_fault(backend, _admin_body(raw)),
        ("DELETE", "/faults"): lambda: _cleared(backend.faults.clear),
        ("GET", "/requests"): lambda: (200, {"data": [r.to_json() for r in backend.log.items()]}),
        ("DELETE", "/requests"): lambda: _cleared(backend.log.clear),
        ("GET", "/issued-plaintexts"): lambda: (200, {"data": state.issued_plaintexts}),
        ("GET", "/spend"): lambda: (200, {"per_second": state.spend_per_second}),
        ("PUT", "/spend"): lambda: _admin_spend(state, _admin_body(raw)),
    }
    handler = handlers.get((method, path))
    if handler is not None:
        return handler()
    match = _ADMIN_KEY_PATH.fullmatch(path)
    if match is not None:
        key_hash, usage = match.group(1), match.group(2)
        try:
            if usage is None and method == "GET":
                return 200, {"data": state.key_state(key_hash)}
            if usage and method == "POST":
                body = _admin_body(raw)
                return 200, {
                    "data": state.add_usage(key_hash, float(body["usd"]), byok=bool(body.get("byok", False)))
                }
            if usage and method == "PUT":
                return 200, {"data": state.set_usage(key_hash, _admin_body(raw))}
        except KeyError:
            raise ApiError(404, f"no key with hash {key_hash}") from None
    raise ApiError(404, f"no control endpoint {method} {ADMIN_PREFIX}{path}")


def _cleared(clear: Callable[[], None]) -> tuple[int, Any]:
    clear()
    return 200, {"cleared": True}


def _admin_add_key(state: OpenRouterState, body: dict[str, Any]) -> tuple[int, Any]:
    expires = body.get("expires_at")
    data, plaintext = state.add_key(
        str(body["name"]),
        limit=body.get("limit"),
        limit_reset=body.get("limit_reset"),
        include_byok_in_limit=bool(body.get("include_byok_in_limit", False)),
        expires_at=parse_instant(expires) if expires else None,
        workspace_id=body.get("workspace_id"),
        creator_user_id=body.get("creator_user_id", "user_2dHFtVWx2n56w6HkLocal0000"),
        external_user=body.get("external_user"),
        disabled=bool(body.get("disabled", False)),
        management=bool(body.get("management", False)),
    )
    return 201, {"data": data, "key": plaintext}


def _admin_clock(state: OpenRouterState, body: dict[str, Any]) -> tuple[int, Any]:
    if "set" in body:
        now = state.set_clock(parse_instant(str(body["set"])), frozen=bool(body.get("frozen", False)))
    else:
        now = state.advance_clock(dt.timedelta(seconds=float(body.get("advance_seconds", 0))))
    return 200, {"now": iso(now)}


def _admin_add_fault(backend: Backend, body: dict[str, Any]) -> tuple[int, Any]:
    rule = FaultRule.from_json(body)
    backend.faults.add(rule)
    return 201, {"data": rule.to_json()}


def _admin_spend(state: OpenRouterState, body: dict[str, Any]) -> tuple[int, Any]:
    state.set_spend_per_second(float(body["per_second"]))
    return 200, {"per_second": state.spend_per_second}


class HttpServer:
    """The threaded server, accepting on a background thread.

    Its own accept loop rather than ``serve_forever``, which polls for shutdown: every stop would wait up to a
    poll interval, and a test suite starts and stops a server per test.
    """

    def __init__(self, backend: Backend, host: str, port: int) -> None:
        self._server = _Server((host, port), backend)
        # A bound on handle_request's wait, for a connection that vanishes between select and accept.
        self._server.timeout = 0.5
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="local-openrouter", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._server.socket and not self._stopping.is_set():
                        self._server.handle_request()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._wake_w.send(b"\0")
            self._thread.join()
            self._thread = None
        self._server.close_all_connections()
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()
