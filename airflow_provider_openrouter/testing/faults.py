"""Faults the local OpenRouter can inject into its answers.

A fault is armed with :meth:`LocalOpenRouter.inject` for requests matching a method and a path, for a number
of times (:class:`RateLimit`: for a stretch of time). Rules are matched in the order they were armed;
:class:`Latency` delays a request and lets later rules (or normal processing) decide the answer, every other
fault decides it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

API_PREFIX = "/api/v1"

_REASONS = {
    400: "Invalid request parameters",
    401: "Missing Authentication header",
    402: "Insufficient credits",
    403: "Only management keys can perform this operation",
    404: "Resource not found",
    408: "Request timed out",
    409: "Resource conflict. Please try again later.",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def default_message(code: int) -> str:
    return _REASONS.get(code, "Internal Server Error" if code >= 500 else "Error")


@dataclass(frozen=True)
class Status:
    """Answer with ``code`` and an error body shaped like the real API's.

    ``retry_after`` becomes the ``Retry-After`` header: a number of seconds or a string (an HTTP date).
    ``headers`` adds any others, e.g. ``X-RateLimit-Remaining``. With ``after_commit`` the request is acted on
    first (a gateway that gave up while the API went ahead): a create answered 502 has created the key.
    """

    code: int
    retry_after: float | str | None = None
    message: str | None = None
    headers: dict[str, str] | None = None
    after_commit: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "status",
            "code": self.code,
            "retry_after": self.retry_after,
            "message": self.message,
            "headers": self.headers,
            "after_commit": self.after_commit,
        }


@dataclass(frozen=True)
class RateLimit:
    """Answer 429 to every matching request for ``seconds`` from the first one it meets, as an account's rate
    limit does once it is used up; then the rule is spent and requests are served again.

    ``retry_after`` becomes the ``Retry-After`` header (``None``: no header, the client picks its backoff).
    The window is time, not a count: ``times`` does not apply to this fault.
    """

    seconds: float
    retry_after: float | str | None = None

    def answer(self) -> Status:
        return Status(429, retry_after=self.retry_after)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "rate_limit", "seconds": self.seconds, "retry_after": self.retry_after}


@dataclass(frozen=True)
class HtmlError:
    """Answer with a non-JSON page, as a proxy in front of the API does (``after_commit``: as for Status)."""

    code: int = 502
    after_commit: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"kind": "html", "code": self.code, "after_commit": self.after_commit}


@dataclass(frozen=True)
class Latency:
    """Wait ``seconds`` before handling the request.

    The request is handled after the wait even if the client has given up by then, as a slow server does: a
    create that times out on the client's side may still create the key.
    """

    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": "latency", "seconds": self.seconds}


class InFlightMeter:
    """How many requests a :class:`MeteredLatency` held at once, at most (:attr:`peak`), and in all.

    A request counts from its arrival until its delay is over. A client cannot have its answer sooner, so a
    client that waits for an answer before it sends its next request never shows here as more requests than
    it has at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: list[float] = []  # when the delay of each request still held ends (monotonic)
        self.peak = 0
        self.count = 0

    def arrive(self, seconds: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._ends = [end for end in self._ends if end > now]
            self._ends.append(now + seconds)
            self.peak = max(self.peak, len(self._ends))
            self.count += 1

    def reset(self) -> None:
        with self._lock:
            self._ends.clear()
            self.peak = 0
            self.count = 0


@dataclass(frozen=True)
class MeteredLatency(Latency):
    """:class:`Latency` that counts the requests it holds at once in :attr:`meter`.

    For a local OpenRouter in this process only: over the control endpoints it arrives as a plain
    :class:`Latency`, and the count stays in the other process.
    """

    meter: InFlightMeter = field(default_factory=InFlightMeter, compare=False)


@dataclass(frozen=True)
class Trickle:
    """Act on the request, then send the answer ``chunk`` bytes every ``interval`` seconds.

    Each byte arrives well within any read timeout, so only a client that bounds the whole answer gives up;
    the server stops sending when the client has gone.
    """

    interval: float = 0.5
    chunk: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"kind": "trickle", "interval": self.interval, "chunk": self.chunk}


