"""Proxies and CA bundles from the environment still apply, although the hook reads them once per session
rather than on every request: ``HTTP(S)_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``."""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import ipaddress
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterTransportError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from tests.integration.test_hook_retries import free_port
from tests.relay import pump

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_openrouter.testing import LocalOpenRouter

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def point_at(monkeypatch: pytest.MonkeyPatch, fake: LocalOpenRouter, base_url: str | None = None) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        fake.connection_json(max_retries=1, max_retry_wait=0).replace(
            fake.base_url, base_url or fake.base_url
        ),
    )


# ------------------------------------------------------------------------------------------- proxies ---


class RecordingProxy(http.server.ThreadingHTTPServer):
    """A forward HTTP proxy that records the request lines it relays."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def _relay(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")
        }
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_proxy_from_environment_is_used(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, proxy: RecordingProxy, variable: str
) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv(variable, proxy.url)
    key = local_openrouter.add_key("via-proxy")
    hook = OpenRouterHook()
    assert hook.get_key(key.hash).name == "via-proxy"
    hook.create_key("made-via-proxy")
    assert proxy.seen == [
        f"GET {local_openrouter.base_url}/keys/{key.hash}",
        f"POST {local_openrouter.base_url}/keys",
    ]


async def test_async_proxy_from_environment_is_used(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, proxy: RecordingProxy
) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert (await OpenRouterHook().aget_current_key()).is_management_key
    assert proxy.seen == [f"GET {local_openrouter.base_url}/key"]


def test_dead_proxy_proves_the_proxy_is_in_the_path(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OpenRouterTransportError) as exc:
        OpenRouterHook().get_current_key()
    assert exc.value.reached_server is False
    assert local_openrouter.requests == []


async def test_async_dead_proxy(local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OpenRouterTransportError) as exc:
        await OpenRouterHook().aget_current_key()
    assert exc.value.reached_server is False
    assert local_openrouter.requests == []


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "127.0.0.0/8", "*"])
def test_no_proxy_is_honoured(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert OpenRouterHook().get_current_key().is_management_key


async def test_async_no_proxy_is_honoured(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, local_openrouter)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert (await OpenRouterHook().aget_current_key()).is_management_key


# -------------------------------------------------------------------------------------------- TLS ---


class TlsFront:
    """TLS termination in front of the local OpenRouter, with a self-signed certificate for 127.0.0.1."""

    def __init__(self, target_port: int, tmp_path: Path) -> None:
        self.cert_file, key_file = _self_signed(tmp_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, key_file)
        self.context = context
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=pump, args=(upstream, tls), daemon=True).start()
        pump(tls, upstream)

    def close(self) -> None:
        self.listener.close()


def _self_signed(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local openrouter")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_front(
    local_openrouter: LocalOpenRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TlsFront]:
    front = TlsFront(local_openrouter.port, tmp_path)
    point_at(monkeypatch, local_openrouter, f"https://127.0.0.1:{front.port}/api/v1")
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield front
    front.close()


@pytest.mark.parametrize("variable", CA_VARIABLES)
def test_ca_bundle_from_environment_is_trusted(
    tls_front: TlsFront, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, tls_front.cert_file)
    assert OpenRouterHook().get_current_key().is_management_key


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
async def test_async_ca_bundle_from_environment_is_trusted(
    tls_front: TlsFront, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, tls_front.cert_file)
    assert (await OpenRouterHook().aget_current_key()).is_management_key


def test_untrusted_certificate_fails_without_retrying(
    tls_front: TlsFront, local_openrouter: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(OpenRouterTransportError) as exc:
        OpenRouterHook().get_current_key()
    assert "certificate" in str(exc.value).lower()
    assert exc.value.reached_server is False
    assert "retry" not in caplog.text  # a certificate will not become trusted by asking again
    assert local_openrouter.requests == []


async def test_async_untrusted_certificate_fails(
    tls_front: TlsFront, local_openrouter: LocalOpenRouter
) -> None:
    with pytest.raises(OpenRouterTransportError) as exc:
        await OpenRouterHook().aget_current_key()
    assert "certificate" in str(exc.value).lower()
    assert local_openrouter.requests == []
