"""The API's checks of a request body's values, with OpenRouter's messages for what they refuse."""

from __future__ import annotations

import math
import re
import uuid
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter.testing._records import LIMIT_RESETS, ApiError, parse_instant

if TYPE_CHECKING:
    import datetime as dt

# The API takes UTC instants with seconds; fractions are tolerated (the official SDK sends them when present).
_EXPIRES_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)")
_UPDATE_FIELDS: Final = ("name", "disabled", "limit", "limit_reset", "include_byok_in_limit", "workspace_id")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _check_name(value: Any, max_length: int | None) -> str:
    if not isinstance(value, str):
        raise _bad("name: expected a string")
    if not value:
        raise _bad("name: must contain at least 1 character")
    if max_length is not None and len(value) > max_length:
        raise _bad(f"name: must contain at most {max_length} characters")
    return value


def _check_limit(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad("limit: expected a number or null")
    if value < 0:
        raise _bad("limit: must be greater than or equal to 0")
    return float(value)


def _check_limit_reset(value: Any) -> str | None:
    if value is None:
        return None
    if value not in LIMIT_RESETS:
        raise _bad(f"limit_reset: invalid value {value!r}; expected 'daily', 'weekly', 'monthly' or null")
    return str(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{name}: expected a boolean")
    return value


def check_workspace_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("workspace_id: expected a UUID string")
    try:
        uuid.UUID(value)
    except ValueError:
        raise _bad("workspace_id: invalid UUID") from None
    return value.lower()


def _check_expires_at(value: Any, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("expires_at: expected an ISO 8601 date-time string or null")
    if not _EXPIRES_RE.fullmatch(value.strip()):
        raise _bad(
            "expires_at: must be an ISO 8601 UTC timestamp with seconds, e.g. 2027-12-31T23:59:59Z "
            "(other time zones and minute precision are not accepted)"
        )
    try:
        moment = parse_instant(value)
    except ValueError:
        raise _bad("expires_at: not a valid date-time") from None
    if moment <= now:
        raise _bad("expires_at: must be in the future")
    return moment.replace(microsecond=0)
