"""1,000 key-usage triggers watching 1,000 keys from one event loop, as one triggerer runs them.

Against a local OpenRouter served from a child process (so the server does not share this interpreter's lock),
the script measures, in one run:

- the floor: the same 1,000 ``GET /keys/{hash}`` through one shared ``aiohttp`` session, all at once;
- the thread baseline: the same GETs through ``asyncio.to_thread`` and one ``requests`` session;
- the triggers: 1,000 :class:`OpenRouterKeyUsageTrigger` tasks whose polls come due at the same moment (their
  common deadline: each polls once more and fires its timeout event), timed from that moment to the last
  event; and the memory they hold while they wait (resident set growth, and Python allocations traced by
  ``tracemalloc`` in a separate pass so that tracing does not slow the timed one).

Both baselines use the connection limit of the hook's shared session (aiohttp's default, 100 connections per
event loop), so all three make the same number of concurrent requests. It also prints what the local
OpenRouter serves on its own. (What importing the sensor costs a DAG file: ``benchmarks/import_time.py``.)

Goals: a trigger round within 2x the floor; at most 30 KB per trigger.

Run: ``python benchmarks/triggers_at_scale.py [--keys 1000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter.testing._capacity import measure_capacity
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

# aiohttp's default per-session connection limit, which the hook's shared session keeps.
CONNECTION_LIMIT = 100
NEVER = 1e9  # the largest threshold allowed, which no key here reaches: every trigger keeps waiting


def progress(stage: str) -> None:
    print(f"  ... {stage}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send this process's stdout (1,000 progress lines per round) to /dev/null; the cost of writing stays."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


# -- baselines ---------------------------------------------------------------------------------------------


async def aiohttp_rounds(urls: list[str], headers: dict[str, str], rounds: int) -> list[float]:
    import aiohttp

    async def get(session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: {response.status}")

    times = []
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(get(session, url) for url in urls))  # warm the pool
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(get(session, url) for url in urls))
            times.append(time.perf_counter() - started)
    return times


async def thread_rounds(urls: list[str], headers: dict[str, str], rounds: int) -> list[float]:
    import requests
    from requests.adapters import HTTPAdapter

    loop = asyncio.get_running_loop()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=CONNECTION_LIMIT)
    loop.set_default_executor(executor)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=CONNECTION_LIMIT))

    def get(url: str) -> None:
        response = session.get(url, headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")

    times = []
    try:
        await asyncio.gather(*(asyncio.to_thread(get, url) for url in urls))
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(asyncio.to_thread(get, url) for url in urls))
            times.append(time.perf_counter() - started)
    finally:
        session.close()
        executor.shutdown(wait=True)
    return times


# -- triggers ----------------------------------------------------------------------------------------------


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).isoformat()


async def trigger_round(
    hashes: list[str], settle: float, *, trace: bool, floor: tuple[list[str], dict[str, str]] | None = None
) -> dict[str, Any]:
    """Start one trigger per key; after their first poll they wait for a common deadline, which makes them all
    poll once more at the same moment and fire. Returns that round's wall time and the memory held, and with
    ``floor=(urls, headers)`` a floor round measured right after it, under the same load on the machine."""
    from airflow_provider_openrouter._transport import _SHARED
    from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger

    loop = asyncio.get_running_loop()
    gc.collect()
    rss_before = rss_bytes()
    if trace:
        tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
    deadline = time.time() + settle
    finished: list[float] = []
    statuses: dict[str, int] = {}

    async def drive(trigger: OpenRouterKeyUsageTrigger) -> None:
        async for event in trigger.run():
            finished.append(time.time())
            status = event.payload["status"]
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    tasks = [
        loop.create_task(
            drive(
                OpenRouterKeyUsageTrigger(
                    key_hash=key_hash,
                    usage_at_least=NEVER,
                    poll_interval=3600,
                    deadline=iso(deadline),
                )
            )
        )
        for key_hash in hashes
    ]
    # Just before the deadline every trigger has polled once and is asleep: what it holds now is its cost.
    await asyncio.sleep(max(0.0, deadline - time.time() - 0.5))
    gc.collect()
    held_rss = rss_bytes() - rss_before
    held_traced = tracemalloc.get_traced_memory()[0] - traced_before if trace else 0
    limits = sorted(
        entry.session.connector.limit
        for per_loop in _SHARED.values()
        for entry in per_loop.values()
        if entry.session.connector is not None
    )
    await asyncio.gather(*tasks)
    if trace:
        tracemalloc.stop()
    paired_floor = min(await aiohttp_rounds(*floor, 1)) if floor else float("nan")
    return {
        "round": max(finished) - deadline,
        "paired_floor": paired_floor,
        "total": time.perf_counter() - started,
        "statuses": statuses,
        "rss_per_trigger": held_rss / len(hashes),
        "traced_per_trigger": held_traced / len(hashes),
        "connection_limits": limits,
    }


async def cold_start(hashes: list[str]) -> float:
    """Triggers whose deadline has passed: each looks its connection up, polls once and fires."""
    from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger

    past = iso(time.time() - 1)
    triggers = [OpenRouterKeyUsageTrigger(key_hash=h, usage_at_least=NEVER, deadline=past) for h in hashes]

    async def drive(trigger: OpenRouterKeyUsageTrigger) -> None:
        async for _ in trigger.run():
            pass

    started = time.perf_counter()
    await asyncio.gather(*(drive(t) for t in triggers))
    return time.perf_counter() - started


# -- resident memory, in a fresh process ---------------------------------------------------------------------


async def _resident_growth(hashes: list[str], settle: float) -> float:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

    # Open the shared session and its connections first: they are the pool's cost, not the triggers'.
    hook = OpenRouterHook()
    await asyncio.gather(*(hook.aget_key(h) for h in hashes[:CONNECTION_LIMIT]))
    result = await trigger_round(hashes, settle, trace=False)
    return float(result["rss_per_trigger"])


def resident_growth_per_trigger(hashes: list[str], settle: float, env: dict[str, str]) -> float:
    """Resident set growth per waiting trigger, measured in a fresh interpreter whose allocator has not yet
    got memory to reuse from earlier rounds."""
    out = subprocess.run(
        [sys.executable, __file__, "--resident-child", str(settle)],
        input="\n".join(hashes),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return float(out.strip().splitlines()[-1])


def resident_child(settle: float) -> None:
    hashes = sys.stdin.read().split()
    import airflow_provider_openrouter.triggers.key_usage  # noqa: F401

    with quiet_stdout():
        growth = asyncio.run(_resident_growth(hashes, settle))
    print(growth)


# -- main --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1000, help="keys watched, one trigger each")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per baseline (median shown)")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds before the common deadline")
    parser.add_argument("--resident-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resident_child is not None:
        resident_child(args.resident_child)
        return

    # Import everything first: a triggerer has, and imports are not what is measured.
    import aiohttp  # noqa: F401
    import requests  # noqa: F401

    import airflow_provider_openrouter._transport
    import airflow_provider_openrouter.hooks.openrouter
    import airflow_provider_openrouter.triggers.key_usage  # noqa: F401

    with LocalOpenRouterProcess() as fake:
        control = fake.control
        print(f"Creating {args.keys} keys on a local OpenRouter in a child process ...", flush=True)
        hashes = [control.add_key(f"bench-tenant-{i:04d}", limit=100.0).hash for i in range(args.keys)]
        os.environ.update(fake.airflow_env())
        headers = {"Authorization": f"Bearer {fake.management_key}", "Accept": "application/json"}
        urls = [f"{fake.base_url}/keys/{h}" for h in hashes]

        capacity_1 = measure_capacity(1.0, base_url=fake.base_url, management_key=fake.management_key)
        capacity_4 = measure_capacity(
            1.0, base_url=fake.base_url, management_key=fake.management_key, clients=4
        )
        progress("floor: shared aiohttp session")
        floor_times = asyncio.run(aiohttp_rounds(urls, headers, args.rounds))
        progress("asyncio.to_thread(requests)")
        threads = statistics.median(asyncio.run(thread_rounds(urls, headers, args.rounds)))

        with quiet_stdout():
            progress("triggers: cold start")
            cold = asyncio.run(cold_start(hashes))
            # Long enough for every trigger's first poll, short enough that the pool's connections are still
            # open at the deadline (aiohttp closes a connection idle for 15 s), as they are for the floor.
            settle = args.settle or min(12.0, max(5.0, 1.5 * cold + 2))
            timed = []
            for number in range(args.rounds):
                progress(f"triggers: round {number + 1} (deadline in {settle:.1f} s)")
                timed.append(asyncio.run(trigger_round(hashes, settle, trace=False, floor=(urls, headers))))
            progress("triggers: memory traced")
            traced = asyncio.run(trigger_round(hashes, settle * 3, trace=True))
        progress("resident memory, fresh process")
        resident = resident_growth_per_trigger(hashes, settle * 1.5, {**os.environ, **fake.airflow_env()})
        progress("floor again")
        floor_times += asyncio.run(aiohttp_rounds(urls, headers, args.rounds))
        floor = statistics.median(floor_times)

    round_time = statistics.median(t["round"] for t in timed)
    paired = statistics.median(t["round"] / t["paired_floor"] for t in timed)
    n = args.keys
    print()
    print(f"{n} triggers watching {n} keys in one event loop (median of {args.rounds} rounds)")
    print(
        f"  local OpenRouter capacity         {capacity_1:8.0f} req/s (1 client), {capacity_4:.0f} req/s (4)"
    )
    print(
        f"  connection limit                  {CONNECTION_LIMIT} per loop (hook's shared session: "
        f"{timed[0]['connection_limits']})"
    )
    print(f"  floor: shared aiohttp session     {floor:8.3f} s  ({n / floor:6.0f} req/s)")
    print(f"  asyncio.to_thread(requests)       {threads:8.3f} s  ({threads / floor:4.1f}x the floor)")
    print(
        f"  triggers, one poll round          {round_time:8.3f} s  ({round_time / floor:4.1f}x the floor; "
        f"goal <= 2x)"
    )
    print(
        f"  same, paired with a floor round   {paired:8.1f}x (median of each round over a floor round run "
        "right after it; goal <= 2x)"
    )
    print(f"  triggers, cold start              {cold:8.3f} s  (connection lookup, first poll, event)")
    print(f"  events per round                  {timed[0]['statuses']}")
    print(
        f"  memory per waiting trigger        {traced['traced_per_trigger'] / 1024:8.1f} KB of Python "
        f"allocations held (tracemalloc; goal <= 30 KB)"
    )
    print(f"  resident set growth per trigger   {resident / 1024:8.1f} KB (fresh process, pool already open)")


if __name__ == "__main__":
    main()
