"""How many requests a second the local OpenRouter answers: benchmarks show it is not the bottleneck."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

from airflow_provider_openrouter.testing._local import LocalOpenRouter


def measure_capacity(
    seconds: float = 1.0, *, fake: LocalOpenRouter | None = None, path: str = "/key"
) -> float:
    """Requests per second one keep-alive client gets from a local OpenRouter (default ``GET /key``).

    Uses ``fake`` if given, else starts (and stops) a fresh one. The client is ``http.client``, the thinnest
    there is, so the figure is the server's ceiling rather than a client's.
    """
    owned = fake is None
    server = LocalOpenRouter().start() if fake is None else fake
    try:
        url = urlsplit(server.base_url)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        headers = {"Authorization": f"Bearer {server.management_key}", "Accept": "application/json"}
        target = url.path + path
        count = 0
        try:
            deadline = time.perf_counter() + seconds
            start = time.perf_counter()
            while True:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {target} answered {response.status}")
                count += 1
                now = time.perf_counter()
                if now >= deadline:
                    break
            return count / (now - start)
        finally:
            conn.close()
    finally:
        if owned:
            server.stop()
