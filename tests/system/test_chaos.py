"""Chaos: the key operators in separate OS processes, at the same moment, killed, timed out and lied to.

The local OpenRouter runs in its own process. Every task try is a process of its own (forked, so that it
starts in milliseconds), released with the others through a barrier, and may be SIGKILLed, SIGTERMed (then
killed, as Airflow's supervisor does) or hit by ``execution_timeout`` at a random moment, while the fake
injects faults: answers slower than the client's timeout that still land, 5xx after the change was made,
connections dropped after the change, trickling answers. Killed and failed tries are retried the way Airflow
retries them (a new process, a higher ``try_number``, after a delay), then the task runs once more (the
"next run"). Then the account and the destinations are counted.

The local OpenRouter is the hard one (:data:`~airflow_provider_openrouter.testing.HARD`): lists ordered by
``created_at`` with ties in any order, a write reaching lists only after a lag, a create stamped before it
commits, trimmed microsecond stamps. The account holds a few pages of other keys, every task try's clock is
off by up to a second either way, and a retry may come before a killed try's claim could be collected.
``OPENROUTER_CHAOS_REALISM=default`` runs the same trials against the kind local OpenRouter.

A "Variable" here is a file written by ``deliver_to_callable`` (the execution API that writes real Variables
needs a running Airflow; the real-Airflow tests do that). Seeds are printed; ``CHAOS_SEED=<n>`` replays one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imported here, before any fork, so that each task-try process starts in milliseconds.
import airflow.sdk.execution_time.timeout  # noqa: F401
import pytest
import requests  # noqa: F401

import airflow_provider_openrouter._provisioning
import airflow_provider_openrouter.hooks.openrouter
import airflow_provider_openrouter.operators.api_key  # noqa: F401
from airflow_provider_openrouter.testing import HARD, DropAfterCommit, Latency, Status, Trickle, clock_skew
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing import Fault, LocalOpenRouterControl

LEASE = 3.0  # claim_lease of every create; collectable after LEASE * 1.5
TIMEOUT = 0.5  # the connection's timeout; max_retries 2, max_retry_wait 0.2: a call lasts at most 1.9 s
PENDING = re.compile(r"^(?P<name>.+) \[pending delivery [0-9a-f]{10} until \d+\]$")
FORK = multiprocessing.get_context("fork")
# Other keys on the account, so that every walk and every check reads several pages.
FILLER_KEYS = 250
# How far a task try's clock may be off, either way.
MAX_SKEW = 1.0


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------- the task try ---


class _TI:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        pass


@dataclass(frozen=True)
class Try:
    """One try of one task: what it runs, and how it dies (if it does)."""

    task: str
    name: str
    kind: str  # create / update / delete
    if_exists: str = "fail"
    try_number: int = 1
    kill: str | None = None  # sigkill / sigterm / timeout
    kill_after: float = 0.0
    skew: float = 0.0  # seconds this try's clock is off


def _run_try(spec: Try, conn: str, workdir: str, barrier: Any) -> None:
    """The body of a task-try process: what Airflow's task runner does around ``execute``."""
    os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"] = conn
    clock_skew.install(spec.skew)
    from airflow.sdk.execution_time.timeout import timeout

    from airflow_provider_openrouter.operators.api_key import (
        CreateApiKeyOperator,
        DeleteApiKeyOperator,
        UpdateApiKeyOperator,
    )

    store = Path(workdir, "store")
    result_file = Path(workdir, "results", f"{spec.task}.{spec.try_number}.{os.getpid()}.json")

    def deliver(created: Any, context: Any) -> None:
        target = store / spec.name
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(created.plaintext)
        os.replace(tmp, target)  # atomic, as a Variable write is
        with Path(workdir, "deliveries.log").open("a") as log:
            log.write(json.dumps({"name": spec.name, "hash": created.hash, "at": time.time()}) + "\n")

    op: Any
    if spec.kind == "create":
        op = CreateApiKeyOperator(
            task_id=spec.task,
            name=spec.name,
            limit=5,
            if_exists=spec.if_exists,
            deliver_to_callable=deliver,
            claim_lease=LEASE,
        )
    elif spec.kind == "update":
        op = UpdateApiKeyOperator(task_id=spec.task, key_name=spec.name, limit=42, disabled=False)
    else:
        op = DeleteApiKeyOperator(task_id=spec.task, key_name=spec.name)

    def on_term(signum: int, frame: Any) -> None:
        op.on_kill()  # what Airflow's task runner does on SIGTERM; its supervisor SIGKILLs later

    signal.signal(signal.SIGTERM, on_term)
    if barrier is not None:
        with contextlib.suppress(Exception):
            barrier.wait(timeout=20)
    outcome: dict[str, Any]
    try:
        if spec.kill == "timeout":
            with timeout(max(1, round(spec.kill_after))):
                result = op.execute({"ti": _TI(spec.try_number)})
        else:
            result = op.execute({"ti": _TI(spec.try_number)})
        outcome = {"ok": True, "result": result}
    except BaseException as exc:
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:300]}
    # Written aside and renamed in, so a kill during the write leaves no file rather than a
    # torn one: a try that left no file was killed, whatever it had done.
    partial = result_file.with_suffix(".partial")
    partial.write_text(json.dumps({"task": spec.task, "name": spec.name, "try": spec.try_number, **outcome}))
    os.replace(partial, result_file)
    os._exit(0)


