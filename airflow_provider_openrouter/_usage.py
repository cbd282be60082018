"""What "a key's usage has reached the threshold" means: the one definition the sensor and the trigger share.

Pure functions over :class:`~airflow_provider_openrouter.models.ApiKey`: no I/O, no Airflow runtime, so that a
poll in a worker and a poll in the triggerer decide, log and report exactly the same way.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._redaction import quoted
from airflow_provider_openrouter._validation import (
    parse_instant,
    validate_bool,
    validate_fraction,
    validate_limit,
    validate_usage_window,
)
from airflow_provider_openrouter.exceptions import OpenRouterValidationError

if TYPE_CHECKING:
    from airflow_provider_openrouter.models import ApiKey

CONDITION_FIELDS: Final[tuple[str, ...]] = (
    "usage_at_least",
    "limit_fraction_at_least",
    "limit_remaining_at_most",
)
# Statuses of the one event the trigger yields.
EVENT_STATUSES: Final[tuple[str, ...]] = ("success", "error", "timeout", "key_gone")


def _usage_field(window: str) -> str:
    return "usage" if window == "lifetime" else f"usage_{window}"


def _byok_field(window: str) -> str:
    return "byok_usage" if window == "lifetime" else f"byok_usage_{window}"


def _no_limit(field: str, who: str, consequence: str) -> OpenRouterValidationError:
    return OpenRouterValidationError(
        field,
        f"{who} has no spending limit, so {consequence}; set a limit on the key or wait on usage_at_least "
        "instead",
    )


class UsageConditions:
    """The thresholds a sensor waits for, validated.

    The measured usage is the key's usage in ``usage_window`` (UTC day, week starting Monday, month, or
    lifetime), plus its BYOK usage in the same window when ``include_byok``. ``usage_at_least`` compares it
    with a USD amount, ``limit_fraction_at_least`` with a share of the key's limit, and
    ``limit_remaining_at_most`` compares OpenRouter's own ``limit_remaining`` with a USD amount. The
    conditions are met when any one of them holds, or every one of them with ``match_all``.

    The constructor validates raw (possibly rendered-template) values; an error names the offending field.
    """

    # A plain slotted class rather than a dataclass: this module is imported when a DAG file is parsed, and
    # generating a dataclass costs milliseconds there.
    __slots__ = (
        "include_byok",
        "limit_fraction_at_least",
        "limit_remaining_at_most",
        "match_all",
        "usage_at_least",
        "usage_window",
    )

    def __init__(
        self,
        *,
        usage_window: Any = "daily",
        usage_at_least: Any = None,
        limit_fraction_at_least: Any = None,
        limit_remaining_at_most: Any = None,
        include_byok: Any = False,
        match_all: Any = False,
    ) -> None:
        self.usage_window = validate_usage_window(usage_window)
        self.usage_at_least = validate_limit(usage_at_least, field="usage_at_least")
        self.limit_fraction_at_least = validate_fraction(limit_fraction_at_least)
        self.limit_remaining_at_most = validate_limit(
            limit_remaining_at_most, field="limit_remaining_at_most"
        )
        self.include_byok = validate_bool(include_byok, field="include_byok")
        self.match_all = validate_bool(match_all, field="match_all")
        if not self.given():
            raise OpenRouterValidationError(
                "/".join(CONDITION_FIELDS), "give at least one condition to wait for"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UsageConditions) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"UsageConditions({fields})"

    def given(self) -> list[str]:
        return [name for name in CONDITION_FIELDS if getattr(self, name) is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; ``UsageConditions(**d)`` rebuilds it."""
        return {
            "usage_window": self.usage_window,
            "usage_at_least": self.usage_at_least,
            "limit_fraction_at_least": self.limit_fraction_at_least,
            "limit_remaining_at_most": self.limit_remaining_at_most,
            "include_byok": self.include_byok,
            "match_all": self.match_all,
        }

    @property
    def usage_label(self) -> str:
        return _usage_field(self.usage_window) + ("+byok" if self.include_byok else "")

    def measured_usage(self, key: ApiKey) -> float:
        value: float = getattr(key, _usage_field(self.usage_window))
        if self.include_byok:
            value += getattr(key, _byok_field(self.usage_window))
        return value


