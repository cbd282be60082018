"""Simulated runs of the provisioning protocol: tasks, faults, invariants; one seed, one run.

A run draws everything from its seed: how hard the model is (commit gap, lag, whole-second stamps, server
clock jitter, a big account, writers shifting its pages), the faults (errors before a write, 5xx and lost
answers after it, kills at any call or during a delivery, slow answers and deliveries), and the tasks: tries
of :class:`CreateApiKeyOperator` (``provision``), sync applies (the plan's walk, the collection of dead claims
it saw and ``provision_many``), and peers that collect dead claims from a stale walk. Every try has its own
clock skew and is retried as Airflow would, sooner or later than lease + grace.

The invariants are checked after every event and at the end, after one calm run of every name once every
lease and grace has passed. :func:`simulate` returns the first violation, if any, with the run's trace.

The adapter to :class:`~airflow_provider_openrouter._provisioning.Provisioner` (which hook methods it calls,
how it is built, which of its methods the sync apply uses) is :class:`SimHook` and :func:`provisioner`.
"""

from __future__ import annotations

import contextlib
import functools
import random
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter._batch import Request, provision_many
from airflow_provider_openrouter._claims import NameView
from airflow_provider_openrouter._endpoints import Listing
from airflow_provider_openrouter._provisioning import Outcome, Provisioner
from airflow_provider_openrouter.exceptions import (
    NotFoundError,
    OpenRouterTransportError,
    ServerError,
)
from airflow_provider_openrouter.models import ApiKey, CreatedApiKey
from tests.unit.simulation.model import Account, Key, Knobs, Missing, claim_of
from tests.unit.simulation.scheduler import Actor, Killed, Pool, Scheduler

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NAMES = ("tenant-a", "tenant-b")
# Holes of a replace that renamed its new key to the name before retiring the old one (closed: the old keys
# now leave the name first, and any later run deletes them).
#: A replace whose delete of the old key failed left two delivered keys under the name.
R1 = "R1-replace-renames-after-failed-delete"
#: A replace try killed between renaming its new key to the name and deleting the old key left both.
R2 = "R2-replace-killed-between-rename-and-delete"
#: A replace whose rename failed was renamed by the clean-up after the failure, which retired no old key.
R3 = "R3-replace-renamed-by-cleanup-keeps-old"
#: A try that ends, not killed, leaves a claim whose create answer it got (when no delete of it failed).
E2 = "E2-claims-left-behind"
_LOGGERS = ("airflow_provider_openrouter", "airflow_provider_openrouter.transport")


class Violation(AssertionError):
    """An invariant broke; the message says which and how."""


