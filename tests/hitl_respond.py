"""Answer a human-in-the-loop request the way a person in the Airflow UI does, while ``dags test`` waits.

Run in a process of its own with the Airflow home's environment::

    python -m tests.hitl_respond DAG_ID TASK_ID OPTION [--timeout SECONDS]

It waits until the task has asked (its HITL detail row exists, unanswered), prints what the approver is shown
(subject and body, as JSON on a line starting with ``HITL-SHOWN``), then responds through the handler of the
REST endpoint the UI calls (``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``), with the same
payload model. Only the endpoint's authorization dependency is left out: the responder is an admin of the
simple auth manager.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time

# Airflow logs to stdout too: the line with what the approver saw starts with this.
SHOWN = "HITL-SHOWN"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("task_id")
    parser.add_argument("option")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + args.timeout
    while True:
        with create_session() as session:
            found = session.execute(
                select(HITLDetail, TaskInstance.run_id, TaskInstance.map_index)
                .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
                .where(TaskInstance.dag_id == args.dag_id, TaskInstance.task_id == args.task_id)
                .where(HITLDetail.responded_at.is_(None))
            ).first()
            if found is not None:
                detail, run_id, map_index = found
                print(SHOWN, json.dumps({"subject": detail.subject, "body": detail.body}), flush=True)
                break
        if time.monotonic() > deadline:
            print(f"no request from {args.dag_id}.{args.task_id} in {args.timeout} s", file=sys.stderr)
            return 1
        time.sleep(0.5)

    handler_args = {
        "dag_id": args.dag_id,
        "dag_run_id": run_id,
        "task_id": args.task_id,
        "map_index": map_index,
        "update_hitl_detail_payload": UpdateHITLDetailPayload(chosen_options=[args.option]),
        "user": SimpleAuthManagerUser(username="approver", role="admin"),
    }
    accepted = inspect.signature(update_hitl_detail).parameters
    for attempt in range(20):  # SQLite: the waiting `dags test` may hold the write lock for a moment
        try:
            with create_session() as session:
                update_hitl_detail(
                    **{k: v for k, v in handler_args.items() if k in accepted}, session=session
                )
            return 0
        except OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.5)
    return 1


if __name__ == "__main__":
    sys.exit(main())
