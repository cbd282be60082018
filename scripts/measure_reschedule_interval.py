"""Measure how short a reschedule-mode sensor's poke interval can be on a real scheduler.

Runs ``deploy_reschedule_every_<N>s`` (``tests/deployment_dags/reschedule_probe_dags.py``: four
reschedule-mode ``OpenRouterKeyUsageSensor`` tasks, each poking until its key has spent about ten intervals'
worth) ``--runs`` times for each interval, all runs of all intervals at once, on the deployment of
``scripts/deployment.py`` (started here unless ``--home`` names a running one), and prints for each interval
how many sensor tasks Airflow failed. A failure there is Airflow's scheduler race (apache/airflow#71172): a
poke's "finished" event reaches the scheduler after the task was queued again for its next poke.
``RESCHEDULE_MIN_INTERVAL`` in the sensor comes from this.

    python scripts/measure_reschedule_interval.py [--runs 3] [--home DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

from scripts.deployment import EXAMPLE_DAGS, SPEND_PER_SECOND, Deployment  # noqa: E402

with warnings.catch_warnings():
    # The DAG file warns about its own short intervals: they are what is measured here.
    warnings.simplefilter("ignore")
    from tests.deployment_dags.reschedule_probe_dags import RESCHEDULE_INTERVALS, WATCHED

POKES = 10


def measure(dep: Deployment, runs: int) -> dict[int, Counter[str]]:
    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

    fake = LocalOpenRouterControl(dep.fake_url)
    started: list[tuple[int, str, str]] = []
    for run in range(runs):
        for interval in RESCHEDULE_INTERVALS:
            prefix = f"probe-{interval}s-{run}-{time.time_ns()}"
            usd = SPEND_PER_SECOND * interval * POKES
            for n in range(WATCHED):
                # The limit above the threshold: a key stops spending at its limit.
                fake.add_key(f"{prefix}-{n}", limit=usd + 5)
            dag_id = f"deploy_reschedule_every_{interval}s"
            started.append((interval, dag_id, dep.trigger(dag_id, conf={"prefix": prefix, "usd": usd})))
    outcome: dict[int, Counter[str]] = {interval: Counter() for interval in RESCHEDULE_INTERVALS}
    for interval, dag_id, run_id in started:
        dep.wait_run(dag_id, run_id, timeout=900)
        for ti in dep.task_instances(dag_id, run_id):
            outcome[interval][str(ti["state"])] += 1
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--home", type=Path, help="a running deployment's home (default: start one)")
    args = parser.parse_args()
    if args.home:
        dep = Deployment.load(args.home.resolve())
        outcome = measure(dep, args.runs)
    else:
        with tempfile.TemporaryDirectory(prefix="openrouter-measure-") as tmp:
            Path(tmp).chmod(0o755)
            dags = sorted(EXAMPLE_DAGS.glob("*.py")) + sorted(
                (ROOT / "tests" / "deployment_dags").glob("*.py")
            )
            dep = Deployment(home=Path(tmp) / "home", dag_files=dags)
            try:
                dep.start()
                outcome = measure(dep, args.runs)
            finally:
                dep.stop()
    print(f"{'interval':>9} {'sensor tasks':>13} {'failed':>7}  states")
    for interval, states in outcome.items():
        total = sum(states.values())
        print(f"{interval:>8}s {total:>13} {states['failed']:>7}  {dict(states)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