class _Quiet:
    """A logger that drops everything: formatting log lines would cost more than the protocol itself."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    warning = debug = error = exception = info


QUIET = _Quiet()


@dataclass(frozen=True, slots=True)
class Faults:
    error_before: float = 0.0  # a call fails and nothing was written
    lost: float = 0.0  # a write is made, the caller gets a 5xx or a dropped connection
    kill: float = 0.0  # the try's process dies at a call (before or after the write) or in a delivery
    slow: float = 0.0  # an answer or a delivery takes seconds


@dataclass(slots=True)
class Green:
    """A task (or one name of a sync apply) that reported a key as provisioned."""

    label: str
    name: str
    key_hash: str
    action: str


# -- the hook ------------------------------------------------------------------------------------------------


class SimHook:
    """The hook methods the provisioning code calls, answered by the model through the scheduler.

    Each call is two events: the request arriving (the write happens, the key is stamped) and the answer
    arriving back; other workers' requests land in between. An error stands for the hook's retries having run
    out: before the write (nothing happened) or after it (a 5xx after commit, a dropped answer).
    """

    def __init__(self, world: World, actor: Actor) -> None:
        self.world = world
        self.actor = actor

    def _call(
        self,
        method: str,
        path: str,
        effect: Callable[[float], Any],
        *,
        write: bool,
        refused: Callable[[], None] | None = None,
    ) -> Any:
        world, actor, sched = self.world, self.actor, self.world.sched
        if actor.killed:
            raise Killed()
        rng, faults = world.rng, world.faults

        def arrive() -> None:
            if actor.killed:
                return
            now = sched.now
            if faults.kill and rng.random() < faults.kill:
                if rng.random() < 0.5:
                    world.note(actor, method, path, "killed before")
                    world.kill(actor)
                    return
                with contextlib.suppress(Missing):
                    effect(now)
                world.note(actor, method, path, "killed after")
                world.kill(actor)
                return
            back = world.latency()
            if faults.error_before and rng.random() < faults.error_before:
                world.note(actor, method, path, "error before")
                if refused is not None:
                    refused()
                error: BaseException = (
                    OpenRouterTransportError(method, path, "connection refused", reached_server=False)
                    if rng.random() < 0.5
                    else ServerError(503, "unavailable", method=method, path=path)
                )
                sched.at(now + back, lambda: sched.wake(step, error))
                return
            try:
                result = effect(now)
            except Missing as missing:
                result = missing
            delay = back
            if isinstance(result, tuple) and len(result) == 3:  # a create answers once it has committed
                delay += max(0.0, result[2] - now)
            if write and faults.lost and rng.random() < faults.lost:
                world.note(actor, method, path, "lost answer")
                lost: BaseException = (
                    ServerError(500, "internal error", method=method, path=path)
                    if rng.random() < 0.5
                    else OpenRouterTransportError(method, path, "connection reset", reached_server=None)
                )
                sched.at(now + delay, lambda: sched.wake(step, lost))
                return
            world.note(actor, method, path, f"ok, {len(result)} keys" if isinstance(result, list) else "ok")
            sched.at(now + delay, lambda: sched.wake(step, _Box(result)))

        step = sched.current()
        sched.at(sched.now + world.latency(), arrive)
        answer = sched.suspend()
        return answer.value

    def list_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> Iterator[ApiKey]:
        # The real walk's paging (anchors, shifts, restarts), fed pages by the model.
        listing = Listing(
            include_disabled=include_disabled, include_expired=include_expired, workspace_id=workspace_id
        ).start(None)
        account = self.world.account

        def walk() -> Iterator[ApiKey]:
            while not listing.done:
                offset = int(dict(listing.next_call().query).get("offset", "0"))
                page = self._call(
                    "GET",
                    f"/keys?offset={offset}",
                    functools.partial(account.page, offset),
                    write=False,
                )
                yield from listing.take(page)

        return walk()

    def get_key(self, key_hash: str) -> ApiKey:
        answer = self._call("GET", "/keys/{hash}", lambda now: self.world.account.get(key_hash), write=False)
        if isinstance(answer, Missing):
            raise NotFoundError(404, "not found", method="GET", path="/keys/{hash}")
        assert isinstance(answer, ApiKey)
        return answer

    def update_key(self, key_hash: str, *, name: str) -> ApiKey:
        who = self.actor.label
        answer = self._call(
            "PATCH",
            "/keys/{hash}",
            lambda now: self.world.account.rename(key_hash, name, now, who),
            write=True,
            refused=lambda: self.world.rename_refused(who),
        )
        if isinstance(answer, Missing):
            raise NotFoundError(404, "not found", method="PATCH", path="/keys/{hash}")
        assert isinstance(answer, ApiKey)
        return answer

    def delete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        who = self.actor.label
        answer = self._call(
            "DELETE",
            "/keys/{hash}",
            lambda now: self.world.account.delete(key_hash, now, who),
            write=True,
            refused=lambda: self.world.delete_refused(who, key_hash),
        )
        if isinstance(answer, Missing):
            if missing_ok:
                return False
            raise NotFoundError(404, "not found", method="DELETE", path="/keys/{hash}")
        return True

    def create_key(self, name: str) -> CreatedApiKey:
        who = self.actor.label
        key, plaintext, _ = self._call(
            "POST", "/keys", lambda now: self.world.account.create(name, now, who), write=True
        )
        self.world.handed(who, key.hash)
        return CreatedApiKey(api_key=key.view(name), plaintext=plaintext)


class _Box:
    """An answer, boxed so that an answer that is an exception object is not raised by the scheduler."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def provisioner(world: World, actor: Actor, lease: float) -> Provisioner:
    """A try's Provisioner: the simulated hook, the try's skewed clock, a sleep that yields, seeded random."""
    sched = world.sched
    made = Provisioner(
        SimHook(world, actor),  # type: ignore[arg-type]
        lease=lease,
        logger=QUIET,
        clock=lambda: sched.now + actor.skew,
        sleep=sched.sleep,
        rng=random.Random(world.rng.getrandbits(64)),
    )
    made.token = format(world.rng.getrandbits(32), "08x")  # its own draws secrets: not replayable
    return made


