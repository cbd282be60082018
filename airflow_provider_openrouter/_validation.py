"""Input validation shared by the hook, the operators and the sensor.

Every check runs before any request and raises :class:`OpenRouterValidationError` naming the field and what is
wrong with the value. Each validator takes ``field=`` so that callers can report the name their user typed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import Any

from airflow_provider_openrouter.exceptions import OpenRouterValidationError

LIMIT_RESETS: tuple[str, ...] = ("daily", "weekly", "monthly")
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_name(value: Any, *, field: str = "name") -> str:
    if not isinstance(value, str):
        raise OpenRouterValidationError(field, f"must be a string (got {type(value).__name__})")
    if not value.strip():
        raise OpenRouterValidationError(field, "must not be empty")
    return value


def validate_limit(value: Any, *, field: str = "limit") -> float | None:
    """A USD amount ≥ 0, or ``None`` for no limit. Numeric strings (rendered templates) are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OpenRouterValidationError(field, f"must be a number of USD or None (got {value!r})")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise OpenRouterValidationError(
                field, f"must be a number of USD or None (got {_shown(value)})"
            ) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise OpenRouterValidationError(
            field, f"must be a number of USD or None (got {type(value).__name__})"
        )
    if not math.isfinite(number):
        raise OpenRouterValidationError(field, f"must be a finite number (got {_shown(value)})")
    if number < 0:
        raise OpenRouterValidationError(field, f"must be >= 0 (got {_shown(value)})")
    return number


def validate_limit_reset(value: Any, *, field: str = "limit_reset") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in LIMIT_RESETS:
        raise OpenRouterValidationError(
            field, f"must be one of {', '.join(LIMIT_RESETS)} or None (got {_shown(value)})"
        )
    return value


def validate_bool(value: Any, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise OpenRouterValidationError(field, f"must be True or False (got {_shown(value)})")
    return value


def validate_key_hash(value: Any, *, field: str = "key_hash") -> str:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise OpenRouterValidationError(
            field, f"must be a key hash: 64 lowercase hex characters (got {_shown(value)})"
        )
    return value


def validate_workspace_id(value: Any, *, field: str = "workspace_id") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OpenRouterValidationError(field, f"must be a UUID string (got {type(value).__name__})")
    try:
        uuid.UUID(value)
    except ValueError:
        raise OpenRouterValidationError(field, f"must be a UUID (got {_shown(value)})") from None
    return value


def validate_expires_at(
    value: Any, *, field: str = "expires_at", now: dt.datetime | None = None
) -> str | None:
    """A timezone-aware moment in the future, returned in the wire format the API demands (UTC, with seconds).

    Accepts a ``datetime`` (pendulum's included) or an ISO 8601 string with an offset. Sub-second precision is
    dropped, since the API accepts whole seconds only.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise OpenRouterValidationError(
                field, f"must be an ISO 8601 date-time with a timezone (got {_shown(value)})"
            ) from None
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        raise OpenRouterValidationError(
            field, f"must be a datetime or an ISO 8601 string (got {type(value).__name__})"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise OpenRouterValidationError(
            field, f"must be timezone-aware; add a UTC offset (got {_shown(value)})"
        )
    utc = moment.astimezone(dt.timezone.utc).replace(microsecond=0)
    current = now or dt.datetime.now(dt.timezone.utc)
    if utc <= current:
        raise OpenRouterValidationError(
            field,
            f"must be in the future (got {utc.strftime('%Y-%m-%dT%H:%M:%SZ')}, now is "
            f"{current.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')})",
        )
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
