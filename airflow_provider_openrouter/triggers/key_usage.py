"""Trigger that watches an OpenRouter key's usage from the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._usage import (
    ProgressLog,
    UsageConditions,
    describe_key,
    evaluate,
    unavailable_message,
)
from airflow_provider_openrouter.exceptions import (
    NO_CLEAR_ANSWER,
    AuthenticationError,
    NotFoundError,
    OpenRouterError,
    OpenRouterValidationError,
    RateLimitedError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_openrouter._usage import UsageCheck
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey

__all__ = ["OpenRouterKeyUsageTrigger"]

CLASSPATH = "airflow_provider_openrouter.triggers.key_usage.OpenRouterKeyUsageTrigger"

# How long triggers keep using a connection they looked up, so that an edited connection is picked up.
HOOK_REFRESH_SECONDS = 300.0


class _SharedHook:
    """A hook shared by the triggers of one event loop, and whether a call through it has completed."""

    __slots__ = ("created", "hook", "lock", "warm")

    def __init__(self, hook: OpenRouterHook) -> None:
        self.hook = hook
        self.created = time.monotonic()
        # Until one call has completed the hook has not read its connection: triggers that start together
        # wait for that first call instead of each looking the connection up.
        self.lock = asyncio.Lock()
        self.warm = False

    async def get_key(self, key_hash: str) -> ApiKey:
        if not self.warm:
            async with self.lock:
                if not self.warm:
                    try:
                        return await self.hook.aget_key(key_hash)
                    finally:
                        self.warm = True
        return await self.hook.aget_key(key_hash)


# One hook per event loop and connection id, shared by every trigger on that loop: a triggerer watching
# 1,000 keys looks its connection up once instead of 1,000 times and holds one hook, not 1,000. The hook keeps
# no per-call state, so concurrent polls may share it.
_HOOKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SharedHook]] = (
    weakref.WeakKeyDictionary()
)
_HOOKS_LOCK = threading.Lock()


def _shared(conn_id: str, *, stale: OpenRouterHook | None = None) -> _SharedHook:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

    loop = asyncio.get_running_loop()
    with _HOOKS_LOCK:
        per_loop = _HOOKS.setdefault(loop, {})
        entry = per_loop.get(conn_id)
        if (
            entry is None
            or time.monotonic() - entry.created > HOOK_REFRESH_SECONDS
            or (stale is not None and entry.hook is stale)
        ):
            entry = _SharedHook(OpenRouterHook(openrouter_conn_id=conn_id))
            per_loop[conn_id] = entry
        return entry


def shared_hook(conn_id: str, *, stale: OpenRouterHook | None = None) -> OpenRouterHook:
    """The running loop's hook for ``conn_id``; a new one after ``HOOK_REFRESH_SECONDS``, or when the
    caller found ``stale`` unusable (the connection's key may have been rotated)."""
    return _shared(conn_id, stale=stale).hook


class OpenRouterKeyUsageTrigger(BaseTrigger):
    """Poll one key until its usage meets the conditions, then fire one event.

    The event's payload is ``{"status", "message", "snapshot", ...}`` where ``status`` is ``"success"``,
    ``"timeout"`` (``deadline`` passed), ``"key_gone"`` (the key is disabled, expired or deleted; ``reason``
    says which) or ``"error"`` (more than ``max_consecutive_failures`` polls in a row failed, or OpenRouter
    refused the request). ``snapshot`` is the last usage snapshot seen, or ``None``.

    All triggers in one triggerer share one hook per connection id and one HTTP connection pool (the hook
    keeps one client session per event loop), so each watched key costs a few small objects and one request
    per ``poll_interval``. The shared hook reads the connection once, then again every five minutes, or at
    once when OpenRouter answers 401 (a rotated management key is picked up; a second 401 ends the wait).

    :param key_hash: Hash of the key to watch: 64 lower-case hex characters.
    :param key_name: The key's name, only to make log lines and messages readable; a name as the operators
        accept it, or ``None``.
    :param usage_window: ``"daily"``, ``"weekly"``, ``"monthly"`` or ``"lifetime"``.
    :param usage_at_least: Fire when the usage in the window reaches this many USD (0 to 1,000,000,000).
    :param limit_fraction_at_least: Fire when the usage in the window reaches this share of the key's limit,
        a ratio above 0 and at most 1.
    :param limit_remaining_at_most: Fire when the key's ``limit_remaining`` falls to this many USD (0 to
        1,000,000,000). At least one of the three conditions is required.
    :param include_byok: Count BYOK usage in the window too.
    :param match_all: Fire only when every given condition holds (default: any one).
    :param openrouter_conn_id: The OpenRouter connection to use.
    :param poll_interval: Seconds between polls: a finite number, at least 0.05.
    :param deadline: A timezone-aware moment (an ISO 8601 string with an offset, or a ``datetime``) after
        which the trigger gives up with a ``"timeout"`` event; ``None`` for none.
    :param max_consecutive_failures: How many polls in a row (a whole number, 0 or more) may fail transiently
        (network, 5xx, unreadable answer) before the trigger gives up with an ``"error"`` event.

    Every argument is validated when the trigger is built, with the rules of the sensor that defers to it:
    a bad one raises :class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError` naming it.
    """

    def __init__(
        self,
        *,
        key_hash: str,
        key_name: str | None = None,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: str | None = None,
        max_consecutive_failures: int = 3,
        **conditions: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # A trigger is built from its serialized kwargs in the triggerer too: check everything, so that a
        # wrongly typed argument is a named error here rather than a crash inside run().
        self.key_hash = v.validate_key_hash(key_hash)
        self.key_name = None if key_name is None else v.validate_name(key_name, field="key_name")
        # Flat keyword arguments, as serialize() writes them and triggers stored in the database hold them.
        self.conditions = UsageConditions(**conditions)
        self.openrouter_conn_id = v.validate_conn_id(openrouter_conn_id)
        self.poll_interval = v.validate_poll_interval(poll_interval, field="poll_interval")
        self.deadline = (
            None if deadline is None else v.validate_instant(deadline, field="deadline").isoformat()
        )
        self.max_consecutive_failures = v.validate_int(
            max_consecutive_failures, field="max_consecutive_failures"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "key_hash": self.key_hash,
                "key_name": self.key_name,
                **self.conditions.to_dict(),
                "openrouter_conn_id": self.openrouter_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_failures": self.max_consecutive_failures,
            },
        )

    def _deadline_ts(self) -> float | None:
        if self.deadline is None:
            return None
        return v.validate_instant(self.deadline, field="deadline").timestamp()

    def _event(self, status: str, message: str, last: UsageCheck | None, **extra: Any) -> TriggerEvent:
        return TriggerEvent(  # type: ignore[no-untyped-call]
            {
                "status": status,
                "message": message,
                "key_hash": self.key_hash,
                "snapshot": None if last is None else last.snapshot,
                **extra,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        who = describe_key(self.key_hash, self.key_name)
        deadline = self._deadline_ts()
        failures = 0
        refreshed = False
        last: UsageCheck | None = None  # the latest check, for the snapshot of the event that ends the wait
        progress = ProgressLog()
        while True:
            wait = self.poll_interval
            shared = _shared(self.openrouter_conn_id)
            hook = shared.hook
            try:
                key = await shared.get_key(self.key_hash)
            except AuthenticationError as err:
                if not refreshed:
                    # The management key may have been rotated since the shared hook read the connection: look
                    # it up again once before giving up.
                    refreshed = True
                    shared_hook(self.openrouter_conn_id, stale=hook)
                    self.log.warning("%s: %s; reading connection %r again", who, err, self.openrouter_conn_id)
                    continue
                yield self._event("error", f"Polling {who} failed: {type(err).__name__}: {err}", last)
                return
            except NotFoundError:
                yield self._event(
                    "key_gone",
                    unavailable_message(self.key_hash, self.key_name, "deleted"),
                    last,
                    reason="deleted",
                )
                return
            except RateLimitedError as err:
                # OpenRouter asked us to slow down: that is not a failure of the watch, so it does not count
                # towards max_consecutive_failures; the deadline still bounds the wait.
                wait = max(wait, err.retry_after or 0.0)
                self.log.warning("%s: rate limited (%s); next poll in %.1f s", who, err, wait)
            except NO_CLEAR_ANSWER as err:
                failures += 1
                if failures > self.max_consecutive_failures:
                    yield self._event(
                        "error",
                        f"Polling {who} failed {failures} times in a row (max_consecutive_failures="
                        f"{self.max_consecutive_failures}); last error: {type(err).__name__}: {err}",
                        last,
                    )
                    return
                self.log.warning(
                    "%s: poll failed (%d of %d tolerated in a row): %s: %s",
                    who,
                    failures,
                    self.max_consecutive_failures,
                    type(err).__name__,
                    err,
                )
            except OpenRouterError as err:
                # A refused permission, unusable connection settings: polling again will not help.
                yield self._event("error", f"Polling {who} failed: {type(err).__name__}: {err}", last)
                return
            else:
                failures = 0
                refreshed = False
                try:
                    check = evaluate(key, self.conditions)
                except OpenRouterValidationError as err:
                    yield self._event("error", str(err), last, field=err.field, problem=err.problem)
                    return
                last = check
                if progress.due(check.progress):
                    self.log.info("%s", check.progress)
                if check.unavailable is not None:
                    yield self._event(
                        "key_gone",
                        unavailable_message(self.key_hash, key.name, check.unavailable, key.expires_at),
                        last,
                        reason=check.unavailable,
                    )
                    return
                if check.met:
                    yield self._event("success", check.progress, last)
                    return
            now = time.time()
            if deadline is not None:
                if now >= deadline:
                    yield self._event(
                        "timeout",
                        f"Timed out waiting for {who}: the deadline "
                        f"{dt.datetime.fromtimestamp(deadline, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} passed "
                        "before the usage conditions were met",
                        last,
                    )
                    return
                # Wake at the deadline for one last poll rather than overshooting it by a whole interval.
                wait = min(wait, deadline - now)
            await asyncio.sleep(max(0.0, wait))