def collect(made: Provisioner, view: NameView) -> None:
    """What the sync apply does with the claims its plan saw on names it does not create."""
    made.tidy(view)


# -- the world -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Task:
    label: str
    kind: str  # "single", "sync", "collector"
    names: tuple[str, ...]
    mode: str  # if_exists of a single task; "fail" for a sync's creates
    tries: int
    start: float
    tried: int = 0


@dataclass(slots=True)
class Result:
    seed: int
    violation: str | None
    steps: int
    trace: list[str] = field(default_factory=list)
    digest: int = 0
    summary: str = ""
    hole: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


class World:
    def __init__(self, seed: int, *, trace: bool = False, replace: bool = True) -> None:
        self.seed = seed
        self.replace = replace
        rng = self.rng = random.Random(seed)
        # Drawn from a generator of their own, so that the seeds found before these existed still play out
        # the runs they were found in.
        self.chunk_rng = random.Random(f"chunks-{seed}")
        self.sched = Scheduler(rng)
        hard = rng.random() < 0.75
        self.knobs = Knobs(
            commit_gap=rng.choice((0.0, 0.05, 0.5)) if hard else 0.0,
            lag=rng.choice((0.0, 0.0, 0.2, 1.0)) if hard else 0.0,
            whole_seconds=rng.random() < 0.3,
            stamp_jitter=rng.choice((0.0, 0.0, 0.3)) if hard else 0.0,
        )
        self.account = Account(rng, self.knobs, old=rng.choice((0, 0, 0, 30, 99, 150, 260)))
        self.faults = Faults(
            error_before=rng.choice((0.0, 0.0, 0.03, 0.1)),
            lost=rng.choice((0.0, 0.0, 0.03, 0.1)),
            kill=rng.choice((0.0, 0.0, 0.02, 0.06)),
            slow=rng.choice((0.0, 0.02, 0.1)),
        )
        self.lease = rng.choice((6.0, 20.0, 120.0))
        self.grace = min(60.0, self.lease / 2)
        self.max_skew = rng.choice((0.0, min(1.0, self.grace / 8)))
        self.tracing = trace
        self.trace: list[str] = []
        self.digest = 0
        self.violation: str | None = None
        self.hole: str | None = None  # the known hole the violation is, when it is recognised as one
        self.refused_deletes: set[str] = set()  # tries whose delete of a delivered key failed
        self.refused_renames: set[str] = set()  # tries one of whose renames failed
        self.refused_hashes: set[str] = set()  # keys a delete of which failed
        self.handed_to: dict[str, list[str]] = {}  # by try, the keys whose create answer it got
        # How the tasks' tries ended (liveness: the invariants say nothing about how many fail).
        self.outcomes = {"green": 0, "red": 0, "killed": 0}
        # Delivered keys a replace took out of their name: anyone may delete them from then on.
        self.taken_out: set[str] = set()
        self.delivered: set[str] = set()
        self.by_name: dict[str, set[str]] = {}
        self.greens: list[Green] = []
        self.actors: dict[str, tuple[Task, Actor]] = {}
        self.tasks: list[Task] = []
        self.account.watchers.append(self._watch)
        self.sched.after_step = self._check_step
        self.calm = False

    # -- what happens --------------------------------------------------------------------------------------

    def latency(self) -> float:
        """One way of one call. A slow one takes up to a quarter of the grace: a whole call (there and back)
        stays within half of it, as the guarantees ask of the connection's call budget."""
        rng = self.rng
        if self.faults.slow and rng.random() < self.faults.slow:
            return rng.uniform(self.grace / 8, self.grace / 4)
        return rng.uniform(0.005, 0.2)

    def note(self, actor: Actor, method: str, path: str, how: str) -> None:
        line = f"{self.sched.now - 1_767_225_600.0:.6f} {actor.label} {method} {path} {how}"
        self.digest = zlib.crc32(line.encode(), self.digest)
        if self.tracing:
            self.trace.append(line)

    def kill(self, actor: Actor) -> None:
        if actor.killed:
            return
        self.sched.kill(actor)
        self.outcomes["killed"] += 1
        self.ended(actor)
        task, _ = self.actors[actor.label]
        self._retry(task)

    def fail(self, message: str, hole: str | None = None) -> None:
        if self.violation is None:
            self.violation = f"t+{self.sched.now - 1_767_225_600.0:.6f}s: {message}"
            self.hole = hole
            raise Violation(self.violation)

    def ended(self, actor: Actor) -> None:
        """A try is over (green, red or killed)."""

    def rename_refused(self, who: str) -> None:
        self.refused_renames.add(who)

    def handed(self, who: str, key_hash: str) -> None:
        """A try got the answer to its create: from now on it knows the key, and must not abandon it."""
        self.handed_to.setdefault(who, []).append(key_hash)

    def left_behind(self, actor: Actor) -> None:
        """A try that ends (not killed) leaves none of the undelivered claims it knows of, unless deleting
        one failed."""
        for key_hash in self.handed_to.get(actor.label, ()):
            key = self.account.keys[key_hash]
            if key.deleted or claim_of(key.name) is None or key_hash in self.refused_hashes:
                continue
            if key_hash in self.delivered:  # its rename failed: the guarantees let it wait for collection
                continue
            self.fail(f"{actor.label} ended and left its claim {key_hash[:8]} ({key.name!r}) behind", hole=E2)

    def delete_refused(self, who: str, key_hash: str) -> None:
        self.refused_hashes.add(key_hash)
        key = self.account.keys.get(key_hash)
        if key is not None and key.name in NAMES:
            self.refused_deletes.add(who)

    # -- invariants ----------------------------------------------------------------------------------------

    def _watch(self, key: Key, old: str | None, new: str | None, who: str) -> None:
        if old is not None and old in NAMES:
            self.by_name.get(old, set()).discard(key.hash)
            task = self.actors[who][0] if who in self.actors else None
            if new is not None and task is not None and task.kind == "single" and task.mode == "replace":
                self.taken_out.add(key.hash)
        if new is not None and new in NAMES:
            self.by_name.setdefault(new, set()).add(key.hash)
            self.taken_out.discard(key.hash)  # given its name back: it is that name's key again
        if new is None:
            for green in self.greens:
                if green.key_hash != key.hash:
                    continue
                if key.hash not in self.taken_out:
                    self.fail(
                        f"the key {green.key_hash[:8]} that {green.label} reported {green.action} under "
                        f"{green.name!r} was deleted by {who} while named {old!r}"
                    )

    def _check_step(self) -> None:
        for name, hashes in self.by_name.items():
            if len(hashes) > 1:
                self.fail(f"{len(hashes)} keys under {name!r}: {sorted(h[:8] for h in hashes)}")
            for key_hash in hashes:
                if key_hash not in self.delivered:
                    self.fail(f"the key {key_hash[:8]} under {name!r} was never delivered")

    def _green(self, green: Green) -> None:
        self.greens.append(green)
        if green.action == "created":
            modes = [
                g
                for g in self.greens
                if g.name == green.name and g.action == "created" and self.actors[g.label][0].mode == "fail"
            ]
            if len(modes) > 1:
                self.fail(
                    f"if_exists='fail' succeeded {len(modes)} times for {green.name!r}: "
                    + ", ".join(g.label for g in modes)
                )

    # -- tasks ---------------------------------------------------------------------------------------------

    def _retry(self, task: Task) -> None:
        if self.calm or task.tried >= task.tries:
            return
        rng = self.rng
        if rng.random() < 0.5:  # sooner than lease + grace, as a short retry_delay gives
            delay = rng.uniform(0.5, 10.0)
        else:
            delay = self.lease + self.grace + rng.uniform(1.0, 30.0)
        self._start(task, self.sched.now + delay)

    def _start(self, task: Task, when: float) -> None:
        task.tried += 1
        skew = self.rng.uniform(-self.max_skew, self.max_skew) if self.max_skew else 0.0
        actor = Actor(f"{task.label}.{task.tried}", skew)
        self.actors[actor.label] = (task, actor)
        body = {"single": self._single, "sync": self._sync, "collector": self._collector}[task.kind]

        def run() -> None:
            try:
                body(task, actor)
            except Violation:
                raise
            except Killed:
                return
            except Exception as exc:  # a red try: Airflow retries it
                if self.tracing:
                    self.trace.append(f"  {actor.label} failed: {type(exc).__name__}: {exc}")
                self.ended(actor)
                self.left_behind(actor)
                self.outcomes["red"] += 1
                self._retry(task)
            else:
                self.ended(actor)
                self.left_behind(actor)
                self.outcomes["green"] += 1

        self.sched.spawn(actor, run, when)

    def _deliver(self, actor: Actor, name: str) -> Callable[[CreatedApiKey], list[str]]:
        def deliver(created: CreatedApiKey) -> list[str]:
            rng = self.rng
            slow = self.faults.slow and rng.random() < self.faults.slow
            self.sched.sleep(rng.uniform(1.0, self.lease * 0.6) if slow else rng.uniform(0.001, 0.05))
            if actor.killed:
                raise Killed()
            if self.faults.kill and rng.random() < self.faults.kill:
                if rng.random() < 0.5:
                    self.delivered.add(created.hash)  # the destination has it; the rename never comes
                self.note(actor, "DELIVER", name, "killed")
                self.kill(actor)
                raise Killed()
            assert created.name == name, created.name
            self.delivered.add(created.hash)
            self.note(actor, "DELIVER", name, created.hash[:8])
            return ["destination"]

        return deliver

    def _single(self, task: Task, actor: Actor) -> None:
        name = task.names[0]
        made = provisioner(self, actor, self.lease)

        def create(provisional: str) -> CreatedApiKey:
            return made.hook.create_key(provisional)

        outcome = made.provision(name, task.mode, create, self._deliver(actor, name))  # type: ignore[arg-type]
        self._done(actor, name, outcome)

    def _done(self, actor: Actor, name: str, outcome: Outcome) -> None:
        if actor.killed:
            raise Killed()
        self.note(actor, "GREEN", name, f"{outcome.action} {outcome.key.hash[:8]}")
        self._green(Green(actor.label, name, outcome.key.hash, outcome.action))

    def _sync(self, task: Task, actor: Actor) -> None:
        """The sync apply without Airflow: its plan's walk, the leftovers it collects, ``provision_many``."""
        made = provisioner(self, actor, self.lease)
        hook: SimHook = made.hook  # type: ignore[assignment]
        views, since = made.walk(list(task.names), None)
        creating: list[NameView] = []
        leftovers: list[NameView] = []
        for name in task.names:
            view = views[name]
            if view.finals:
                if view.claims:
                    leftovers.append(NameView(name, claims=view.claims))
            else:
                creating.append(view)
        # Plan and apply may be apart (an approval, a slow table): the plan's views get stale meanwhile.
        self.sched.sleep(self.rng.choice((0.0, self.rng.uniform(0.0, 2 * (self.lease + self.grace)))))
        for view in leftovers:
            collect(made, view)
        outcomes: dict[str, Outcome | BaseException] = {}

        def report(index: int, result: Outcome | BaseException) -> None:
            outcomes[creating[index].name] = result

        requests = [
            Request(
                name=view.name,
                create=hook.create_key,
                deliver=self._deliver(actor, view.name),
                if_exists="fail",
                view=view,
            )
            for view in creating
        ]
        if requests:
            # A chunk a name: the second name's claim is made while the first is settled, and its check walks
            # meanwhile, carrying the view the first check gave it.
            chunk = self.chunk_rng.choice((1, 2))
            provision_many(made, requests, since=since, chunk=chunk, workers=2, report=report)
        failed = None
        for name, result in outcomes.items():
            if isinstance(result, Killed):
                raise result
            if isinstance(result, Outcome):
                self._done(actor, name, result)
            else:
                failed = result
        if failed is not None:
            raise failed

    def _collector(self, task: Task, actor: Actor) -> None:
        """Another run that touches the names and deletes the dead claims its (stale) walk saw."""
        made = provisioner(self, actor, self.lease)
        views, _ = made.walk(list(task.names), None)
        self.sched.sleep(self.rng.uniform(0.0, 2 * (self.lease + self.grace)))
        for name in task.names:
            if views[name].claims:
                collect(made, NameView(name, claims=views[name].claims))

    def _noise(self, until: float) -> None:
        """Unrelated writers: keys created and deleted while the tasks walk, so pages shift under them."""
        actor = Actor("noise", 0.0)
        self.actors["noise"] = (Task("noise", "noise", (), "keep", 0, 0.0), actor)
        hook = SimHook(self, actor)
        mine: list[str] = []

        def run() -> None:
            try:
                while self.sched.now < until:
                    if mine and self.rng.random() < 0.5:
                        with contextlib.suppress(Exception):
                            hook.delete_key(mine.pop(self.rng.randrange(len(mine))), missing_ok=True)
                    else:
                        with contextlib.suppress(Exception):
                            mine.append(hook.create_key(f"other-{self.rng.getrandbits(16)}").hash)
                    self.sched.sleep(self.rng.uniform(0.01, 0.3))
            except Killed:
                return

        self.sched.spawn(actor, run)

    # -- a run ---------------------------------------------------------------------------------------------

    def setup(self) -> None:
        rng = self.rng
        names = NAMES[: rng.choice((1, 1, 2))]
        for name in names:
            if rng.random() < 0.3:  # a delivered key from an earlier run
                key, _, _ = self.account.create(name, self.sched.now - 600, "setup")
                self.delivered.add(key.hash)
        count = rng.choice((1, 2, 2, 3, 4))
        spread = rng.choice((0.0, 0.5, 5.0))
        for index in range(count):
            roll = rng.random()
            if roll < 0.6:
                kind, mode = "single", rng.choice(("fail", "fail", "reuse", "replace"))
                if mode == "replace" and not self.replace:
                    mode = "reuse"
                task_names: tuple[str, ...] = (rng.choice(names),)
            elif roll < 0.85:
                kind, mode, task_names = "sync", "fail", names
            else:
                kind, mode, task_names = "collector", "keep", names
            task = Task(
                f"{kind[:2]}{index}", kind, task_names, mode, rng.choice((1, 2, 3)), rng.uniform(0, spread)
            )
            self.tasks.append(task)
        for task in self.tasks:
            self._start(task, self.sched.now + task.start)
        if self.account.old and rng.random() < 0.5:
            self._noise(self.sched.now + 20.0)

    def finish(self) -> None:
        """One calm run of every name once every lease and grace is over; then nothing may be left."""
        self.calm = True
        self.knobs = Knobs()
        self.account.knobs = self.knobs
        self.faults = Faults()
        horizon = 0.0
        for key in self.account.keys.values():
            claim = claim_of(key.name)
            if claim is not None and not key.deleted:
                horizon = max(horizon, claim[1])
        # Writes made just before may still be on their way to the lists (up to the lag of the run).
        start = max(self.sched.now + 2.0, horizon + self.grace + self.max_skew + 2.0)
        names = sorted({name for task in self.tasks for name in task.names})
        for index, name in enumerate(names):
            task = Task(f"final{index}", "single", (name,), "reuse", 1, 0.0)
            self.tasks.append(task)
            task.tried = 1
            actor = Actor(f"final{index}", 0.0)
            self.actors[actor.label] = (task, actor)

            def run(task: Task = task, actor: Actor = actor) -> None:
                try:
                    self._single(task, actor)
                except Violation:
                    raise
                except Exception as exc:
                    self.fail(f"the calm run of {task.names[0]!r} failed: {type(exc).__name__}: {exc}")

            self.sched.spawn(actor, run, start)
        self.sched.run(200_000)
        for key in self.account.keys.values():
            if key.deleted:
                continue
            claim = claim_of(key.name)
            if claim is not None and claim[0] in names:
                self.fail(
                    f"the claim {key.hash[:8]} ({key.name!r}) is left after lease + grace and a calm run"
                )
            if any(key.name.startswith(f"{name} [replaced ") for name in names):
                self.fail(f"the old key {key.name!r} a replace took out outlived a calm run")


