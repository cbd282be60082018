"""A seeded discrete-event scheduler that runs synchronous code as cooperative greenlets.

Why greenlets. The provisioning code is ordinary blocking Python: :class:`Provisioner` calls its hook, sleeps
and, in ``provision_many``, fans out over a thread pool. To interleave every HTTP call of every worker we need
to suspend that code in the middle of a call and resume it later, without rewriting it:

* Generators would need the code under test to ``yield`` at every call: it does not.
* OS threads passed a baton would work, but every switch costs two futex round trips, a pool's threads would
  race to the baton, and the scheduler could not tell a thread that is computing from one that is blocked.
* Hypothesis' stateful testing explores *its* choice of operations, not the interleaving of code already
  written, and shrinking a 30-step interleaving of real code buys little over replaying its seed.

A greenlet is a stack that is switched to explicitly, in one OS thread: a worker runs until it makes a call
(or sleeps, or waits for a pool task), switches back to the scheduler, and nothing else runs meanwhile. So
the only source of order is the scheduler's heap, and a run is a pure function of its seed. A switch costs
about a microsecond, which is what makes 100,000 runs affordable. ``greenlet`` is already installed with
Airflow (SQLAlchemy uses it).

Time is virtual: the heap orders events by virtual time, ties broken by a draw from the run's random source,
and ``now`` jumps to each event. Nothing sleeps for real.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
from typing import TYPE_CHECKING, Any

import greenlet  # type: ignore[import-untyped]

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable, Iterator

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Killed(BaseException):
    """Raised into nothing: a killed worker's greenlets are simply never resumed. Used only to refuse calls
    from a killed worker's ``finally`` blocks when its abandoned stack is collected."""


class Actor:
    """One try of a task (one process, in real life): its greenlets share its fate when it is killed."""

    __slots__ = ("killed", "label", "skew")

    def __init__(self, label: str, skew: float) -> None:
        self.label = label
        self.skew = skew
        self.killed = False


class Step(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that knows which actor it belongs to."""

    actor: Actor


class Scheduler:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = T0
        self.steps = 0
        self._heap: list[tuple[float, float, int, Callable[[], None]]] = []
        self._seq = 0
        self._main = greenlet.getcurrent()
        # Every greenlet of the run, kept until it ends: a killed actor's abandoned stack must not be
        # collected (and its finally blocks run) at a moment the garbage collector picks.
        self._steps: list[Step] = []
        self.after_step: Callable[[], None] = lambda: None

    # -- used by the run -----------------------------------------------------------------------------------

    def at(self, when: float, event: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self.rng.random(), self._seq, event))

    def spawn(self, actor: Actor, body: Callable[[], Any], when: float | None = None) -> Step:
        def guarded(*_: Any) -> None:
            with contextlib.suppress(Killed):  # a call from a killed actor's stack: it just ends
                body()

        step = Step(run=guarded, parent=self._main)
        step.actor = actor
        self._steps.append(step)
        self.at(self.now if when is None else when, lambda: self.wake(step, None))
        return step

    def run(self, limit: int) -> None:
        heap = self._heap
        while heap:
            when, _, _, event = heapq.heappop(heap)
            if when > self.now:
                self.now = when
            event()
            self.steps += 1
            self.after_step()
            if self.steps > limit:
                raise RuntimeError(f"no end after {limit} steps: a livelock")

    def wake(self, step: Step, value: Any) -> None:
        """Resume ``step`` with ``value`` (raised there if an exception), unless its actor was killed."""
        if step.actor.killed or step.dead:
            return
        step.switch(value)

    def kill(self, actor: Actor) -> None:
        actor.killed = True

    # -- used by the workers (inside their greenlets) -------------------------------------------------------

    @staticmethod
    def actor() -> Actor:
        current = greenlet.getcurrent()
        if not isinstance(current, Step):
            raise RuntimeError("not inside a simulated worker")
        return current.actor

    def suspend(self) -> Any:
        """Hand control back to the scheduler until an event resumes this greenlet with a value; an
        exception value is raised here."""
        current = greenlet.getcurrent()
        if isinstance(current, Step) and current.actor.killed:
            raise Killed()
        value = self._main.switch()
        if isinstance(value, BaseException):
            raise value
        return value

    @staticmethod
    def current() -> Step:
        step = greenlet.getcurrent()
        assert isinstance(step, Step), "not inside a simulated worker"
        return step

    def resume_at(self, when: float, value: Any) -> None:
        step = greenlet.getcurrent()
        assert isinstance(step, Step)
        self.at(when, lambda: self.wake(step, value))

    def sleep(self, seconds: float) -> None:
        self.resume_at(self.now + max(0.0, seconds), None)
        self.suspend()

    def close(self) -> None:
        """Let the run's greenlets go; any still suspended belong to a killed actor and may make no call."""
        for step in self._steps:
            step.actor.killed = True
        self._steps.clear()


class _Future:
    __slots__ = ("done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiters: list[Step] = []


class Pool:
    """``concurrent.futures.ThreadPoolExecutor`` as far as the provisioning code uses it (a context manager
    with ``map``), running its tasks as greenlets of the calling actor, ``max_workers`` at a time."""

    scheduler: Scheduler | None = None  # set for the duration of a run

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "", **_: Any) -> None:
        self.max_workers = max(1, max_workers or 1)
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...], _Future]] = []
        self._running = 0
        self._all: list[_Future] = []

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._all:
            self._wait(future)

    def shutdown(self, wait: bool = True, **_: Any) -> None:
        if wait:
            for future in self._all:
                self._wait(future)

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Future:
        future = _Future()
        self._all.append(future)
        self._queue.append((fn, args, future))
        self._start()
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=True)]

        def results() -> Iterator[Any]:
            for future in futures:
                self._wait(future)
                if future.error is not None:
                    raise future.error
                yield future.result

        return results()

    def _start(self) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        while self._queue and self._running < self.max_workers:
            self._running += 1
            scheduler.spawn(Scheduler.actor(), self._work)

    def _work(self) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        while self._queue:
            fn, args, future = self._queue.pop(0)
            try:
                future.result = fn(*args)
            except Killed:
                raise
            except BaseException as exc:
                future.error = exc
            future.done = True
            for waiter in future.waiters:
                scheduler.at(scheduler.now, functools.partial(scheduler.wake, waiter, None))
            future.waiters.clear()
        self._running -= 1

    def _wait(self, future: _Future) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        while not future.done:
            current = greenlet.getcurrent()
            assert isinstance(current, Step)
            future.waiters.append(current)
            scheduler.suspend()
