"""How many requests a second the local OpenRouter answers: benchmarks show it is not the bottleneck."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

from airflow_provider_openrouter.testing._local import LocalOpenRouter


def _client_loop(
    base_url: str, key: str, path: str, seconds: float, start: threading.Barrier
) -> tuple[int, float]:
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    target = url.path + path
    try:
        conn.request("GET", target, headers=headers)  # connect and warm up outside the measured window
        conn.getresponse().read()
        start.wait()
        count = 0
        began = time.perf_counter()
        deadline = began + seconds
        while True:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {target} answered {response.status}")
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return count, now - began
    finally:
        conn.close()


def measure_capacity(
    seconds: float = 1.0,
    *,
    fake: LocalOpenRouter | None = None,
    base_url: str | None = None,
    management_key: str | None = None,
    path: str = "/key",
    clients: int = 1,
) -> float:
    """Requests per second a local OpenRouter answers (``GET /key`` by default) to keep-alive clients.

    Measures ``fake``, or the one at ``base_url`` (with ``management_key``, e.g. one served by
    ``python -m airflow_provider_openrouter.testing`` in another process), or else a fresh one started and
    stopped here. Each of ``clients`` threads drives its own connection with ``http.client``, the thinnest
    client there is, so the figure is the server's ceiling rather than a client's. A server in this process
    shares the interpreter lock with the clients, so it measures lower than one in its own process.
    """
    owned: LocalOpenRouter | None = None
    if base_url is None:
        if fake is None:
            fake = owned = LocalOpenRouter().start()
        base_url, management_key = fake.base_url, fake.management_key
    if management_key is None:
        raise ValueError("measuring a local OpenRouter by base_url needs its management_key")
    try:
        start = threading.Barrier(clients)
        results: list[tuple[int, float]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(_client_loop(base_url, management_key, path, seconds, start))
            except BaseException as exc:  # re-raised on the calling thread
                errors.append(exc)
                start.abort()

        threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return sum(count / elapsed for count, elapsed in results)
    finally:
        if owned is not None:
            owned.stop()
