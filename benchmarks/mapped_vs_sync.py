"""Provisioning tenants in a real Airflow: one mapped ``CreateApiKeyOperator`` task per tenant against one
``SyncApiKeysOperator`` task, both on the same deployment in the same run.

The deployment is ``scripts/deployment.py``'s (PostgreSQL, Redis, API server, scheduler, DAG processor,
triggerer, Celery workers, the local OpenRouter in its own process), started in a temporary home with only
the two DAGs of ``benchmarks/dags/mapped_vs_sync_dags.py`` and stopped at the end whatever happens. Each DAG
reads the same ``--tenants`` rows (fresh names under its own prefix) and delivers each new key to an Airflow
Variable of its own. Each DAG first runs once with one tenant (the first tasks on fresh workers are not
measured); then, ``--repeats`` times, the sync DAG runs and then the mapped DAG, the keys of each deleted
after it, so each measured run starts from an empty account.

A run's wall time is the API's ``queued_at`` (the trigger) to ``end_date`` (success). A run counts only if
every task instance succeeded and the account then holds exactly one live key under each tenant name and
nothing else under the prefix, and each tenant's Variable holds that key's plaintext (checked by hash), so a
run that skipped work cannot look fast. Printed: both wall times, their ratio, the task instances of each run
and the parallelism the deployment offers. Run it alone: the machine's other load slows the 200 task
processes far more than the one sync task.

Run: ``python benchmarks/mapped_vs_sync.py [--tenants 200] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import hashlib
import inspect
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks" / "dags")]

from mapped_vs_sync_dags import (  # noqa: E402
    MAPPED_DAG_ID,
    MAPPED_PREFIX,
    SYNC_DAG_ID,
    SYNC_PREFIX,
    variable_name,
)

from scripts.deployment import WORKER_CONCURRENCY, WORKERS, Deployment  # noqa: E402

DAG_FILE = ROOT / "benchmarks" / "dags" / "mapped_vs_sync_dags.py"


@dataclass
class Result:
    dag_id: str
    seconds: float
    task_instances: int
    peak_concurrency: int
    # Each task instance's own run time (start to end date, Airflow's start-up of a task included), sorted.
    task_seconds: list[float]
    delivered: int


def _instant(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def peak_concurrency(tis: list[dict[str, Any]]) -> int:
    """The most task instances that ran at the same moment (from their start and end dates)."""
    edges = sorted(
        (_instant(ti[field]), step) for ti in tis for field, step in (("start_date", 1), ("end_date", -1))
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run_dag(dep: Deployment, dag_id: str, prefix: str, tenants: int, timeout: float) -> Result:
    run_id = dep.trigger(dag_id, conf={"count": tenants})
    deadline = time.monotonic() + timeout
    while (run := dep.dag_run(dag_id, run_id))["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id}: not finished after {timeout:.0f} s (state {run['state']})")
        time.sleep(0.25)
    tis = dep.task_instances(dag_id, run_id)
    states = Counter(str(ti["state"]) for ti in tis)
    if run["state"] != "success" or set(states) != {"success"}:
        raise RuntimeError(f"{dag_id}: run {run['state']}, task instances {dict(states)}")
    seconds = (_instant(run["end_date"]) - _instant(run["queued_at"])).total_seconds()
    durations = sorted((_instant(ti["end_date"]) - _instant(ti["start_date"])).total_seconds() for ti in tis)
    return Result(
        dag_id,
        seconds,
        len(tis),
        peak_concurrency(tis),
        durations,
        delivered_keys(dep, prefix, tenants),
    )


def delivered_keys(dep: Deployment, prefix: str, tenants: int) -> int:
    """The tenants with exactly one live key of their name whose plaintext is in their Variable; raises
    unless that is every tenant and nothing else is under the prefix."""
    from cryptography.fernet import Fernet

    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

    names = {f"{prefix}{n:05d}" for n in range(tenants)}
    keys = LocalOpenRouterControl(dep.fake_url).keys()
    keys = [k for k in keys if k["name"].startswith(prefix)]
    by_name = Counter(k["name"] for k in keys)
    live = {k["name"]: k["hash"] for k in keys if not k["disabled"]}
    variables = dict(
        dep.sql(
            "SELECT key, val FROM variable WHERE key = ANY(%s)",
            ([variable_name(name) for name in names],),
        )
    )
    fernet = Fernet(dep.fernet_key.encode())
    delivered = 0
    for name in names:
        value = variables.get(variable_name(name))
        if by_name[name] != 1 or name not in live or value is None:
            continue
        plaintext = fernet.decrypt(value.encode()).decode()
        delivered += hashlib.sha256(plaintext.encode()).hexdigest() == live[name]
    strays = sorted(set(by_name) - names)
    if delivered != tenants or strays:
        raise RuntimeError(
            f"{prefix}*: {delivered} of {tenants} tenants have one live, delivered key; "
            f"{len(keys)} keys under the prefix; not a tenant's: {strays[:5]}"
        )
    return delivered


def delete_keys(dep: Deployment, prefix: str) -> None:
    import requests

    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

    control = LocalOpenRouterControl(dep.fake_url)
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {control.management_key}"
        for key in control.keys():  # noqa: SIM118
            if key["name"].startswith(prefix):
                session.delete(f"{dep.fake_url}/keys/{key['hash']}", timeout=30).raise_for_status()


def median(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.seconds)[len(results) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each DAG; the median is printed")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each run may take")
    args = parser.parse_args()
    if args.tenants < 1 or args.repeats < 1:
        parser.error("--tenants and --repeats must be at least 1")

    from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

    sync_workers = inspect.signature(SyncApiKeysOperator).parameters["max_workers"].default
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="openrouter-bench-") as tmp:
        # As root, PostgreSQL runs as another user, who must reach its data directory in here.
        Path(tmp).chmod(0o755)
        dep = Deployment(home=Path(tmp) / "home", dag_files=[DAG_FILE], dags_paused_at_creation=False)
        atexit.register(dep.stop)
        try:
            started = time.monotonic()
            dep.start()
            print(f"deployment up in {time.monotonic() - started:.0f} s", flush=True)
            # A warm-up run of each with one tenant: the first tasks on fresh workers are not measured.
            for dag_id, prefix in ((SYNC_DAG_ID, SYNC_PREFIX), (MAPPED_DAG_ID, MAPPED_PREFIX)):
                run_dag(dep, dag_id, prefix, 1, args.timeout)
                delete_keys(dep, prefix)
            runs: dict[str, list[Result]] = {SYNC_DAG_ID: [], MAPPED_DAG_ID: []}
            for _ in range(args.repeats):
                for dag_id, prefix in ((SYNC_DAG_ID, SYNC_PREFIX), (MAPPED_DAG_ID, MAPPED_PREFIX)):
                    result = run_dag(dep, dag_id, prefix, args.tenants, args.timeout)
                    print(f"{dag_id}: {result.seconds:.1f} s", flush=True)
                    runs[dag_id].append(result)
                    delete_keys(dep, prefix)
        finally:
            dep.stop()
            atexit.unregister(dep.stop)
        left = dep.running()
        if left:
            print(f"still running after stop: {left}", file=sys.stderr)
            return 1
    sync, mapped = (median(runs[dag_id]) for dag_id in (SYNC_DAG_ID, MAPPED_DAG_ID))
    of = f"median of {args.repeats}, " if args.repeats > 1 else ""
    mapped_task = mapped.task_seconds[len(mapped.task_seconds) // 2]
    print(
        f"real Airflow, {args.tenants} tenants, Variable delivery: mapped CreateApiKeyOperator "
        f"{mapped.seconds:.1f} s ({mapped.task_instances} task instances of {mapped_task:.1f} s median, at "
        f"most {mapped.peak_concurrency} at once) vs one SyncApiKeysOperator {sync.seconds:.1f} s "
        f"({sync.task_instances} task instances, the longest {sync.task_seconds[-1]:.1f} s) -> mapped/sync "
        f"{mapped.seconds / sync.seconds:.1f}x; {mapped.delivered} and {sync.delivered} delivered keys "
        f"checked; {of}trigger to success from the API; {WORKERS} Celery workers x {WORKER_CONCURRENCY} "
        f"slots, sync max_workers {sync_workers}, {os.cpu_count()} CPUs, load average {load:.1f} before"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
