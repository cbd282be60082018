"""Trigger that watches rotated-out keys from the triggerer until retiring one of them is due."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._claims import retired_of
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._sync_retirement import due_at, validate_retirement, waiting_reason
from airflow_provider_openrouter.exceptions import (
    NO_CLEAR_ANSWER,
    AuthenticationError,
    NotFoundError,
    OpenRouterError,
    OpenRouterValidationError,
    RateLimitedError,
)
from airflow_provider_openrouter.triggers.key_usage import shared_hook

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


__all__ = ["RetiredKeysTrigger"]

CLASSPATH = "airflow_provider_openrouter.triggers.retired_keys.RetiredKeysTrigger"


class RetiredKeysTrigger(BaseTrigger):
    """Read each rotated-out key by hash until a step of its retirement is due, then fire one event.

    A step is due when :func:`~airflow_provider_openrouter._sync_retirement.due_at` (the moment the rule
    disables or deletes it, by its ``last_used_at`` as read now) has come; a use read later only pushes that
    moment back, so between reads the trigger sleeps until the soonest of them or ``poll_interval``, whichever
    comes first. A key found gone ends the wait too: the task walks again and sees what is left.

    The event's payload is ``{"status", "message", "key_hash"}``: ``status`` is ``"due"`` or ``"error"``
    (OpenRouter refused the request, or more than ``max_consecutive_failures`` reads in a row failed).

    :param keys: The keys to watch: ``[{"key_hash": ..., "key_name": "<name> [retired <epoch>]"}]``.
    :param rules: The retirement durations in seconds (``rotation_overlap``, ``rotation_grace``,
        ``retire_when_idle_for``, ``retire_deadline``), checked as the operator checks them.
    :param openrouter_conn_id: The OpenRouter connection to use.
    :param poll_interval: Longest time between reads, in seconds (at least 0.05).
    :param max_consecutive_failures: Reads in a row that may fail transiently before an ``"error"`` event.
    """

    def __init__(
        self,
        *,
        keys: list[dict[str, str]],
        rules: dict[str, Any],
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 300.0,
        max_consecutive_failures: int = 3,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # Built from its serialized kwargs in the triggerer too: a bad argument is a named error here.
        if not isinstance(keys, list) or not keys:
            raise OpenRouterValidationError("keys", "must be a non-empty list of {key_hash, key_name}")
        self.keys: list[dict[str, str]] = []
        # Each key's hash, the name it was rotated out of, and when.
        self._watched: list[tuple[str, str, float]] = []
        for entry in keys:
            if not isinstance(entry, dict):
                raise OpenRouterValidationError("keys", f"each entry must be a dict (got {entry!r})")
            name = v.validate_name(entry.get("key_name"), field="keys.key_name")
            rotated = retired_of(name)
            if rotated is None:
                raise OpenRouterValidationError(
                    "keys.key_name",
                    f"must be a rotated-out key's name, '<name> [retired <epoch>]' (got {name!r})",
                )
            key_hash = v.validate_key_hash(entry.get("key_hash"))
            self.keys.append({"key_hash": key_hash, "key_name": name})
            self._watched.append((key_hash, *rotated))
        if not isinstance(rules, dict):
            raise OpenRouterValidationError("rules", "must be a dict of the retirement durations")
        self.rules = validate_retirement(
            rotation_overlap=rules.get("rotation_overlap"),
            rotation_grace=rules.get("rotation_grace"),
            retire_when_idle_for=rules.get("retire_when_idle_for"),
            retire_deadline=rules.get("retire_deadline"),
        )
        self.openrouter_conn_id = v.validate_conn_id(openrouter_conn_id)
        self.poll_interval = v.validate_poll_interval(poll_interval, field="poll_interval")
        self.max_consecutive_failures = v.validate_int(
            max_consecutive_failures, field="max_consecutive_failures"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "keys": [dict(entry) for entry in self.keys],
                "rules": dict(self.rules),
                "openrouter_conn_id": self.openrouter_conn_id,
                "poll_interval": self.poll_interval,
                "max_consecutive_failures": self.max_consecutive_failures,
            },
        )

    def _event(self, status: str, message: str, key_hash: str | None = None) -> TriggerEvent:
        return TriggerEvent({"status": status, "message": message, "key_hash": key_hash})  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        failures = 0
        refreshed = False
        seen: dict[str, str | None] = {}  # last_used_at per hash: a new use is logged once
        while True:
            wait = self.poll_interval
            hook = shared_hook(self.openrouter_conn_id)
            try:
                read = [(await hook.aget_key(key_hash), name, at) for key_hash, name, at in self._watched]
            except NotFoundError as err:
                yield self._event("due", f"A rotated-out key is gone ({err}): looking again.")
                return
            except AuthenticationError as err:
                if not refreshed:
                    # The management key may have been rotated since the shared hook read the connection.
                    refreshed = True
                    shared_hook(self.openrouter_conn_id, stale=hook)
                    continue
                yield self._event(
                    "error", f"Reading the rotated-out keys failed: {type(err).__name__}: {err}"
                )
                return
            except RateLimitedError as err:
                # OpenRouter asked us to slow down: not a failure of the watch.
                wait = max(wait, err.retry_after or 0.0)
                self.log.warning("Rate limited (%s); next read in %.1f s", err, wait)
            except NO_CLEAR_ANSWER as err:
                failures += 1
                if failures > self.max_consecutive_failures:
                    yield self._event(
                        "error",
                        f"Reading the rotated-out keys failed {failures} times in a row "
                        f"(max_consecutive_failures={self.max_consecutive_failures}); last error: "
                        f"{type(err).__name__}: {err}",
                    )
                    return
                self.log.warning("Reading the rotated-out keys failed (%d in a row): %s", failures, err)
            except OpenRouterError as err:
                # A refused permission, unusable connection settings: reading again will not help.
                yield self._event(
                    "error", f"Reading the rotated-out keys failed: {type(err).__name__}: {err}"
                )
                return
            else:
                failures = 0
                refreshed = False
                now = time.time()
                soonest = min(due_at(key, at, rules=self.rules) for key, _, at in read)
                due = [key for key, _, at in read if due_at(key, at, rules=self.rules) <= now]
                for key, name, at in read:
                    if not due and seen.get(key.hash, "") != key.last_used_at:
                        seen[key.hash] = key.last_used_at
                        reason = waiting_reason(key, name, at, now=now, rules=self.rules)
                        self.log.info("Keeping key %r (hash %s): %s.", key.name, key.hash, reason)
                if due:
                    yield self._event(
                        "due", f"Retiring key {due[0].name!r} (hash {due[0].hash}) is due.", due[0].hash
                    )
                    return
                wait = min(wait, soonest - now)
            await asyncio.sleep(max(0.0, wait))
