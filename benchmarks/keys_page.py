"""How fast the "OpenRouter keys" page answers for an account of 10,000 keys, next to one raw walk of it.

The local OpenRouter runs in a process of its own, seeded with ``--keys`` keys at varied limits and usage.
The page's app runs in this process behind a real HTTP server (uvicorn on loopback), as the API server
mounts it, with the auth check replaced by a fixed reader: authentication costs the same per request
whatever the account holds, and this measures what the account's size costs. Printed, each the median of
``--rounds``:

- the baseline: one raw walk of the account (a ``requests`` loop over every page of ``GET /keys``);
- a cold page: the first page of keys with nothing cached (credits, the whole walk, filter, sort, render);
- warm pages: a search, a filter, a sort and a later page, answered from the walk kept for 30 s;

with each one's ratio to the raw walk. The bar: a cold page within 2 s, at most ~1.5x the raw walk.

Run: ``python benchmarks/keys_page.py [--keys 10000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hook_speed import local_openrouter

CONN_ID = "openrouter_bench"
WARM = {
    "search": "q=tenant-01",
    "filter near limit": "show=near_limit",
    "sort by usage": "sort=used&order=desc",
    "page 40": "page=40",
}


def seed(control: Any, count: int) -> None:
    for i in range(count):
        key = control.add_key(
            f"tenant-{i:05d}",
            limit=(None, 5.0, 10.0, 50.0)[i % 4],
            limit_reset=(None, "daily", "weekly", "monthly")[(i // 4) % 4],
            disabled=i % 37 == 0,
        )
        if i % 3:
            control.add_usage(key.hash, round((i % 60) * 0.19, 2))


def serve(app: Any) -> tuple[str, Any]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000, help="keys on the account")
    parser.add_argument("--rounds", type=int, default=5, help="measurements of each (median kept)")
    args = parser.parse_args()

    # The page lists the connections a user may read from the metadata database: give it one.
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="keys-page-bench-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    import requests
    from airflow.api_fastapi.core_api.security import get_user

    from airflow_provider_openrouter.plugins._keys_app import create_app, load_snapshot
    from airflow_provider_openrouter.plugins._keys_view import SnapshotCache
    from airflow_provider_openrouter.testing import LocalOpenRouterControl

    with local_openrouter() as (base_url, management_key):
        control = LocalOpenRouterControl(base_url)
        started = time.perf_counter()
        seed(control, args.keys)
        print(f"seeded {args.keys:,} keys in {time.perf_counter() - started:.1f} s")
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = (
            f'{{"conn_type": "openrouter", "host": "{base_url}", "password": "{management_key}"}}'
        )

        cache = SnapshotCache(load_snapshot)
        app = create_app(cache)
        # Who may read is decided before any of the measured work; a fixed reader stands in for the JWT.
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        reader = SimpleAuthManagerUser(username="bench", role="op")
        app.dependency_overrides[get_user] = lambda: reader
        for route in app.routes:
            sub = getattr(route, "app", None)
            if sub is not None and hasattr(sub, "dependency_overrides"):
                sub.dependency_overrides[get_user] = lambda: reader
        _allow_everyone()
        url, server = serve(app)

        session = requests.Session()
        headers = {"Authorization": f"Bearer {management_key}"}
        page_url = f"{url}/api/connections/{CONN_ID}/keys"

        def raw_walk() -> int:
            count, offset = 0, 0
            while True:
                response = session.get(
                    f"{base_url}/keys",
                    params={"offset": offset, "include_disabled": "true", "include_expired": "true"},
                    headers=headers,
                    timeout=60,
                )
                response.raise_for_status()
                page = response.json()["data"]
                count += len(page)
                if len(page) < 100:
                    return count
                offset += 100

        def page(query: str = "") -> dict[str, Any]:
            response = session.get(f"{page_url}?{query}", timeout=60)
            response.raise_for_status()
            return dict(response.json())

        def timed(fn: Any) -> float:
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

        assert raw_walk() == args.keys
        assert page()["counts"]["all"] == args.keys  # warm-up: imports, templates, connection pools
        raw, cold, html = [], [], []
        warm: dict[str, list[float]] = {name: [] for name in WARM}
        for _ in range(args.rounds):
            raw.append(timed(raw_walk))
            cache.clear()
            cold.append(timed(page))
            for name, query in WARM.items():
                warm[name].append(timed(lambda q=query: page(q)))
            cache.clear()
            html.append(
                timed(lambda: session.get(f"{url}/connections/{CONN_ID}", timeout=60).raise_for_status())
            )
        server.should_exit = True

    base = statistics.median(raw)
    print(f"one raw walk of {args.keys:,} keys (baseline): {base:.3f} s")
    cold_s = statistics.median(cold)
    verdict = "within" if cold_s <= 2.0 else "OVER"
    ratio = cold_s / base
    print(
        f"  cold page (JSON, nothing cached)      {cold_s:.3f} s = {ratio:.2f}x the raw walk ({verdict} 2 s)"
    )
    html_s = statistics.median(html)
    print(f"  cold page (HTML, nothing cached)      {html_s:.3f} s = {html_s / base:.2f}x the raw walk")
    for name, values in warm.items():
        value = statistics.median(values)
        print(f"  warm: {name:<31} {value:.3f} s = {value / base:.2f}x the raw walk")


def _allow_everyone() -> None:
    """The auth manager the security dependency asks: one that lets the fixed reader read connections."""
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = SimpleAuthManager()
    if hasattr(api_app, "_AuthManagerState"):
        api_app._AuthManagerState.instance = manager
    else:  # Airflow 3.1
        api_app.auth_manager = manager  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
