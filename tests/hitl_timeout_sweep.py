"""Do the scheduler's part for a human-in-the-loop task nobody answers, while ``dags test`` waits.

Run in a process of its own with the Airflow home's environment::

    python -m tests.hitl_timeout_sweep DAG_ID TASK_ID [--timeout SECONDS]

From Airflow 3.3 an unanswered task waits in AWAITING_INPUT until the scheduler's timeout sweep
(``SchedulerJobRunner.check_awaiting_input_timeouts``) resolves it once its response timeout has passed: with
its defaults as the answer, or as failed when it has none. ``airflow dags test`` runs no scheduler, so this
process runs that same sweep, Airflow's own code, against the shared metadata database until the task has
asked and been resolved. It exits 0 then, and prints the options the sweep chose.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# Printed before the chosen options (JSON), on a line of its own.
RESOLVED = "HITL-RESOLVED"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("task_id")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    runner = SchedulerJobRunner(job=Job(), executors=[])
    deadline = time.monotonic() + args.timeout
    # Earlier runs of the DAG may have answered requests of their own: the one to resolve is the one waiting.
    waiting = None
    while waiting is None and time.monotonic() < deadline:
        with create_session() as session:
            waiting = session.scalar(
                select(TaskInstance.id).where(
                    TaskInstance.dag_id == args.dag_id,
                    TaskInstance.task_id == args.task_id,
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
            )
        if waiting is None:
            time.sleep(0.5)
    while waiting is not None and time.monotonic() < deadline:
        try:
            runner.check_awaiting_input_timeouts()
        except OperationalError:  # SQLite: the waiting `dags test` may hold the write lock for a moment
            time.sleep(0.5)
            continue
        with create_session() as session:
            state, chosen = session.execute(
                select(TaskInstance.state, HITLDetail.chosen_options)
                .join(HITLDetail, TaskInstance.id == HITLDetail.ti_id)
                .where(TaskInstance.id == waiting)
            ).one()
        if state != TaskInstanceState.AWAITING_INPUT:
            print(RESOLVED, json.dumps(chosen), flush=True)
            return 0
        time.sleep(0.5)
    outcome = "not resolved" if waiting else "never waiting"
    print(f"{args.dag_id}.{args.task_id} was {outcome} in {args.timeout} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
