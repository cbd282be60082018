"""The per-key cost of one ``SyncApiKeysOperator`` task as the number of fresh tenants grows, in a real
Airflow.

The deployment is ``scripts/deployment.py``'s (PostgreSQL, Redis, API server, scheduler, DAG processor,
triggerer, Celery workers, the local OpenRouter in its own process, with no simulated spend), started in a
temporary home with the DAGs of ``benchmarks/dags/mapped_vs_sync_dags.py`` and stopped at the end whatever
happens. Only the sync DAG runs: first with one tenant (the first task on a fresh worker is not measured),
then with each ``--sizes`` count of fresh tenants (the keys of the run before are deleted first), each new
key delivered to an Airflow Variable of its own.

A run counts only if every task instance succeeded and the account then holds exactly one live key under
each tenant name and nothing else under the prefix, and each tenant's Variable holds that key's plaintext
(checked by hash). Printed for each size: the sync task's time (its start to end date, Airflow's start-up
of a task included) per key, the CPU time and peak memory of the process that supervised it, and the CPU
time per key of every other process of the deployment; then the per-key cost of the largest size against
the smallest's, measured in the same run. A sample of the
plaintexts issued is then looked for in every log, file, table and the broker (``tests/secret_audit.py``).

Run: ``python benchmarks/sync_scale_deployment.py [--sizes 500 5000]``
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "dags")]

from mapped_vs_sync import DAG_FILE, delete_keys, run_dag  # noqa: E402
from mapped_vs_sync_dags import SYNC_DAG_ID, SYNC_PREFIX  # noqa: E402

from scripts.deployment import Deployment  # noqa: E402

GOAL = 1.15
AUDIT_SAMPLE = 20


@dataclass
class Size:
    tenants: int
    task_seconds: float
    supervisor_cpu: float
    supervisor_peak_mb: float
    task_cpu: float
    # CPU seconds each other process of the deployment spent during the run (the local OpenRouter's too).
    components: dict[str, float]

    @property
    def per_key_ms(self) -> float:
        return 1000 * self.task_seconds / self.tenants

    @property
    def supervisor_ms(self) -> float:
        """The supervisor's CPU time per key."""
        return 1000 * self.supervisor_cpu / self.tenants


class SupervisorSampler:
    """Samples the Celery workers' process trees: a task process is the child of the process that
    supervises it, so a worker's descendant with children of its own is a supervisor."""

    def __init__(self, dep: Deployment, interval: float = 0.5) -> None:
        self._roots = [c for name, c in dep.components.items() if name.startswith("worker-")]
        self._interval = interval
        self._stop = threading.Event()
        # Per process id: the most CPU time seen and the most memory seen.
        self.supervisors: dict[int, tuple[float, float]] = {}
        self.tasks: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SupervisorSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped]

        while not self._stop.wait(self._interval):
            for component in self._roots:
                root = component.process()
                if root is None:
                    continue
                try:
                    descendants = root.children(recursive=True)
                except psutil.Error:
                    continue
                for proc in descendants:
                    try:
                        children = proc.children()
                        times = proc.cpu_times()
                        cpu = times.user + times.system
                        rss = proc.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    if children:
                        old_cpu, old_rss = self.supervisors.get(proc.pid, (0.0, 0.0))
                        self.supervisors[proc.pid] = (max(old_cpu, cpu), max(old_rss, rss))
                    else:
                        self.tasks[proc.pid] = max(self.tasks.get(proc.pid, 0.0), cpu)


def measure(dep: Deployment, tenants: int, timeout: float) -> Size:
    # Only the pool processes that supervise during this run count: a fresh sampler for each size, and the
    # busiest supervisor and task process it saw (the sync task's; its upstream task's are far smaller).
    before = component_cpu(dep)
    with SupervisorSampler(dep) as sampler:
        result = run_dag(dep, SYNC_DAG_ID, SYNC_PREFIX, tenants, timeout)
    after = component_cpu(dep)
    busiest = max(sampler.supervisors.values(), default=(0.0, 0.0))
    # The run's longest task instance is the sync task (its upstream one only makes the tenants' rows).
    return Size(
        tenants,
        result.task_seconds[-1],
        busiest[0],
        busiest[1],
        max(sampler.tasks.values(), default=0.0),
        {name: after[name] - before.get(name, 0.0) for name in after},
    )


