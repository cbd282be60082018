"""The retry policy, free of I/O: which failed attempts may be repeated, how long to wait, and
:class:`Exchange`, which takes each attempt's outcome (an HTTP :class:`Answer` or a :class:`Failure` to get
one) and decides to finish, read the answer, raise the API's error, or wait and try again.

A transport (:mod:`~airflow_provider_openrouter._transport`) only makes attempts and sleeps as told, so the
sync and the async path retry exactly alike.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from airflow_provider_openrouter._endpoints import Call, Malformed
from airflow_provider_openrouter.exceptions import (
    OpenRouterAPIError,
    OpenRouterError,
    OpenRouterTransportError,
    RateLimitedError,
    UnreadableResponseError,
    api_error_from_response,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig

T = TypeVar("T")

log = logging.getLogger("airflow_provider_openrouter.transport")

# Methods whose repetition does no harm: reads, absolute PATCHes, deletes (a second DELETE at worst 404s).
SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS", "PATCH", "PUT", "DELETE"})


def is_retryable(
    method: str,
    *,
    status: int | None = None,
    reached_server: bool | None = None,
    repeatable: bool = False,
) -> bool:
    """Whether an attempt that ended so may be repeated. Pure: the whole retry policy in one place.

    - 429: the server refused without acting, so any method, including ``POST /keys``;
    - 5xx, or no answer after the request may have reached the server (a timeout, a dropped connection):
      only methods that are safe to repeat, since a create may already have happened, and calls marked
      ``repeatable`` (a ``POST`` whose repeat finds its work done);
    - the connection was never established (``reached_server=False``): any method.
    """
    safe = repeatable or method in SAFE_TO_REPEAT
    if status is not None:
        if status == 429:
            return True
        return status >= 500 and safe
    if reached_server is False:
        return True
    return safe


def default_jitter(delay: float) -> float:
    """Spread retries of many clients over [delay/2, delay] so that they do not return in lockstep."""
    return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` retries, each wait at most ``max_wait`` seconds; each attempt at most
    ``attempt_timeout`` seconds in all (``None``: unbounded), so that a whole call has a :attr:`budget`."""

    max_retries: int = 3
    max_wait: float = 60.0
    jitter: Callable[[float], float] = default_jitter
    base_delay: float = 0.5
    attempt_timeout: float | None = None

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0-based)."""
        if retry_after is not None:
            return max(0.0, min(self.max_wait, retry_after))
        backoff = min(self.max_wait, self.base_delay * 2**retry_number)
        return max(0.0, min(self.max_wait, self.jitter(backoff)))

    def waits_too_long(self, retry_after: float | None) -> bool:
        """A server-requested wait beyond ``max_wait``: better spent by Airflow's retry than a worker slot."""
        return retry_after is not None and retry_after > self.max_wait

    @property
    def budget(self) -> float | None:
        """The most one call may take: every attempt at its timeout, every wait at its longest."""
        if self.attempt_timeout is None:
            return None
        return self.attempt_timeout * (self.max_retries + 1) + self.max_wait * self.max_retries


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever client fetched it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """No HTTP answer. ``reached_server``: ``False`` if the request cannot have arrived, ``None`` if unknown.
    ``permanent`` failures (a certificate the client does not trust) are not worth repeating."""

    reached_server: bool | None
    detail: str
    permanent: bool = False
    cause: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, exc: BaseException, reached_server: bool | None, *, permanent: bool = False) -> Failure:
        if getattr(exc, "request", None) is not None:
            # requests keeps the prepared request, Authorization header included, on its exceptions.
            exc.request = None  # type: ignore[attr-defined]
        return cls(reached_server, _root_cause(exc), permanent, exc)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A :class:`RateGate`'s answer to a call that may not wait out the pause: why, and for how long the
    limit lasts."""

    message: str
    reason: str
    retry_after: float


class Ticket:
    """One call's standing at a :class:`RateGate`, across its attempts. The gate alone reads and writes it;
    the call (:class:`Exchange`) carries it from one question to the gate to the next."""

    __slots__ = ("held_from", "probe", "sent_in")

    def __init__(self) -> None:
        #: The pause (the gate's generation) during which the latest attempt was sent.
        self.sent_in = 0
        #: Whether the latest attempt is the one request that goes first after a pause.
        self.probe = False
        #: The generation at which the call first met a closed gate; ``None``: it never has.
        self.held_from: int | None = None


class RateGate:
    """One rate limit for every call made through one hook: the threads sharing its connection pool, and the
    coroutines of its event loop. A 429 seen by any of them holds all of them.

    OpenRouter rate-limits an account, not a request, so once one request is answered 429, the others would
    be too. After a 429 the gate *closes*: every call waits until the pause has passed (the ``Retry-After``
    the server gave, else the policy's backoff for the number of 429s in a row), then a single request goes
    first to see whether the limit has passed, and the gate opens again only when that request is answered
    with anything but 429. So, during a rate limit, the requests sent are the ones already in flight when it
    began plus one per pause, however many threads there are; without the gate each thread would probe on its
    own.

    A call waits at a closed gate no longer than its own retry policy would have waited: it gives up (a
    :class:`~airflow_provider_openrouter.exceptions.RateLimitedError`, not sent) when the rest of the pause is
    beyond ``max_retry_wait`` or its deadline, or when more 429s than ``max_retries`` came while it waited.

    The gate holds no I/O and never blocks: :meth:`hold` says how long to wait, and the transport sleeps
    (``time.sleep`` or ``asyncio.sleep``), so the sync and the async path are held alike. Each call keeps
    its :class:`Ticket` and hands it to every method here.
    """

    __slots__ = ("_closed", "_generation", "_last", "_lock", "_probing", "_resume_at", "_streak", "pauses")

    #: While the first request after a pause is on its way, the others look again this often.
    POLL: float = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._resume_at = 0.0
        self._streak = 0  # pauses since the gate closed: the backoff grows with it
        self._generation = 0  # pauses ever: which requests were sent after the latest 429
        self._probing = False
        self._last = "Rate limit exceeded"
        #: How many times the gate has paused (for reports: "the apply was rate limited N times").
        self.pauses = 0

    def hold(self, ticket: Ticket, policy: RetryPolicy, deadline: float | None) -> float | Refusal:
        """Before each attempt: ``0``: send it now; a number: wait that long and ask again; a
        :class:`Refusal`: the pause outlasts what the call may wait (its ``policy`` and ``deadline``)."""
        if not self._closed:
            # Without the lock: a pause that begins meanwhile makes this request one "already in flight".
            ticket.sent_in = self._generation
            return 0.0
        with self._lock:
            if not self._closed:
                ticket.sent_in = self._generation
                return 0.0
            now = time.monotonic()
            if ticket.held_from is None:
                ticket.held_from = self._generation
            left = self._resume_at - now
            if self._generation - ticket.held_from > policy.max_retries:
                reason = f"OpenRouter answered 429 {self._generation - ticket.held_from} times in a row"
            elif left > policy.max_wait:
                reason = f"OpenRouter asked to wait {left:.0f} s more, longer than max_retry_wait"
            elif deadline is not None and now + left >= deadline:
                reason = "no time left for it"
            elif left > 0:
                return left
            elif self._probing:
                return self.POLL
            else:
                self._probing = ticket.probe = True
                ticket.sent_in = self._generation
                return 0.0
            return Refusal(self._last, reason, max(left, 0.0))

    def strike(self, ticket: Ticket, policy: RetryPolicy, retry_after: float | None, message: str) -> float:
        """A 429: close the gate (or extend the pause); the seconds until it may open."""
        with self._lock:
            now = time.monotonic()
            wait: float | None = retry_after
            if ticket.sent_in == self._generation:
                # Sent after the latest pause began: news about the limit. (Requests already in flight when it
                # began are answered 429 too, and say nothing new.)
                self._generation += 1
                self._streak = self._streak + 1 if self._closed else 1
                self._closed = True
                self.pauses += 1
                self._last = message
                if wait is None:
                    wait = policy.delay(self._streak - 1)
            self._probing = self._probing and not ticket.probe
            ticket.probe = False
            if ticket.held_from is None:
                ticket.held_from = self._generation
            if wait is not None and now + wait >= self._resume_at:
                self._resume_at = now + wait
                return wait  # exactly: compared with max_retry_wait
            return max(0.0, self._resume_at - now)

    def passed(self, ticket: Ticket, *, answered: bool) -> None:
        """Any outcome but a 429: an answer to a request sent after the latest pause opens the gate."""
        if not (self._closed or ticket.probe):
            return  # the common case, without the lock
        with self._lock:
            if ticket.probe:
                self._probing = ticket.probe = False
            if answered and self._closed and ticket.sent_in == self._generation:
                self._closed = False
                self._streak = 0

    def release(self, ticket: Ticket) -> None:
        """An attempt that ended without an outcome (the task was cancelled or killed mid-request)."""
        if ticket.probe:
            with self._lock:
                self._probing = ticket.probe = False


class Exchange(Generic[T]):
    """One logical call across its attempts: decides, per outcome, whether to finish or wait and retry.

    The call has a deadline (:attr:`RetryPolicy.budget` from its start): each attempt gets what is left of it
    up to the attempt timeout (:meth:`attempt_budget`), and a retry whose wait would end past it is not made.
    """

    __slots__ = (
        "_error",
        "_maybe_done",
        "_result",
        "_ticket",
        "attempts",
        "call",
        "deadline",
        "gate",
        "policy",
    )

    def __init__(self, call: Call[T], policy: RetryPolicy, gate: RateGate | None = None) -> None:
        self.call = call
        self.policy = policy
        self.gate = gate
        self._ticket = Ticket()
        self.attempts = 0
        self._maybe_done = False
        self._result: T | None = None
        self._error: OpenRouterError | None = None
        budget = policy.budget
        self.deadline = None if budget is None else time.monotonic() + budget

    def attempt_budget(self) -> float | None:
        """Seconds the next attempt may take in all (connect, send, headers, body); ``None``: unbounded."""
        timeout = self.policy.attempt_timeout
        if timeout is None or self.deadline is None:
            return timeout
        return max(0.001, min(timeout, self.deadline - time.monotonic()))

    def hold(self) -> float | None:
        """Before each attempt: ``0``: make it now; a number: wait that long and ask again; ``None``: finished
        without sending (the rate limit outlasts what this call may wait), see :meth:`result`."""
        if self.gate is None:
            return 0.0
        wait = self.gate.hold(self._ticket, self.policy, self.deadline)
        if isinstance(wait, Refusal):
            self._refuse(wait)
            return None
        return wait

    def abandon(self) -> None:
        """The attempt ended without an outcome (cancelled, killed): let another request go first."""
        if self.gate is not None:
            self.gate.release(self._ticket)

    def _refuse(self, refusal: Refusal) -> None:
        call = self.call
        log.warning("%s %s: rate limited; not sent: %s", call.method, call.path, refusal.reason)
        self._error = RateLimitedError(
            429,
            f"{refusal.message} (this request was not sent: {refusal.reason})",
            retry_after=refusal.retry_after,
            method=call.method,
            path=call.path,
        )

    def settle(self, outcome: Answer | Failure) -> float | None:
        """Take an attempt's outcome. ``None``: finished, see :meth:`result`; a number: wait, then retry."""
        self.attempts += 1
        call = self.call
        gate = self.gate
        if gate is not None and not (isinstance(outcome, Answer) and outcome.status == 429):
            gate.passed(self._ticket, answered=isinstance(outcome, Answer))
        if isinstance(outcome, Answer):
            if 200 <= outcome.status < 300:
                log.debug("%s %s -> %s (attempt %d)", call.method, call.path, outcome.status, self.attempts)
                self._read(outcome)
                return None
            api_error = api_error_from_response(
                outcome.status,
                outcome.body.decode("utf-8", "replace"),
                method=call.method,
                path=call.path,
                headers=outcome.headers,
            )
            if call.recover is not None:
                try:
                    self._result = call.recover(api_error, self._maybe_done)
                except OpenRouterAPIError:
                    pass
                else:
                    log.info("%s %s: HTTP %s, taken as the outcome", call.method, call.path, outcome.status)
                    return None
            if outcome.status >= 500:
                # A gateway may give up while the API goes ahead: the change may have been made.
                self._maybe_done = True
            error: OpenRouterError = api_error
            retryable = is_retryable(call.method, status=outcome.status, repeatable=call.repeatable)
            retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
            what = f"HTTP {outcome.status}"
            paused = None
            if gate is not None and outcome.status == 429:
                # Every call through the gate waits out the pause, this one included.
                paused = gate.strike(self._ticket, self.policy, retry_after, api_error.message)
            # The server's wait, or the shared pause when that is longer (another request's Retry-After).
            asked = retry_after if paused is None else max(paused, retry_after or 0.0)
            if self.policy.waits_too_long(asked):
                log.warning(
                    "%s %s: HTTP 429 asks to wait %g s, longer than max_retry_wait (%g s): not waiting",
                    call.method,
                    call.path,
                    asked,
                    self.policy.max_wait,
                )
                self._error = error
                return None
        else:
            error = OpenRouterTransportError(
                call.method, call.path, outcome.detail, reached_server=outcome.reached_server
            )
            error.__cause__ = outcome.cause
            if outcome.reached_server is not False:
                self._maybe_done = True
            retryable = not outcome.permanent and is_retryable(
                call.method, reached_server=outcome.reached_server, repeatable=call.repeatable
            )
            retry_after = None
            paused = None
            what = outcome.detail
        if retryable and self.attempts <= self.policy.max_retries:
            wait = self.policy.delay(self.attempts - 1, retry_after) if paused is None else paused
            if self.deadline is not None and time.monotonic() + wait >= self.deadline:
                log.warning("%s %s: %s; no time left for a retry", call.method, call.path, what)
                self._error = error
                return None
            log.warning(
                "%s %s: %s; retry %d of %d in %.2f s",
                call.method,
                call.path,
                what,
                self.attempts,
                self.policy.max_retries,
                wait,
            )
            return wait
        if retryable:
            log.warning("%s %s: %s; giving up after %d attempts", call.method, call.path, what, self.attempts)
        else:
            log.debug("%s %s: %s (not retried)", call.method, call.path, what)
        self._error = error
        return None

    def _read(self, answer: Answer) -> None:
        call = self.call
        try:
            self._result = call.parse(json.loads(answer.body))
        except (ValueError, KeyError, TypeError) as exc:
            # Neither the body nor a value from it is quoted: a create's answer carries a plaintext key.
            if isinstance(exc, json.JSONDecodeError):
                kind = answer.headers.get("Content-Type", "no content type")
                problem = f"the body is not JSON ({kind}, {len(answer.body)} bytes)"
            elif isinstance(exc, Malformed):
                problem = str(exc)
            elif isinstance(exc, KeyError):
                problem = f"a required field is missing: {exc.args[0]!r}"
            else:
                problem = f"a field has a value of the wrong type ({type(exc).__name__})"
            self._error = UnreadableResponseError(
                answer.status, f"unreadable answer: {problem}", method=call.method, path=call.path
            )

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return cast("T", self._result)


def policy_for(config: OpenRouterConnectionConfig, jitter: Callable[[float], float] | None) -> RetryPolicy:
    return RetryPolicy(
        max_retries=config.max_retries,
        max_wait=config.max_retry_wait,
        jitter=jitter or default_jitter,
        attempt_timeout=config.timeout,
    )


def _root_cause(exc: BaseException) -> str:
    """A short description of the innermost cause, e.g. ``ConnectionRefusedError: [Errno 111] ...``."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        if nested is None:
            nested = current.__cause__ or current.__context__
        if nested is None:
            break
        current = nested
    text = str(current)
    # urllib3 prefixes messages with the repr of its connection object: noise.
    text = text.split(": ", 1)[-1] if text.startswith("<") else text
    return (f"{type(current).__name__}: {text}" if text else type(current).__name__)[:300]