def simulate(seed: int, *, trace: bool = False, replace: bool = True) -> Result:
    import concurrent.futures
    import logging

    # The code under test logs through the standard loggers too (its module's, the walk's): at 100,000 runs
    # that costs more than the runs. Their warnings say nothing the invariants do not check.
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    world = World(seed, trace=trace, replace=replace)
    summary = f"knobs={world.knobs} faults={world.faults} lease={world.lease} skew<={world.max_skew}"
    previous, Pool.scheduler = Pool.scheduler, world.sched
    # provision_many fans out over a thread pool: within a run, its tasks are greenlets of the same try.
    executor = concurrent.futures.ThreadPoolExecutor
    concurrent.futures.ThreadPoolExecutor = Pool  # type: ignore[misc,assignment]
    try:
        world.setup()
        try:
            world.sched.run(200_000)
            world.finish()
        except Violation:
            pass
    finally:
        concurrent.futures.ThreadPoolExecutor = executor  # type: ignore[misc]
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        Pool.scheduler = previous
        world.sched.close()
    summary += f" tasks={[(t.label, t.kind, t.mode, t.names, t.tries) for t in world.tasks]}"
    return Result(
        seed,
        world.violation,
        world.sched.steps,
        world.trace,
        world.digest,
        summary,
        world.hole,
        world.outcomes,
    )
