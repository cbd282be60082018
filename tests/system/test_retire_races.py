"""Retiring rotated-out keys from several task tries at once, each an OS process, one of them killed.

A retire task may run twice at the same moment (two DAG runs, a manual run beside the scheduled one) and be
killed at any instant, then retried. Each key it decides on is one it listed a moment before, so another try
may already have disabled or deleted it. Whatever the interleaving: a key due for retirement ends disabled or
gone as the rule says, a key still in use and every current key are left as they are, and no try that ran to
its end fails for what another try did.

The local OpenRouter is the hard one (its own process, lists that lag behind writes). Every try is forked and
released with the others through a barrier; the seed is printed, ``RETIRE_RACE_SEED=<n>`` replays one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Imported before any fork, so that each try starts in milliseconds.
import airflow_provider_openrouter.operators.retire  # noqa: F401
from airflow_provider_openrouter._claims import retired_name
from airflow_provider_openrouter.testing import HARD
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

FORK = multiprocessing.get_context("fork")
HOUR, DAY = 3600.0, 86400.0
NAMES = 24
GRACE = 3.0  # seconds from a key's retirement moment to its delete, when a grace is set
POLL = 0.2


def _try(conn: str, grace: float, wait: bool, results: str, barrier: Any) -> None:
    """The body of one task try: what Airflow's task runner does around ``execute``."""
    os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"] = conn
    from airflow_provider_openrouter.operators.retire import RetireApiKeysOperator

    op = RetireApiKeysOperator(
        task_id="retire",
        name_prefix="svc-",
        retire_when_idle_for=HOUR,
        retire_deadline=5 * DAY,
        rotation_grace=grace,
        wait=wait,
        poll_interval=POLL,
        asset_alias=None,
    )
    with contextlib.suppress(Exception):
        barrier.wait(timeout=20)
    try:
        outcome: dict[str, Any] = {"ok": True, "result": op.execute({})}
    except BaseException as exc:
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:500]}
    # Written aside and renamed in: a try killed while writing leaves no file rather than a torn one.
    partial = Path(results, f"{os.getpid()}.partial")
    partial.write_text(json.dumps(outcome))
    os.replace(partial, partial.with_suffix(".json"))
    os._exit(0)


@pytest.fixture
def fake() -> Iterator[LocalOpenRouterProcess]:
    with LocalOpenRouterProcess(realism=HARD) as process:
        process.control.seed_keys(150, prefix="other-")
        yield process


def account(fake: LocalOpenRouterProcess, rng: random.Random, *, in_use: bool) -> dict[str, set[str]]:
    """Per name under ``svc-``: its current key and a key rotated out of it, due for retirement (idle or past
    the deadline, some only a moment ago so that a grace still runs) or, with ``in_use``, still in use. The
    hashes by what they should become."""
    control = fake.control
    now = time.time()
    kinds: dict[str, set[str]] = {"current": set(), "due": set(), "in use": set()}
    for index in range(NAMES):
        name = f"svc-{index:02d}"
        kinds["current"].add(control.add_key(name).hash)
        rotated = now - rng.choice([2 * HOUR, 3 * DAY, 6 * DAY])
        uses = [None, rotated + 60, now - 2 * HOUR, now - HOUR - 1] + ([now - 60] if in_use else [])
        used = rng.choice(uses)
        if rotated < now - 5 * DAY or (used is None and not in_use):
            used = rng.choice(uses[1:-1])  # a due key; one past the deadline is due whatever its use
        old = control.add_key(retired_name(name, rotated)).hash
        if used is not None:
            control.set_usage(old, last_used_at=dt.datetime.fromtimestamp(used, dt.timezone.utc))
        past_deadline = now - rotated >= 5 * DAY
        idle = used is not None and now - max(used, rotated) >= HOUR
        kinds["due" if past_deadline or idle else "in use"].add(old)
    return kinds


def run_tries(
    fake: LocalOpenRouterProcess, tries: int, *, grace: float, wait: bool, kill: float | None, workdir: Path
) -> list[dict[str, Any]]:
    """``tries`` tries released at once; the first is SIGKILLed ``kill`` seconds in (when given)."""
    results = workdir / f"results-{time.monotonic_ns()}"
    results.mkdir()
    conn = fake.connection_json(max_retries=2, max_retry_wait=0.2)
    barrier = FORK.Barrier(tries + 1)
    procs = [
        FORK.Process(target=_try, args=(conn, grace, wait, str(results), barrier), daemon=True)
        for _ in range(tries)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=30)
    if kill is not None:
        time.sleep(kill)
        if procs[0].pid is not None and procs[0].is_alive():
            os.kill(procs[0].pid, signal.SIGKILL)
    for proc in procs:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]


@pytest.mark.parametrize(
    ("grace", "wait"),
    [
        pytest.param(0.0, False, id="delete-at-once"),
        pytest.param(GRACE, False, id="disable-then-delete-later"),
        pytest.param(GRACE, True, id="disable-wait-delete"),
    ],
)
def test_tries_at_once_and_one_killed_leave_what_the_rule_says(
    fake: LocalOpenRouterProcess, tmp_path: Path, grace: float, wait: bool
) -> None:
    seed = int(os.environ.get("RETIRE_RACE_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"\nretire race seed {seed}")
    rng = random.Random(seed)
    control = fake.control
    kinds = account(fake, rng, in_use=not wait)  # a waiting try ends only when every such key is gone
    assert kinds["due"], f"seed {seed}: no key is due"

    outcomes = run_tries(fake, 3, grace=grace, wait=wait, kill=rng.uniform(0.0, 0.5), workdir=tmp_path)
    # The killed try's retry, and the next run's (when the first tries did not wait for the deletes).
    time.sleep(grace)
    outcomes += run_tries(fake, 2, grace=grace, wait=wait, kill=None, workdir=tmp_path)

    failed = [o for o in outcomes if not o["ok"]]
    assert not failed, f"seed {seed}: {failed}"
    assert len(outcomes) >= 4, f"seed {seed}: a try that was not killed left no result"
    left = {
        key["hash"]: key for key in control.keys(include_management=False) if key["name"].startswith("svc-")
    }
    assert kinds["current"] <= set(left), f"seed {seed}: a current key was touched"
    assert not any(left[h]["disabled"] for h in kinds["current"]), f"seed {seed}: a current key was disabled"
    assert kinds["in use"] <= set(left), f"seed {seed}: a key still in use was retired"
    assert not any(left[h]["disabled"] for h in kinds["in use"]), f"seed {seed}: a key in use was disabled"
    assert not kinds["due"] & set(left), f"seed {seed}: a due key is left: {kinds['due'] & set(left)}"
