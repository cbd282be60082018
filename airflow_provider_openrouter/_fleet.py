"""What the fleet alerts find in one walk of the keys, which of it is new, and the one message about it.

Pure functions over :class:`~airflow_provider_openrouter.models.ApiKey` and plain dicts: no I/O, no Airflow
runtime, so that the finding, the deduplication and the message are tested without a network or a database.
The operator (:mod:`airflow_provider_openrouter.operators.fleet_alerts`) walks, reads and writes the state,
and sends.

A usage finding is decided by :func:`airflow_provider_openrouter._usage.evaluate`, the sensor's own
definition, measuring each key in the window its limit resets in (and with its BYOK usage when the limit
counts it).

Every finding carries a *fingerprint*: the condition, the key and what makes this occurrence of it distinct.
A usage finding is one per limit window and limit (``usage:<hash>:<window>:<limit>``), an expiry one per
expiry instant (``expiring:<hash>:<expires_at>``), a disabled key one per time it is disabled
(``disabled:<hash>``), low credits one per time they fall below the floor (``credits``). The state remembers
the fingerprints already reported while they are *live* (the window has not ended, the key still expires
then, the key is still disabled, the credits are still low) and forgets them after, so that the next
occurrence is reported again.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._usage import UsageConditions, describe_key, evaluate, money, percent
from airflow_provider_openrouter._validation import (
    CLAIM_MARKER,
    fail,
    parse_instant,
    validate_bool,
    validate_fraction,
    validate_limit,
    validate_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_provider_openrouter.models import ApiKey, Credits

#: The conditions, in the order a message lists them.
CONDITIONS: Final[tuple[str, ...]] = ("usage", "expiring", "disabled", "credits")
#: The arguments that turn a condition on; at least one is required.
CHECK_FIELDS: Final[tuple[str, ...]] = (
    "limit_fraction_at_least",
    "expires_within",
    "report_disabled",
    "credits_below",
)
STATE_VERSION: Final = 1
# The usage a limit counts, by the limit's reset: OpenRouter's windows are UTC days, weeks from Monday and
# calendar months, and a limit that never resets counts the lifetime usage.
_WINDOW_OF_RESET: Final[dict[str | None, str]] = {
    "daily": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    None: "lifetime",
}
_SUBJECT_WORDS: Final[dict[str, str]] = {
    "usage": "at or near the limit",
    "expiring": "expiring",
    "disabled": "disabled",
}
_HEADINGS: Final[dict[str, str]] = {
    "usage": "Near or over their spending limit",
    "expiring": "Expiring or expired",
    "disabled": "Disabled",
    "credits": "Account credits",
}


class FleetChecks:
    """The conditions one alerts task looks for, validated; an error names the offending field.

    ``limit_fraction_at_least`` (a ratio above 0, at most 1), ``expires_within`` (seconds or a ``timedelta``,
    0 for keys already expired only), ``report_disabled`` and ``credits_below`` (USD): at least one.
    """

    __slots__ = ("credits_below", "expires_within", "limit_fraction_at_least", "report_disabled")

    def __init__(
        self,
        *,
        limit_fraction_at_least: Any = None,
        expires_within: Any = None,
        report_disabled: Any = False,
        credits_below: Any = None,
    ) -> None:
        self.limit_fraction_at_least = validate_fraction(limit_fraction_at_least)
        self.expires_within = (
            None if expires_within is None else validate_seconds(expires_within, field="expires_within")
        )
        self.report_disabled = validate_bool(report_disabled, field="report_disabled")
        self.credits_below = validate_limit(credits_below, field="credits_below")
        if not self.given():
            fail("/".join(CHECK_FIELDS), "give at least one condition to alert on")

    def given(self) -> list[str]:
        return [
            name
            for name in CHECK_FIELDS
            if getattr(self, name) is not None and getattr(self, name) is not False
        ]

    def __repr__(self) -> str:
        return "FleetChecks(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def window_id(limit_reset: str | None, now: dt.datetime) -> str:
    """The limit window ``now`` falls in, as text: ``2026-12-07``, ``week-of-2026-12-07``, ``2026-12``."""
    day = now.astimezone(dt.timezone.utc).date()
    if limit_reset == "daily":
        return day.isoformat()
    if limit_reset == "weekly":
        return "week-of-" + (day - dt.timedelta(days=day.weekday())).isoformat()
    if limit_reset == "monthly":
        return f"{day.year:04d}-{day.month:02d}"
    return "lifetime"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _precise(moment: dt.datetime) -> str:
    # Compared as text: one fixed width, so that the order of the texts is the order of the instants.
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key_fields(key: ApiKey) -> dict[str, Any]:
    return {"key_hash": key.hash, "key_name": key.name, "workspace_id": key.workspace_id}


class Scan:
    """Findings of one walk: feed it every key in scope (:meth:`add`), then read :meth:`result`."""

    def __init__(self, checks: FleetChecks, now: dt.datetime) -> None:
        self.checks = checks
        self.now = now
        self.keys_checked = 0
        self.findings: list[dict[str, Any]] = []
        # Fingerprints whose occurrence has not ended: what the state keeps.
        self.live: set[str] = set()
        self._conditions: dict[tuple[str, bool], UsageConditions] = {}

    def add(self, key: ApiKey) -> None:
        if CLAIM_MARKER in (key.name or ""):
            # A key the provisioning sequence has not delivered yet: nobody uses it, it is not yet fleet.
            return
        self.keys_checked += 1
        checks, now = self.checks, self.now
        if key.disabled:
            self.live.add(f"disabled:{key.hash}")
            if checks.report_disabled:
                self._found("disabled", f"disabled:{key.hash}", _key_fields(key))
        expires = parse_instant(key.expires_at) if key.expires_at else None
        if expires is not None:
            fingerprint = f"expiring:{key.hash}:{_stamp(expires)}"
            self.live.add(fingerprint)
            left = (expires - now).total_seconds()
            if checks.expires_within is not None and left <= checks.expires_within:
                self._found(
                    "expiring",
                    fingerprint,
                    {
                        **_key_fields(key),
                        "expires_at": _stamp(expires),
                        "expired": left <= 0,
                        "seconds_left": max(left, 0.0),
                        "threshold_seconds": checks.expires_within,
                    },
                )
        if key.limit is None:
            return
        fingerprint = f"usage:{key.hash}:{window_id(key.limit_reset, now)}:{key.limit:g}"
        self.live.add(fingerprint)
        # A disabled or expired key spends no more: its usage is no news, its state is (reported above).
        if checks.limit_fraction_at_least is None or key.disabled or (expires is not None and expires <= now):
            return
        conditions = self._usage_conditions(key)
        check = evaluate(key, conditions, now=now)
        if check.results["limit_fraction_at_least"]["met"]:
            self._found(
                "usage",
                fingerprint,
                {
                    **_key_fields(key),
                    "usage_window": conditions.usage_window,
                    "window": window_id(key.limit_reset, now),
                    "usage": check.used,
                    "limit": key.limit,
                    "fraction": check.fraction,
                    "threshold": checks.limit_fraction_at_least,
                    "include_byok": conditions.include_byok,
                },
            )

    def _usage_conditions(self, key: ApiKey) -> UsageConditions:
        shape = (_WINDOW_OF_RESET.get(key.limit_reset, "lifetime"), key.include_byok_in_limit)
        conditions = self._conditions.get(shape)
        if conditions is None:
            conditions = self._conditions[shape] = UsageConditions(
                usage_window=shape[0],
                limit_fraction_at_least=self.checks.limit_fraction_at_least,
                include_byok=shape[1],
            )
        return conditions

    def add_credits(self, credits: Credits) -> None:
        floor = self.checks.credits_below
        if floor is None:
            return
        remaining = credits.total_credits - credits.total_usage
        if remaining < floor:
            self.live.add("credits")
            self._found(
                "credits",
                "credits",
                {
                    "total_credits": credits.total_credits,
                    "total_usage": credits.total_usage,
                    "remaining": remaining,
                    "floor": floor,
                },
            )

    def _found(self, condition: str, fingerprint: str, figures: dict[str, Any]) -> None:
        self.findings.append({"condition": condition, "fingerprint": fingerprint, **figures})


# -------------------------------------------------------------------------------------------- the state ---


def empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "reported": {}}


def read_state(raw: str | None) -> tuple[dict[str, Any], str | None]:
    """The state stored as text, and a problem when it could not be read (then an empty state: alerts
    already sent may be sent again, none is lost)."""
    if raw is None:
        return empty_state(), None
    try:
        state = json.loads(raw)
    except ValueError as err:
        return empty_state(), f"not JSON ({err})"
    reported = state.get("reported") if isinstance(state, dict) else None
    if not isinstance(reported, dict) or state.get("version") != STATE_VERSION:
        return empty_state(), f"not a version {STATE_VERSION} alerts state"
    entries = {fp: e for fp, e in reported.items() if isinstance(fp, str) and isinstance(e, dict)}
    return {"version": STATE_VERSION, "reported": entries}, None


def mark_new(
    findings: Iterable[dict[str, Any]], state: Mapping[str, Any], run_id: str
) -> list[dict[str, Any]]:
    """Set each finding's ``new`` (not reported before this run) and return those still to send.

    A finding an earlier try of the same run recorded is ``new`` (this run reported it) but is not sent
    again: the try that recorded it had sent it.
    """
    reported: Mapping[str, Any] = state["reported"]
    to_send = []
    for finding in findings:
        entry = reported.get(finding["fingerprint"])
        finding["new"] = entry is None or entry.get("run_id") == run_id
        if entry is None:
            to_send.append(finding)
    return to_send


def next_state(
    current: Mapping[str, Any],
    sent: Iterable[dict[str, Any]],
    live: set[str],
    *,
    run_id: str,
    walked_at: dt.datetime,
    now: dt.datetime,
) -> dict[str, Any]:
    """The state to store after a run: ``current`` (as read just before writing) without the occurrences
    that have ended, plus what this run sent.

    An entry another run recorded after this run's walk began is kept even when this walk did not see it
    live (its key may be newer than the walk): overlapping runs add to the state, neither erases the other.
    """
    walked = _precise(walked_at)
    kept = {
        fp: entry
        for fp, entry in current["reported"].items()
        if fp in live or str(entry.get("at", "")) > walked
    }
    for finding in sent:
        kept.setdefault(finding["fingerprint"], {"run_id": run_id, "at": _precise(now)})
    return {"version": STATE_VERSION, "reported": dict(sorted(kept.items()))}


def dump_state(state: Mapping[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ the message ---


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(seconds, 0) / 60:.0f} minutes"


def describe(finding: Mapping[str, Any]) -> str:
    """One line about one finding: the key (name and short hash) and its figures, never a plaintext."""
    condition = finding["condition"]
    if condition == "credits":
        return (
            f"account credits {money(finding['remaining'])} left "
            f"({money(finding['total_usage'])} used of {money(finding['total_credits'])}), "
            f"below the {money(finding['floor'])} floor"
        )
    who = describe_key(finding["key_hash"], finding["key_name"])
    if condition == "usage":
        fraction = finding["fraction"]
        share = percent(fraction) if fraction is not None else "all"
        window = finding["usage_window"]
        return (
            f"{who}: {money(finding['usage'])} used in the {window} window ({finding['window']}) is {share} "
            f"of its {money(finding['limit'])} limit (threshold {percent(finding['threshold'])})"
        )
    if condition == "expiring":
        if finding["expired"]:
            return f"{who}: expired at {finding['expires_at']}"
        return f"{who}: expires at {finding['expires_at']}, in {_duration(finding['seconds_left'])}"
    return f"{who}: disabled"


def _by_condition(findings: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {name: [] for name in CONDITIONS}
    for finding in findings:
        groups[finding["condition"]].append(finding)
    return {name: group for name, group in groups.items() if group}


def message(findings: list[dict[str, Any]], *, scope: str, checked_at: dt.datetime) -> dict[str, Any]:
    """The one message of a run about ``findings``: ``subject``, ``text``, ``html`` and ``count``."""
    groups = _by_condition(findings)
    counts = []
    for condition, group in groups.items():
        if condition == "credits":
            counts.append("credits low")
        else:
            noun = "key" if len(group) == 1 else "keys"
            counts.append(f"{len(group)} {noun} {_SUBJECT_WORDS[condition]}")
    subject = f"OpenRouter alerts for {scope}: " + "; ".join(counts)
    intro = f"Checked {scope} at {_stamp(checked_at)}."
    text_lines = [intro]
    html_parts = [f"<p>{html.escape(intro)}</p>"]
    for condition, group in groups.items():
        lines = [describe(finding) for finding in group]
        text_lines += ["", _HEADINGS[condition] + ":", *(f"- {line}" for line in lines)]
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        html_parts.append(f"<h3>{html.escape(_HEADINGS[condition])}</h3><ul>{items}</ul>")
    return {
        "subject": subject,
        "text": "\n".join(text_lines) + "\n",
        "html": "".join(html_parts),
        "count": len(findings),
        "findings": findings,
    }


def scope_label(name_prefix: str | None, workspace_id: str | None) -> str:
    parts = []
    if name_prefix is not None:
        parts.append(f"keys named {name_prefix}*")
    if workspace_id is not None:
        parts.append(f"workspace {workspace_id}")
    return " in ".join(parts) if parts else "every key"