def component_cpu(dep: Deployment) -> dict[str, float]:
    """CPU seconds so far of each component but the workers (sampled apart): its process, the children it
    has waited for, and those still running."""
    import psutil

    seconds: dict[str, float] = {}
    for name, component in dep.components.items():
        proc = component.process()
        if proc is None or name.startswith("worker-"):
            continue
        try:
            times = proc.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
        seconds[name] = total
    return seconds


def audit(dep: Deployment, sample: int) -> int:
    """Looks for a sample of the issued plaintexts (and the management key) everywhere; the hits found."""
    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl
    from tests import secret_audit

    control = LocalOpenRouterControl(dep.fake_url)
    issued = control.issued_plaintexts
    secrets = [*random.sample(issued, min(sample, len(issued))), control.management_key]
    dep.sql("CHECKPOINT")
    logs = {
        path.name: path.read_text(errors="replace")
        for path in dep.logs_dir.glob("*.log")
        if path.name != "openrouter.log"  # the local OpenRouter prints its own management key on purpose
    }
    report = secret_audit.audit_deployment(
        secrets,
        component_logs=logs,
        airflow_home=dep.airflow_home,
        dsn=dep.dsn,
        pgdata=dep.pgdata,
        redis_port=dep.ports["redis"],
    )
    for hit in report.hits:
        print(f"secret found: {hit}", file=sys.stderr)
    return len(report.hits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000], help="fresh tenants per run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each run may take")
    parser.add_argument("--audit-sample", type=int, default=AUDIT_SAMPLE, help="plaintexts looked for")
    args = parser.parse_args()
    if min(args.sizes) < 1:
        parser.error("--sizes must be at least 1")

    load = os.getloadavg()[0]
    sizes: list[Size] = []
    with tempfile.TemporaryDirectory(prefix="openrouter-bench-") as tmp:
        # As root, PostgreSQL runs as another user, who must reach its data directory in here.
        Path(tmp).chmod(0o755)
        # No simulated spend: the local OpenRouter applies it to every key of the account on each request,
        # a cost that grows with the account and is no part of what is measured here.
        dep = Deployment(
            home=Path(tmp) / "home", dag_files=[DAG_FILE], dags_paused_at_creation=False, spend_per_second=0.0
        )
        atexit.register(dep.stop)
        try:
            started = time.monotonic()
            dep.start()
            print(f"deployment up in {time.monotonic() - started:.0f} s", flush=True)
            run_dag(dep, SYNC_DAG_ID, SYNC_PREFIX, 1, args.timeout)
            for tenants in args.sizes:
                delete_keys(dep, SYNC_PREFIX)
                size = measure(dep, tenants, args.timeout)
                sizes.append(size)
                print(
                    f"{tenants} fresh tenants: sync task {size.task_seconds:.1f} s, "
                    f"{size.per_key_ms:.1f} ms/key; its supervisor {size.supervisor_cpu:.1f} s CPU "
                    f"({size.supervisor_ms:.2f} ms/key), at most {size.supervisor_peak_mb:.0f} MB; "
                    f"its task process {size.task_cpu:.1f} s CPU; CPU per key elsewhere: "
                    + ", ".join(
                        f"{name} {1000 * cpu / tenants:.1f} ms"
                        for name, cpu in sorted(size.components.items())
                    ),
                    flush=True,
                )
            hits = audit(dep, args.audit_sample)
        finally:
            dep.stop()
            atexit.unregister(dep.stop)
        left = dep.running()
        if left:
            print(f"still running after stop: {left}", file=sys.stderr)
            return 1
    small, large = min(sizes, key=lambda s: s.tenants), max(sizes, key=lambda s: s.tenants)
    ratio = large.per_key_ms / small.per_key_ms
    print(
        f"real Airflow, one SyncApiKeysOperator task, Variable delivery: {large.tenants} fresh tenants "
        f"{large.per_key_ms:.1f} ms/key vs {small.tenants} fresh tenants {small.per_key_ms:.1f} ms/key -> "
        f"{ratio:.2f}x (goal at most {GOAL}x); supervisor CPU {large.supervisor_ms:.2f} vs "
        f"{small.supervisor_ms:.2f} ms/key; secret audit of {args.audit_sample} plaintexts and the "
        f"management key: {hits} found; {os.cpu_count()} CPUs, load average {load:.1f} before"
    )
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