def run_tries(tries: list[Try], conn: str, workdir: Path, rng: random.Random) -> None:
    """Start ``tries`` at once (a barrier), kill as scheduled, wait for all (bounded)."""
    barrier = FORK.Barrier(len(tries) + 1)
    procs = []
    for spec in tries:
        proc = FORK.Process(target=_run_try, args=(spec, conn, str(workdir), barrier), daemon=True)
        proc.start()
        procs.append((spec, proc))
    barrier.wait(timeout=30)
    released = time.monotonic()
    kills = sorted(
        (spec.kill_after, spec, proc) for spec, proc in procs if spec.kill in ("sigkill", "sigterm")
    )
    for after, spec, proc in kills:
        time.sleep(max(0.0, released + after - time.monotonic()))
        if proc.pid is None or not proc.is_alive():
            continue
        if spec.kill == "sigkill":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(timeout=rng.uniform(0.05, 0.5))  # the supervisor's grace, then SIGKILL
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    for _, proc in procs:
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def results(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((workdir / "results").glob("*.json"))]


# ------------------------------------------------------------------------------------------- harness ---


@pytest.fixture(scope="module")
def fake() -> Iterator[LocalOpenRouterProcess]:
    realism = {"hard": HARD, "default": None}[os.environ.get("OPENROUTER_CHAOS_REALISM", "hard")]
    with LocalOpenRouterProcess(realism=realism) as process:
        process.control.seed_keys(FILLER_KEYS, prefix="other-tenant-")
        yield process


@pytest.fixture(scope="module")
def seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))


# How a killed try ends, when it gets to say so.
KILLED = ("AirflowTaskTimeout", "Cancelled", "AirflowTaskTerminated")
# Every attempt of a call failed (several faults in a row beat max_retries=2): a true answer, not a false one.
OUTAGE = ("ServerError", "OpenRouterTransportError")


def random_faults(rng: random.Random, kind: str) -> list[tuple[Fault, str, str]]:
    """Faults for one wave: (fault, method, path), a few of each kind the API can throw at a write."""
    write = {"create": "POST", "update": "PATCH", "delete": "DELETE"}[kind]
    path = "/keys" if write == "POST" else "/keys/*"
    menu: list[tuple[Fault, str, str]] = [
        (Latency(TIMEOUT * 1.6), write, path),  # slower than the client's timeout; the change still lands
        (Status(502, after_commit=True), write, path),
        (Status(504, after_commit=True), write, path),
        (DropAfterCommit(), write, path),
        (Status(503), write, path),
        (Trickle(0.2, chunk=8), "GET", "/keys"),
        (Status(502, after_commit=True), "PATCH", "/keys/*"),  # the rename
        (DropAfterCommit(), "DELETE", "/keys/*"),
    ]
    return rng.sample(menu, rng.randint(2, 5))


def kill_plan(rng: random.Random) -> tuple[str | None, float]:
    kill = rng.choice([None, None, "sigkill", "sigkill", "sigterm", "timeout"])
    return kill, rng.uniform(0.0, 0.6) if kill != "timeout" else 1.0


@dataclass
class Counts:
    tasks: int = 0
    tries: int = 0
    killed: int = 0
    duplicates: int = 0
    missing: int = 0
    undelivered_left: int = 0
    dead_variables: int = 0
    green_with_deleted_key: int = 0
    fail_more_than_one_success: int = 0
    false_failures: int = 0
    unconverged: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self, label: str, seed: int, seconds: float) -> str:
        fields = {k: v for k, v in self.__dict__.items() if k != "notes"}
        return f"chaos {label} (seed {seed}, {seconds:.1f} s): " + ", ".join(
            f"{k}={v}" for k, v in fields.items()
        )


