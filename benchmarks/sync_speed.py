"""SyncApiKeysOperator at scale, against baselines measured in the same run on the local OpenRouter.

Each figure is taken with every request answered after each ``--latency`` (0 and 50 ms: loopback, and a real
network, through the local OpenRouter's latency fault):

1. A no-change plan for ``--tenants`` tenants against the floors of one walk of the same keys (``requests``,
   one ``GET /keys`` per page): a raw sequential walk (goal on loopback at most 1.3x, at 50 ms at most 0.4x)
   and a raw walk with as many pages in flight as the hook allows; and the requests the plan sent.
2. Applying ``--creates`` creates with callable delivery at ``--workers`` against a bare concurrent
   ``POST /keys`` loop at the same concurrency (goal on loopback at most 1.5x) and against a bare concurrent
   POST+PATCH loop (the two requests each safe create costs: the claim, then its rename; goal at 50 ms at
   most 1.2x); on loopback also the memory the apply allocated per tenant.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _floors import Floors, label, medians, parse_latencies, set_latency

from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--creates", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=9, help="plan measurements on loopback (3 with latency)"
    )
    parser.add_argument("--latency", default="0,50", help="milliseconds per request, comma-separated")
    args = parser.parse_args()

    with LocalOpenRouterProcess() as fake:
        os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"] = fake.connection_json()
        floors = Floors(fake.base_url, fake.management_key, concurrency=args.workers)
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(floors.post_patch, [f"t-{i:05d}" for i in range(args.tenants)]))
        latencies = parse_latencies(args.latency)
        for latency in latencies:
            set_latency(fake.control, latency)
            _plan(fake, floors, args, latency)
        for index, latency in enumerate(latencies):
            set_latency(fake.control, latency)
            _apply(fake, floors, args, latency, prefix=f"l{index}", memory=latency == 0)
        set_latency(fake.control, 0)


def _plan(fake: LocalOpenRouterProcess, floors: Floors, args: argparse.Namespace, latency: float) -> None:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

    tenants = [{"name": f"t-{i:05d}"} for i in range(args.tenants)]
    op = SyncApiKeysOperator(task_id="bench", tenants=tenants, name_prefix="t-", dry_run=True)
    op.execute({})  # type: ignore[arg-type]  # warm: the first plan pays the process's imports
    rounds = args.rounds if latency == 0 else 3
    plans: list[dict[str, Any]] = []

    def plan() -> float:
        started = time.perf_counter()
        plans.append(op.execute({}))  # type: ignore[arg-type]
        return time.perf_counter() - started

    fake.control.clear_requests()
    plan()
    sent = fake.control.requests
    kinds = sorted({f"{r.method} {r.path}" for r in sent})
    times = medians(
        {
            "plan": plan,
            "sequential": lambda: floors.raw_walk()[0],
            "in flight": lambda: floors.raw_walk_in_flight()[0],
        },
        rounds,
    )
    assert all(p["counts"]["unchanged"] == args.tenants for p in plans), plans[-1]["counts"]
    in_flight = OpenRouterHook().get_connection("openrouter_default").extra_dejson.get("pages_in_flight", 8)
    print(
        f"no-change plan, {args.tenants:,} tenants, {label(latency)}: {times['plan']:.2f} s; floors: raw "
        f"sequential walk {times['sequential']:.2f} s, raw walk with {floors.concurrency} pages in flight "
        f"{times['in flight']:.2f} s -> plan / raw sequential = {times['plan'] / times['sequential']:.2f}x "
        f"(goal <= 1.3x on loopback, <= 0.4x at 50 ms), plan / raw in flight = "
        f"{times['plan'] / times['in flight']:.2f}x (hook's pages in flight: {in_flight}; median of "
        f"{rounds}, in turns); {len(sent)} requests per plan: {', '.join(kinds)}"
    )


def _apply(
    fake: LocalOpenRouterProcess,
    floors: Floors,
    args: argparse.Namespace,
    latency: float,
    *,
    prefix: str,
    memory: bool,
) -> None:
    from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

    def post(name: str) -> str:
        response = floors.session.post(
            f"{fake.base_url}/keys", json={"name": name}, headers=floors.headers, timeout=30
        )
        response.raise_for_status()
        return str(response.json()["key"])

    def bare(tag: str) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(post, [f"{tag}-{i:05d}" for i in range(args.creates)]))
        return time.perf_counter() - started

    delivered = [0]

    def deliver(created: Any, context: Any) -> None:
        # A real destination is a secret store outside the process: kept here, the plaintexts would count as
        # the operator's memory.
        if not created.plaintext:
            raise ValueError("no plaintext")
        delivered[0] += 1

    def ours(tag: str, *, traced: bool, count: int = args.creates) -> tuple[float, int]:
        rows = [{"name": f"{tag}-{i:05d}", "limit": 1} for i in range(count)]
        op = SyncApiKeysOperator(
            task_id="bench",
            tenants=rows,
            name_prefix=f"{tag}-",
            deliver_to_callable=deliver,
            max_workers=args.workers,
        )
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        result = op.execute({})  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        peak = 0
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert result["applied"]["counts"]["create"] == count, result["applied"]
        del result  # what the task returns is counted in the peak above, and then goes to XCom
        return elapsed, peak

    def bare_two(tag: str) -> float:
        return floors.bare_post_patch([f"{tag}-{i:05d}" for i in range(args.creates)])

    first = peak = 0
    if memory:
        # Memory first, while Airflow's secrets masker holds next to nothing, as in a fresh task process. A
        # first small apply pays what a process pays once (imports: requests, the secrets backends, ...),
        # which is no tenant's: the figure per tenant is the second apply's, the first is shown beside it.
        first = ours(f"{prefix}warm", traced=True, count=10)[1]
        peak = ours(f"{prefix}mem", traced=True)[1]
    rounds = 2 if latency == 0 else 1
    b = min(bare(f"{prefix}bare{r}") for r in range(rounds))
    b2 = min(bare_two(f"{prefix}two{r}") for r in range(rounds))
    # Timed without tracemalloc (it slows Python down several times).
    o = min(ours(f"{prefix}sync{r}", traced=False)[0] for r in range(rounds))
    account = len(fake.control.keys())
    print(
        f"apply {args.creates:,} creates (callable delivery, {args.workers} workers, account of {account:,} "
        f"keys), {label(latency)}: {o:.2f} s; floors: bare concurrent POST loop {b:.2f} s -> {o / b:.2f}x "
        f"(goal <= 1.5x on loopback); bare concurrent POST+PATCH loop at {args.workers} (the two requests a "
        f"safe create needs) {b2:.2f} s -> {o / b2:.2f}x (goal <= 1.2x at 50 ms; best of {rounds})"
    )
    if memory:
        print(
            f"apply {args.creates:,} creates: peak memory {peak / args.creates / 1024:.2f} KB per tenant "
            "(goal <= 2 KB; tracemalloc peak during execute, beyond the input rows; includes the validated "
            "rows, the returned plan and the secrets masker's share); a process's first apply also pays "
            f"{first / 1024 / 1024:.1f} MB once (imports)"
        )


if __name__ == "__main__":
    main()