class UsageCheck:
    """One poll's outcome: whether the wait is over, one progress line for the log, and a JSON-safe snapshot.

    ``unavailable`` is ``"disabled"`` or ``"expired"`` when the wait can no longer succeed. The snapshot dict
    is built when first read: most polls of a long wait only log their line, and a trigger that keeps the
    last check while it sleeps holds the key's few fields rather than a dict of them.
    """

    __slots__ = (
        "_snapshot",
        "checked_at",
        "fraction",
        "key",
        "met",
        "progress",
        "results",
        "unavailable",
        "used",
    )

    def __init__(self, key: ApiKey, conditions: UsageConditions, now: dt.datetime) -> None:
        # Deciding is building: each outcome is stored where it is worked out, for the progress line now and
        # the snapshot later.
        self.key = key
        self.checked_at = now
        self._snapshot: tuple[str, bool, bool] | dict[str, Any] = (
            conditions.usage_window,
            conditions.include_byok,
            conditions.match_all,
        )
        who = describe_key(key.hash, key.name)
        used = self.used = conditions.measured_usage(key)
        label = conditions.usage_label
        parts: list[str] = []
        results: dict[str, dict[str, Any]] = {}
        self.results = results

        if conditions.usage_at_least is not None:
            threshold = conditions.usage_at_least
            met = used >= threshold
            share = f" ({percent(used / threshold)})" if threshold > 0 else ""
            parts.append(f"{label} {money(used)} of {money(threshold)} threshold{share}")
            results["usage_at_least"] = {"threshold": threshold, "value": used, "met": met}

        fraction: float | None = None
        if key.limit is not None and key.limit > 0:
            fraction = used / key.limit
        self.fraction = fraction
        if conditions.limit_fraction_at_least is not None:
            if key.limit is None:
                raise _no_limit("limit_fraction_at_least", who, "no share of it can be used")
            threshold = conditions.limit_fraction_at_least
            # A limit of 0 is spent from the start.
            ratio = fraction if fraction is not None else math.inf
            met = ratio >= threshold
            shown = percent(ratio) if math.isfinite(ratio) else "all"
            parts.append(
                f"{label} {money(used)} is {shown} of the {money(key.limit)} limit "
                f"(threshold {percent(threshold)})"
            )
            results["limit_fraction_at_least"] = {
                "threshold": threshold,
                "value": fraction,
                "met": met,
            }

        if conditions.limit_remaining_at_most is not None:
            if key.limit_remaining is None:
                raise _no_limit("limit_remaining_at_most", who, "nothing remains of one")
            threshold = conditions.limit_remaining_at_most
            met = key.limit_remaining <= threshold
            parts.append(
                f"limit_remaining {money(key.limit_remaining)} of {money(key.limit)} "
                f"(threshold at most {money(threshold)})"
            )
            results["limit_remaining_at_most"] = {
                "threshold": threshold,
                "value": key.limit_remaining,
                "met": met,
            }

        flags = [r["met"] for r in results.values()]
        self.met = all(flags) if conditions.match_all else any(flags)
        self.unavailable = unavailable_reason(key, now)
        if self.unavailable is not None:
            verdict = f"key is {self.unavailable}"
            self.met = False
        else:
            verdict = "condition met" if self.met else "waiting"
        self.progress = f"{who}: {'; '.join(parts)} → {verdict}"

    @property
    def snapshot(self) -> dict[str, Any]:
        if isinstance(self._snapshot, dict):
            return self._snapshot
        usage_window, include_byok, match_all = self._snapshot
        key = self.key
        self._snapshot = {
            "key_hash": key.hash,
            "key_name": key.name,
            "disabled": key.disabled,
            "expires_at": key.expires_at,
            "usage_window": usage_window,
            "include_byok": include_byok,
            "measured_usage": self.used,
            "limit": key.limit,
            "limit_remaining": key.limit_remaining,
            "limit_reset": key.limit_reset,
            "include_byok_in_limit": key.include_byok_in_limit,
            "fraction_of_limit": self.fraction,
            "usage": key.usage,
            "usage_daily": key.usage_daily,
            "usage_weekly": key.usage_weekly,
            "usage_monthly": key.usage_monthly,
            "byok_usage": key.byok_usage,
            "byok_usage_daily": key.byok_usage_daily,
            "byok_usage_weekly": key.byok_usage_weekly,
            "byok_usage_monthly": key.byok_usage_monthly,
            "conditions": self.results,
            "match_all": match_all,
            "met": self.met,
            "checked_at": self.checked_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return self._snapshot

    def __repr__(self) -> str:
        return f"UsageCheck(met={self.met!r}, unavailable={self.unavailable!r}, progress={self.progress!r})"


def money(usd: float | None) -> str:
    if usd is None:
        return "none"
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    # Sub-cent spend is common on cheap models; two decimals would show it as $0.00.
    return f"{sign}${usd:,.2f}" if usd >= 0.01 or usd == 0 else f"{sign}${usd:.4f}"


def percent(ratio: float) -> str:
    return f"{ratio * 100:.0f} %"


def describe_key(key_hash: str, key_name: str | None) -> str:
    short = key_hash[:12] + "…"
    return f"key {quoted(key_name)} ({short})" if key_name else f"key {short}"


def unavailable_reason(key: ApiKey, now: dt.datetime) -> str | None:
    if key.disabled:
        return "disabled"
    if key.expires_at:
        expires = parse_instant(key.expires_at)
        if expires is not None and expires <= now:
            return "expired"
    return None


#: How often a wait whose figures do not move logs its (unchanged) progress line anyway, to show it is alive.
PROGRESS_REPEAT_SECONDS: Final = 600.0


class ProgressLog:
    """Which polls of one wait log their progress line: the first, each whose line differs from the last one
    logged (the figures moved, or the verdict), and an unchanged one every :data:`PROGRESS_REPEAT_SECONDS`.

    A wait of hours at a short interval logs what changed rather than the same line hundreds of times, and a
    triggerer watching thousands of keys does not spend its event loop writing lines nobody needs: on a 2-core
    machine, writing one line per poll made a round of 1,000 trigger polls half as slow again.
    """

    __slots__ = ("_at", "_line")

    def __init__(self) -> None:
        self._line: str | None = None
        self._at = 0.0

    def due(self, line: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if line == self._line and now - self._at < PROGRESS_REPEAT_SECONDS:
            return False
        self._line, self._at = line, now
        return True


def evaluate(key: ApiKey, conditions: UsageConditions, *, now: dt.datetime | None = None) -> UsageCheck:
    """Decide one poll. Raises :class:`OpenRouterValidationError` (naming the field) when a condition needs a
    spending limit and the key has none."""
    return UsageCheck(key, conditions, now or dt.datetime.now(dt.timezone.utc))


def unavailable_message(
    key_hash: str, key_name: str | None, reason: str, expires_at: str | None = None
) -> str:
    who = describe_key(key_hash, key_name)
    if reason == "expired":
        return f"{who} expired at {expires_at}: its usage can no longer reach the threshold"
    if reason == "deleted":
        return f"{who} no longer exists (deleted): its usage can no longer reach the threshold"
    return f"{who} is {reason}: its usage can no longer reach the threshold"