def arm(control: LocalOpenRouterControl, faults: list[tuple[Fault, str, str]]) -> None:
    control.clear_faults()
    for fault, method, path in faults:
        control.inject(fault, method=method, path=path)


def account(control: LocalOpenRouterControl) -> list[dict[str, Any]]:
    return control.keys(include_management=False)


def retry_until_green(
    tries: list[Try], conn: str, workdir: Path, rng: random.Random, counts: Counts, *, rounds: int = 4
) -> None:
    """Airflow's retries: every task whose last try did not end green runs again, after a retry delay."""
    latest = dict.fromkeys((t.task for t in tries), 1)
    spec_of = {t.task: t for t in tries}
    for _ in range(rounds):
        green = {r["task"] for r in results(workdir) if r["ok"]}
        failed_for_good = {
            r["task"] for r in results(workdir) if not r["ok"] and r["error"] in ("ApiKeyExistsError",)
        }
        todo = [task for task in latest if task not in green and task not in failed_for_good]
        if not todo:
            return
        # retry_delay: often shorter than a killed try's claim needs to become collectable (the retry must
        # wait for it), sometimes longer.
        time.sleep(rng.choice([0.3, 1.0, LEASE * 1.5 + 0.5]))
        again = []
        for task in todo:
            latest[task] += 1
            base = spec_of[task]
            again.append(
                Try(
                    base.task,
                    base.name,
                    base.kind,
                    base.if_exists,
                    try_number=latest[task],
                    skew=rng.uniform(-MAX_SKEW, MAX_SKEW),
                )
            )
        counts.tries += len(again)
        run_tries(again, conn, workdir, rng)


def check_keys(
    names: dict[str, str],
    control: LocalOpenRouterControl,
    workdir: Path,
    counts: Counts,
    *,
    phase: list[dict[str, Any]],
) -> None:
    """Count what is on the account and in the destinations, per name."""
    keys = account(control)
    live = {key["hash"] for key in keys}
    deliveries = (
        [json.loads(line) for line in (workdir / "deliveries.log").read_text().splitlines()]
        if (workdir / "deliveries.log").exists()
        else []
    )
    for name, if_exists in names.items():
        finals = [key for key in keys if key["name"] == name]
        claims = [key for key in keys if (m := PENDING.match(key["name"])) and m["name"] == name]
        counts.duplicates += max(0, len(finals) - 1)
        counts.missing += not finals
        counts.undelivered_left += len(claims)
        stored = workdir / "store" / name
        value_hash = sha256(stored.read_text()) if stored.exists() else None
        if value_hash is not None and value_hash not in live:
            counts.dead_variables += 1
            counts.notes.append(f"{name}: the Variable holds a dead key")
        counts.undelivered_left += sum(1 for key in finals if key["hash"] != value_hash)
        mine = [d for d in deliveries if d["name"] == name]
        for outcome in (r for r in results(workdir) if r["name"] == name and r["ok"]):
            result = outcome["result"]
            if not result.get("plaintext_issued"):
                continue
            if result["hash"] in live:
                continue
            delivered_at = max(d["at"] for d in mine if d["hash"] == result["hash"])
            # With replace, a later run's delivery legitimately supersedes an earlier key.
            if not (if_exists == "replace" and any(d["at"] > delivered_at for d in mine)):
                counts.green_with_deleted_key += 1
                counts.notes.append(f"{name}: task {outcome['task']} is green with a deleted key")
        if if_exists == "fail":
            winners = {r["task"] for r in phase if r["name"] == name and r["ok"]}
            counts.fail_more_than_one_success += max(0, len(winners) - 1)


