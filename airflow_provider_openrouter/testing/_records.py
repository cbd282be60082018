"""A key of the local OpenRouter as the fake holds it: its record, its spend per reset window, and the forms
the API gives it in (stamps, labels, hashes), with the API's error answer that every rule raises.

Plain data without a lock: :class:`~airflow_provider_openrouter.testing._state.OpenRouterState` guards it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_WORKSPACE_ID: Final = "0df9e665-d932-5740-b2c7-b52af166bc11"
PAGE_SIZE: Final = 100
LIMIT_RESETS: Final = ("daily", "weekly", "monthly")
KEY_PREFIX: Final = "sk-or-v1-"
DEFAULT_CREATOR: Final = "user_2dHFtVWx2n56w6HkLocal0000"

_UTC = dt.timezone.utc


class ApiError(Exception):
    """An error answer of the API: status and OpenRouter's message."""

    def __init__(self, status: int, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.message = message
        self.metadata = dict(metadata) if metadata is not None else None
        super().__init__(f"{status}: {message}")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "metadata": self.metadata}}


def new_plaintext() -> str:
    return KEY_PREFIX + secrets.token_hex(32)


def hash_of(plaintext: str) -> str:
    """The key's identifier: SHA-256 hex of its plaintext."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def mask(plaintext: str) -> str:
    """The label OpenRouter shows for a key, e.g. ``sk-or-v1-abc...123``."""
    return f"{plaintext[: len(KEY_PREFIX) + 3]}...{plaintext[-3:]}"


def iso(moment: dt.datetime | None) -> str | None:
    """Whole seconds with ``Z``: the form of ``expires_at``, which the API takes with seconds."""
    if moment is None:
        return None
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: dt.datetime | None, *, trim: bool = False) -> str | None:
    """A stamp the API makes (``created_at``, ``updated_at``, ``last_used_at``): microseconds and ``+00:00``,
    as OpenRouter's guide shows ``"2025-02-19T20:52:27.363244+00:00"``. ``trim`` drops the fraction's trailing
    zeros (and the fraction when it is zero), as PostgreSQL writes a timestamp in JSON."""
    if moment is None:
        return None
    text = moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if trim:
        text = text.rstrip("0").rstrip(".")
    return text + "+00:00"


def parse_instant(value: str) -> dt.datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return moment.astimezone(_UTC)


_windows_cache: tuple[dt.date, dict[str, str]] | None = None


def windows(now: dt.datetime) -> dict[str, str]:
    """The current reset window of each period: UTC day, week starting Monday, month."""
    global _windows_cache
    day = now.astimezone(_UTC).date()
    cached = _windows_cache
    if cached is not None and cached[0] == day:
        return cached[1]
    current = {
        "daily": day.isoformat(),
        "weekly": (day - dt.timedelta(days=day.weekday())).isoformat(),
        "monthly": f"{day.year:04d}-{day.month:02d}",
    }
    _windows_cache = (day, current)
    return current


@dataclass
class Spend:
    """One kind of spend (OpenRouter credits or BYOK) of one key: lifetime and per current window."""

    total: float = 0.0
    daily: float = 0.0
    weekly: float = 0.0
    monthly: float = 0.0
    marks: dict[str, str] = field(default_factory=dict)

    def roll(self, current: Mapping[str, str]) -> None:
        """Zero each window counter whose window has passed since it was last touched."""
        for period in LIMIT_RESETS:
            if self.marks.get(period) != current[period]:
                if period in self.marks:
                    setattr(self, period, 0.0)
                self.marks[period] = current[period]

    def add(self, usd: float, current: Mapping[str, str]) -> None:
        self.roll(current)
        self.total += usd
        self.daily += usd
        self.weekly += usd
        self.monthly += usd

    def in_window(self, limit_reset: str | None) -> float:
        return self.total if limit_reset is None else float(getattr(self, limit_reset))


@dataclass
class KeyRecord:
    hash: str
    name: str
    label: str
    management: bool
    created_at: dt.datetime
    workspace_id: str = DEFAULT_WORKSPACE_ID
    disabled: bool = False
    limit: float | None = None
    limit_reset: str | None = None
    include_byok_in_limit: bool = False
    updated_at: dt.datetime | None = None
    creator_user_id: str | None = DEFAULT_CREATOR
    expires_at: dt.datetime | None = None
    external_user: str | None = None
    last_used_at: dt.datetime | None = None
    usage: Spend = field(default_factory=Spend)
    byok: Spend = field(default_factory=Spend)

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def counted(self) -> float:
        """Spend that counts against the limit in the current window."""
        spent = self.usage.in_window(self.limit_reset)
        if self.include_byok_in_limit:
            spent += self.byok.in_window(self.limit_reset)
        return spent

    def limit_remaining(self) -> float | None:
        if self.limit is None:
            return None
        return max(0.0, round(self.limit - self.counted(), 10))

    def usage_fields(self) -> dict[str, float]:
        return {
            "usage": self.usage.total,
            "usage_daily": self.usage.daily,
            "usage_weekly": self.usage.weekly,
            "usage_monthly": self.usage.monthly,
            "byok_usage": self.byok.total,
            "byok_usage_daily": self.byok.daily,
            "byok_usage_weekly": self.byok.weekly,
            "byok_usage_monthly": self.byok.monthly,
        }

    def to_api(self, *, trim: bool = False) -> dict[str, Any]:
        """The Key object of the API (list, get, create, update); ``trim`` as :func:`stamp`'s."""
        return {
            "hash": self.hash,
            "name": self.name,
            "label": self.label,
            "disabled": self.disabled,
            "limit": self.limit,
            "limit_remaining": self.limit_remaining(),
            "limit_reset": self.limit_reset,
            "include_byok_in_limit": self.include_byok_in_limit,
            **self.usage_fields(),
            "created_at": stamp(self.created_at, trim=trim),
            "updated_at": stamp(self.updated_at, trim=trim),
            "creator_user_id": self.creator_user_id,
            "workspace_id": self.workspace_id,
            "expires_at": iso(self.expires_at),
            "external_user": self.external_user,
            "last_used_at": stamp(self.last_used_at, trim=trim),
        }

    def to_current(self) -> dict[str, Any]:
        """The CurrentKey object of ``GET /key``."""
        remaining = self.limit_remaining()
        budget: dict[str, Any] | None = None
        if self.limit is not None:
            budget = {
                "budget_id": None,
                "guardrail_id": None,
                "include_byok": self.include_byok_in_limit,
                "limit_usd": self.limit,
                "remaining_usd": remaining,
                "reset_interval": self.limit_reset,
                "resets_at": None,
                "scope": "key_limit",
                "spend_usd": self.counted(),
            }
        return {
            "label": self.label,
            "limit": self.limit,
            "limit_remaining": remaining,
            "limit_reset": self.limit_reset,
            "include_byok_in_limit": self.include_byok_in_limit,
            **self.usage_fields(),
            "is_free_tier": False,
            "is_management_key": self.management,
            "is_provisioning_key": self.management,
            "creator_user_id": self.creator_user_id,
            "rate_limit": {
                "requests": -1,
                "interval": "10s",
                "note": "This field is deprecated and safe to ignore.",
            },
            "expires_at": iso(self.expires_at),
            "allowed_data_regions": ["global"],
            "budgets": [budget] if budget else [],
            "effective_budget": budget,
            "free_model_daily_requests": {"limit": 1000, "remaining": 1000, "used": 0},
            "organization_id": None,
            "workspace_id": self.workspace_id,
        }

    def to_state(self) -> dict[str, Any]:
        """Everything the fake knows about the key (for inspection in tests), JSON-safe, no plaintext."""
        return {**self.to_api(), "management": self.management}