@dataclass(frozen=True)
class DropBeforeCommit:
    """Close the connection without acting on the request or answering it."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "drop_before_commit"}


@dataclass(frozen=True)
class DropAfterCommit:
    """Act on the request (a create creates the key), then close the connection without answering."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "drop_after_commit"}


Fault = Status | RateLimit | HtmlError | Latency | Trickle | DropBeforeCommit | DropAfterCommit


def fault_from_json(data: dict[str, Any]) -> Fault:
    kind = data.get("kind")
    if kind == "status":
        return Status(
            int(data["code"]),
            retry_after=data.get("retry_after"),
            message=data.get("message"),
            headers=data.get("headers"),
            after_commit=bool(data.get("after_commit", False)),
        )
    if kind == "rate_limit":
        return RateLimit(float(data["seconds"]), retry_after=data.get("retry_after"))
    if kind == "html":
        return HtmlError(int(data.get("code", 502)), after_commit=bool(data.get("after_commit", False)))
    if kind == "latency":
        return Latency(float(data["seconds"]))
    if kind == "trickle":
        return Trickle(float(data.get("interval", 0.5)), int(data.get("chunk", 1)))
    if kind == "drop_before_commit":
        return DropBeforeCommit()
    if kind == "drop_after_commit":
        return DropAfterCommit()
    raise ValueError(f"unknown fault kind {kind!r}")


PathPattern = str | re.Pattern[str] | None


def _api_path(path: str) -> str:
    """``/api/v1/keys`` -> ``/keys``; paths already without the prefix stay as they are."""
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return path[len(API_PREFIX) :] or "/"
    return path


@dataclass
class FaultRule:
    """``fault`` for requests matching ``method`` and ``path``, ``times`` more times (``None``: forever).

    ``path`` is matched against the API path with or without the ``/api/v1`` prefix: a string is exact, or a
    prefix when it ends in ``*``; a compiled pattern must match the whole path.
    """

    fault: Fault
    method: str | None = None
    path: PathPattern = None
    times: int | None = 1
    # When a RateLimit's window began (monotonic): at the first request it met.
    opened_at: float | None = field(default=None, compare=False, repr=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return True
        api_path = _api_path(path)
        if isinstance(self.path, re.Pattern):
            return bool(self.path.fullmatch(api_path) or self.path.fullmatch(path))
        pattern = _api_path(self.path)
        if pattern.endswith("*"):
            return api_path.startswith(pattern[:-1])
        return api_path == pattern

    def to_json(self) -> dict[str, Any]:
        regex = isinstance(self.path, re.Pattern)
        return {
            "fault": self.fault.to_json(),
            "method": self.method,
            "path": self.path.pattern if isinstance(self.path, re.Pattern) else self.path,
            "path_regex": regex,
            "times": self.times,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        path = data.get("path")
        if path is not None and data.get("path_regex"):
            path = re.compile(path)
        times = data.get("times", 1)
        return cls(
            fault=fault_from_json(data["fault"]),
            method=data.get("method"),
            path=path,
            times=None if times is None else int(times),
        )


class FaultPlan:
    """The armed rules, consumed in order by the server's request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, method: str, path: str) -> list[Fault]:
        """The faults for one request: any latencies, then at most one fault that decides the answer."""
        taken: list[Fault] = []
        with self._lock:
            for rule in list(self._rules):
                if not rule.matches(method, path):
                    continue
                if isinstance(rule.fault, RateLimit):
                    now = time.monotonic()
                    rule.opened_at = now if rule.opened_at is None else rule.opened_at
                    if now - rule.opened_at >= rule.fault.seconds:
                        self._rules.remove(rule)  # the window is over
                        continue
                    taken.append(rule.fault.answer())
                    break
                taken.append(rule.fault)
                if isinstance(rule.fault, MeteredLatency):
                    rule.fault.meter.arrive(rule.fault.seconds)
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                if not isinstance(rule.fault, Latency):
                    break
        return taken
