"""The local OpenRouter's HTTP layer: HTTP/1.1 with keep-alive over a threaded stdlib server.

It knows nothing of OpenRouter: it parses each request into a :class:`Request`, hands it to the application
(a function returning a :class:`Response`) and writes the answer, or drops the connection when the answer says
so. Two details make it fast: ``TCP_NODELAY`` and writing each answer (status line, headers and body) with one
``sendall``. Without them the client's delayed ACK meets Nagle's algorithm on every keep-alive request and the
server manages about 22 requests a second instead of thousands.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import selectors
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Request(NamedTuple):
    """One parsed request: ``path`` percent-decoded, header names lower-cased in ``headers``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes


class Response(NamedTuple):
    """An answer to write, or with ``drop`` none: the connection is closed without one."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()
    drop: bool = False
    #: ``(interval, chunk)``: send the answer ``chunk`` bytes every ``interval`` seconds, then close.
    trickle: tuple[float, int] | None = None


DROP = Response(0, drop=True)


def json_response(status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: Callable[[Request], Response],
        malformed: Callable[[str], Response],
    ) -> None:
        self.app = app
        self.malformed = malformed
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

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            while not self.close_connection:
                try:
                    request = self._read_request()
                except _BadRequest as exc:
                    self.close_connection = True
                    self._send(self.server.malformed(str(exc)))
                    return
                if request is None:
                    return
                self._send(self.server.app(request))

    def _readline(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest("Line too long")
        return line

    def _read_request(self) -> Request | None:
        line = self._readline()
        while line in (b"\r\n", b"\n"):  # tolerated between requests (RFC 9112 2.2)
            line = self._readline()
        if not line:
            return None
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
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_body(headers)
        url = urlsplit(target)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        return Request(method.upper(), unquote(url.path), query, headers, raw_headers, body)

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

    def _send(self, response: Response) -> None:
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = response.status, response.body
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {_http_date()}",
            "Server: LocalOpenRouter",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        if response.trickle is not None and not self.close_connection:
            self.close_connection = True
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if response.trickle is None:
            self.wfile.write(head + body)  # one write, one segment: see the module docstring
            return
        interval, chunk = response.trickle
        answer = head + body
        for start in range(0, len(answer), max(1, chunk)):
            self.wfile.write(answer[start : start + max(1, chunk)])
            self.wfile.flush()
            time.sleep(interval)


class HttpServer:
    """The threaded server, accepting on a background thread.

    ``app`` answers every well-formed request; ``malformed`` answers a request that cannot be parsed, after
    which the connection closes. Its own accept loop rather than ``serve_forever``, which polls for shutdown:
    every stop would wait up to a poll interval, and a test suite starts and stops a server per test.
    """

    def __init__(
        self,
        app: Callable[[Request], Response],
        malformed: Callable[[str], Response],
        host: str,
        port: int,
    ) -> None:
        self._server = _Server((host, port), app, malformed)
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
