"""How fast OpenRouterHook talks to OpenRouter, next to a raw ``requests`` loop and the official SDK.

Everything runs against one local OpenRouter, served from a separate process so that it does not share this
process's interpreter lock; all contenders are measured in the same run, interleaved round by round, so that
a noisy machine affects them alike, and each ratio is the median of per-round ratios. Printed:

- the local OpenRouter's own capacity (a bare ``http.client`` loop): the ceiling, far above every contender;
- ``get_key`` calls per second: the hook, a raw ``requests.Session().get(...).json()`` loop, and the official
  ``openrouter`` SDK, with the hook's ratio to each;
- walking 10,000 keys (100 pages): the hook's ``list_keys()`` against a raw paging loop, with the peak memory
  each takes (tracemalloc) next to what one page of keys takes;
- the same walk with every request answered after each ``--latency`` (0 and 50 ms: loopback, and a real
  network): the hook against a raw sequential walk and a raw walk with as many pages in flight as the hook's
  connection allows (``pages_in_flight``, 8 by default).

Run: ``python benchmarks/hook_speed.py [--seconds 1.0] [--rounds 5] [--keys 10000] [--latency 0,50]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

from _floors import Floors, label, medians, parse_latencies, set_latency

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@contextlib.contextmanager
def local_openrouter() -> Iterator[tuple[str, str]]:
    """Serve a local OpenRouter from a child process; yield (base URL, management key)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_openrouter.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        values: dict[str, str] = {}
        assert proc.stdout is not None
        while "management_key" not in values:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the local OpenRouter did not start")
            name, sep, value = line.strip().partition("=")
            if sep:
                values[name] = value
        yield values["base_url"], values["management_key"]
    finally:
        proc.terminate()
        proc.wait(10)


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()  # warm: connection opened, code paths loaded
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def interleaved(
    contenders: dict[str, Callable[[], Any]], seconds: float, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Calls/s of each contender, measured round-robin: the medians, and every round's figures."""
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        order = list(contenders.items())
        if round_number % 2:
            order.reverse()  # neither goes first every time
        for name, fn in order:
            results[name].append(rate(fn, seconds))
    return {name: statistics.median(values) for name, values in results.items()}, results


def ratio(results: dict[str, list[float]], top: str, bottom: str) -> float:
    """The median of the per-round ratios: each compares two measurements taken moments apart."""
    return statistics.median(a / b for a, b in zip(results[top], results[bottom], strict=True))


def peak_memory(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per contender (median kept)")
    parser.add_argument("--keys", type=int, default=10_000, help="keys to walk")
    parser.add_argument("--latency", default="0,50", help="milliseconds per request, comma-separated")
    args = parser.parse_args()

    import requests
    from openrouter import OpenRouter

    from airflow_provider_openrouter.testing import LocalOpenRouterControl
    from airflow_provider_openrouter.testing._capacity import measure_capacity

    with local_openrouter() as (base_url, management_key):
        control = LocalOpenRouterControl(base_url)
        key_hash = control.add_key("benchmark").hash

        os.environ["AIRFLOW_CONN_OPENROUTER_BENCH"] = (
            f'{{"conn_type": "openrouter", "host": "{base_url}", "password": "{management_key}"}}'
        )
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        hook = OpenRouterHook("openrouter_bench")
        headers = {"Authorization": f"Bearer {management_key}"}
        session = requests.Session()
        sdk = OpenRouter(api_key=management_key, server_url=base_url)

        def raw_get() -> Any:
            response = session.get(f"{base_url}/keys/{key_hash}", headers=headers, timeout=30)
            response.raise_for_status()
            return response.json()["data"]

        # The fake's own ceiling, measured from this process with the thinnest client there is.
        capacity = statistics.median(
            measure_capacity(args.seconds, fake=_Remote(base_url, management_key))  # type: ignore[arg-type]
            for _ in range(3)
        )
        print(f"local OpenRouter capacity (http.client, keep-alive): {capacity:,.0f} req/s")

        speeds, rounds = interleaved(
            {
                "hook.get_key": lambda: hook.get_key(key_hash),
                "raw requests.Session": raw_get,
                "official SDK": lambda: sdk.api_keys.get(hash=key_hash),
            },
            args.seconds,
            args.rounds,
        )
        for name, value in speeds.items():
            print(f"  {name:<22} {value:>8,.0f} calls/s (median of {args.rounds})")
        vs_raw = ratio(rounds, "hook.get_key", "raw requests.Session")
        vs_sdk = ratio(rounds, "hook.get_key", "official SDK")
        print(f"get_key: hook / raw requests = {vs_raw:.2f}x (goal 1.0x)")
        print(f"get_key: hook / official SDK = {vs_sdk:.2f}x (goal 4x)")

        # 10,000 keys: 100 pages of 100.
        existing = 1
        for index in range(existing, args.keys):
            control.add_key(f"tenant-{index:05d}")

        def raw_walk() -> int:
            count, offset = 0, 0
            while True:
                response = session.get(
                    f"{base_url}/keys",
                    params={"offset": offset, "include_disabled": "false"},
                    headers=headers,
                    timeout=30,
                )
                response.raise_for_status()
                page = response.json()["data"]
                count += len(page)
                if len(page) < 100:
                    return count
                offset += 100

        def hook_walk() -> int:
            return sum(1 for _ in hook.list_keys())

        assert hook_walk() == raw_walk() == args.keys, "both walks must see every key"
        walks, walk_rounds = interleaved(
            {"hook.list_keys": hook_walk, "raw paging loop": raw_walk}, args.seconds * 2, max(3, args.rounds)
        )
        hook_s, raw_s = 1 / walks["hook.list_keys"], 1 / walks["raw paging loop"]
        print(
            f"walk {args.keys:,} keys ({args.keys // 100} pages): hook {hook_s:.3f} s, raw {raw_s:.3f} s "
            f"(medians) -> hook / raw = {ratio(walk_rounds, 'hook.list_keys', 'raw paging loop'):.2f}x "
            f"(median of per-round ratios; ratio of medians {raw_s / hook_s:.2f}x; goal 0.9x)"
        )

        hook_peak = peak_memory(hook_walk)
        raw_peak = peak_memory(raw_walk)
        one_page = peak_memory(lambda: list(_first_page(hook)))
        all_keys = peak_memory(lambda: list(hook.list_keys()))
        print(
            f"peak memory walking {args.keys:,} keys: hook {hook_peak / 1024:,.0f} KiB, raw loop "
            f"{raw_peak / 1024:,.0f} KiB; for scale: fetching one page {one_page / 1024:,.0f} KiB, "
            f"holding all {args.keys:,} keys {all_keys / 1024:,.0f} KiB "
            f"(hook walk = {hook_peak / one_page:.1f}x one page)"
        )

        floors = Floors(base_url, management_key, concurrency=hook._get_config().pages_in_flight)
        for latency in parse_latencies(args.latency):
            set_latency(control, latency)
            _walk_at_latency(hook, floors, latency, args.keys, rounds=5 if latency < 0.01 else 3)
        set_latency(control, 0)


def _walk_at_latency(hook: Any, floors: Floors, latency: float, keys: int, *, rounds: int) -> None:
    """The hook's walk against the raw walks, one page at a time and with pages in flight."""

    def hook_walk() -> float:
        started = time.perf_counter()
        count = sum(1 for _ in hook.list_keys(include_disabled=True, include_expired=True))
        assert count == keys, count
        return time.perf_counter() - started

    def sequential() -> float:
        seconds, count = floors.raw_walk()
        assert count == keys, count
        return seconds

    def in_flight() -> float:
        seconds, count = floors.raw_walk_in_flight()
        assert count == keys, count
        return seconds

    hook_walk()  # warm: connections opened
    times = medians({"hook": hook_walk, "sequential": sequential, "in flight": in_flight}, rounds)
    print(
        f"walk {keys:,} keys at {label(latency)}: hook {times['hook']:.3f} s; floors: raw sequential walk "
        f"{times['sequential']:.3f} s, raw walk with {floors.concurrency} pages in flight "
        f"{times['in flight']:.3f} s -> hook / raw sequential = {times['hook'] / times['sequential']:.2f}x "
        f"(goal at 50 ms <= 0.35x), hook / raw in flight = {times['hook'] / times['in flight']:.2f}x "
        f"(median of {rounds}, in turns)"
    )


def _first_page(hook: Any) -> Iterator[Any]:
    keys = hook.list_keys()
    for index, key in enumerate(keys):
        yield key
        if index == 99:
            return


class _Remote:
    """What ``measure_capacity`` reads from a fake: its base URL and management key."""

    def __init__(self, base_url: str, management_key: str) -> None:
        self.base_url = base_url
        self.management_key = management_key


if __name__ == "__main__":
    main()