def create_wave(
    fake: LocalOpenRouterProcess,
    conn: str,
    tmp: Path,
    rng: random.Random,
    if_exists: str,
    wave: int,
    counts: Counts,
) -> None:
    control = fake.control
    workdir = tmp / f"{if_exists}-{wave}"
    (workdir / "store").mkdir(parents=True)
    (workdir / "results").mkdir()
    names: dict[str, str] = {}
    tries: list[Try] = []
    for trial in range(rng.randint(3, 4)):
        name = f"chaos-{if_exists}-{wave}-{trial}"
        names[name] = if_exists
        if if_exists != "fail" and rng.random() < 0.5:
            # An earlier, delivered key: reuse keeps it, replace rotates it.
            seeded = Try(f"{name}-seed", name, "create", "fail")
            run_tries([seeded], conn, workdir, rng)
        for worker in range(rng.randint(2, 5)):
            kill, after = kill_plan(rng)
            skew = rng.uniform(-MAX_SKEW, MAX_SKEW)
            tries.append(
                Try(f"{name}-w{worker}", name, "create", if_exists, kill=kill, kill_after=after, skew=skew)
            )
    counts.tasks += len(tries)
    counts.tries += len(tries)
    counts.killed += sum(1 for t in tries if t.kill)
    arm(control, random_faults(rng, "create"))
    run_tries(tries, conn, workdir, rng)
    phase = [r for r in results(workdir) if not r["task"].endswith("-seed")]
    control.clear_faults()
    retry_until_green(tries, conn, workdir, rng, counts)
    # The next run that touches each name (after the leases of anything abandoned).
    time.sleep(LEASE * 1.5 + 0.5)
    nxt = [Try(f"{name}-next", name, "create", if_exists) for name in names]
    counts.tries += len(nxt)
    run_tries(nxt, conn, workdir, rng)
    check_keys(names, control, workdir, counts, phase=phase)


@pytest.mark.parametrize("if_exists", ["fail", "reuse", "replace"])
def test_create_under_concurrency_kills_and_lost_answers(
    fake: LocalOpenRouterProcess,
    tmp_path: Path,
    seed: int,
    if_exists: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(f"{seed}-{if_exists}")
    conn = fake.connection_json(timeout=TIMEOUT, max_retries=2, max_retry_wait=0.2)
    counts = Counts()
    started = time.monotonic()
    for wave in range(3):
        create_wave(fake, conn, tmp_path, rng, if_exists, wave, counts)
    with capsys.disabled():
        print("\n" + counts.line(f"create if_exists={if_exists}", seed, time.monotonic() - started))
    assert counts.duplicates == 0, counts.notes
    assert counts.missing == 0, counts.notes
    assert counts.undelivered_left == 0, counts.notes
    assert counts.dead_variables == 0, counts.notes
    assert counts.green_with_deleted_key == 0, counts.notes
    assert counts.fail_more_than_one_success == 0, counts.notes


@pytest.mark.parametrize("kind", ["update", "delete"])
def test_update_and_delete_converge_after_lost_answers_and_kills(
    fake: LocalOpenRouterProcess, tmp_path: Path, seed: int, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(f"{seed}-{kind}")
    conn = fake.connection_json(timeout=TIMEOUT, max_retries=2, max_retry_wait=0.2)
    control = fake.control
    counts = Counts()
    started = time.monotonic()
    for wave in range(3):
        workdir = tmp_path / f"{kind}-{wave}"
        (workdir / "store").mkdir(parents=True)
        (workdir / "results").mkdir()
        tries = []
        names = []
        for trial in range(rng.randint(4, 6)):
            name = f"chaos-{kind}-{wave}-{trial}"
            control.add_key(name, limit=1)
            names.append(name)
            kill, after = kill_plan(rng)
            tries.append(Try(f"{name}-t", name, kind, kill=kill, kill_after=after))
        counts.tasks += len(tries)
        counts.tries += len(tries)
        counts.killed += sum(1 for t in tries if t.kill)
        arm(control, random_faults(rng, kind))
        run_tries(tries, conn, workdir, rng)
        control.clear_faults()
        # A try that ended (not killed) with an error although nothing stood in its way: a false failure.
        false = [r for r in results(workdir) if not r["ok"] and r["error"] not in KILLED + OUTAGE]
        counts.false_failures += len(false)
        counts.notes.extend(f"{r['task']}: {r['error']}: {r['message']}" for r in false)
        retry_until_green(tries, conn, workdir, rng, counts)
        keys = account(control)
        for name in names:
            mine = [key for key in keys if key["name"] == name]
            ended = [r for r in results(workdir) if r["name"] == name]
            if not any(r["ok"] for r in ended):
                counts.unconverged += 1
                counts.notes.append(f"{name}: never green: {ended}")
            if kind == "delete" and mine:
                counts.unconverged += 1
                counts.notes.append(f"{name}: still exists after a green delete")
            if kind == "update" and (len(mine) != 1 or mine[0]["limit"] != 42):
                counts.unconverged += 1
                counts.notes.append(f"{name}: not converged: {mine}")
    with capsys.disabled():
        print("\n" + counts.line(kind, seed, time.monotonic() - started))
    assert counts.unconverged == 0, counts.notes
    assert counts.false_failures == 0, counts.notes
