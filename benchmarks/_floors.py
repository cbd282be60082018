"""The floors the benchmarks measure the provider against, in the same run: plain ``requests`` loops that do
the least the API allows, with none of the provider's guarantees.

- :func:`raw_walk`: ``GET /keys`` one page after another, at offsets 100 apart (a walk that a key created or
  deleted meanwhile would throw off);
- :func:`raw_walk_in_flight`: the same pages, ``concurrency`` of them in flight at once, the next asked for
  as each comes back full;
- :func:`bare_post_patch`: ``POST /keys`` then ``PATCH /keys/{hash}`` per name (a safe create's two writes:
  the claim, then its rename), ``concurrency`` names at a time.

:func:`set_latency` makes the local OpenRouter (in its own process) answer every API request after a delay,
as a real network does: on loopback a request costs a fraction of a millisecond, on the Internet tens.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import requests

    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

PAGE = 100


def parse_latencies(text: str) -> list[float]:
    """``"0,50"`` (milliseconds) -> ``[0.0, 0.05]`` (seconds)."""
    return [float(item) / 1000 for item in text.split(",") if item.strip()]


def set_latency(control: LocalOpenRouterControl, seconds: float) -> None:
    """Every API request answered after ``seconds`` from now on (``0``: at once)."""
    from airflow_provider_openrouter.testing import Latency

    control.clear_faults()
    if seconds > 0:
        control.inject(Latency(seconds), path="/*", times=None)


def session_for(concurrency: int) -> requests.Session:
    """A session whose pool keeps a connection per thread, as the hook's does."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(10, concurrency))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Floors:
    """The raw loops against one local OpenRouter, each timed in seconds."""

    def __init__(self, base_url: str, management_key: str, *, concurrency: int = 8) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {management_key}"}
        self.concurrency = concurrency
        self.session = session_for(concurrency)

    def page(self, offset: int) -> list[Any]:
        query: dict[str, str | int] = {
            "offset": offset,
            "include_disabled": "true",
            "include_expired": "true",
        }
        response = self.session.get(
            f"{self.base_url}/keys",
            params=query,
            headers=self.headers,
            timeout=30,
        )
        response.raise_for_status()
        data: list[Any] = response.json()["data"]
        return data

    def raw_walk(self) -> tuple[float, int]:
        """One page after another: (seconds, keys)."""
        started = time.perf_counter()
        count, offset = 0, 0
        while True:
            page = self.page(offset)
            count += len(page)
            if len(page) < PAGE:
                return time.perf_counter() - started, count
            offset += PAGE

    def raw_walk_in_flight(self) -> tuple[float, int]:
        """``concurrency`` pages in flight: (seconds, keys)."""
        started = time.perf_counter()
        count, next_offset = 0, 0
        with ThreadPoolExecutor(self.concurrency) as pool:
            asked: deque[Future[list[Any]]] = deque()
            for _ in range(self.concurrency):
                asked.append(pool.submit(self.page, next_offset))
                next_offset += PAGE
            while asked:
                page = asked.popleft().result()
                count += len(page)
                if len(page) < PAGE:
                    for future in asked:
                        future.cancel()
                    break
                asked.append(pool.submit(self.page, next_offset))
                next_offset += PAGE
        return time.perf_counter() - started, count

    def post_patch(self, name: str) -> str:
        response = self.session.post(
            f"{self.base_url}/keys", json={"name": f"{name} [pending]"}, headers=self.headers, timeout=30
        )
        response.raise_for_status()
        plaintext = str(response.json()["key"])
        key_hash = hashlib.sha256(plaintext.encode()).hexdigest()
        response = self.session.patch(
            f"{self.base_url}/keys/{key_hash}", json={"name": name}, headers=self.headers, timeout=30
        )
        response.raise_for_status()
        return plaintext

    def bare_post_patch(self, names: list[str]) -> float:
        """POST + PATCH per name, ``concurrency`` names at a time: seconds."""
        started = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(self.post_patch, names))
        return time.perf_counter() - started


def medians(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each contender's median time (each returns its own seconds), taken in turns, round by round, so that a
    machine's drift affects them alike; the order is reversed every other round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for number in range(rounds):
        order = list(contenders.items())
        if number % 2:
            order.reverse()
        for name, contender in order:
            times[name].append(contender())
    return {name: statistics.median(values) for name, values in times.items()}


def label(latency: float) -> str:
    return f"{latency * 1000:.0f} ms per request"
