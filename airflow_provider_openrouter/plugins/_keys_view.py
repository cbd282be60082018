"""What the OpenRouter keys page shows: an account's keys as rows, searched, filtered, sorted and paged.

OpenRouter's list endpoint has no search, filter, sort or total: it only pages, 100 keys at a time, newest
first. So the page walks the account once into a :class:`Snapshot`, keeps it for :data:`CACHE_SECONDS`, and
answers every search, filter, sort and page from it. Pure code, no web framework and no I/O, except
:class:`SnapshotCache`, which calls the loader it is given.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._validation import parse_instant
from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.plugins._keys_budget import (
    WINDOWS,
    EffectiveBudget,
    GuardrailCell,
    Layer,
    effective_budget,
    guardrail_cells,
    guardrail_layer,
    spend_in_window,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment
    from airflow_provider_openrouter.models import ApiKey, Credits

# A key at or above this share of its limit, or of its guardrail's budget, is "near the limit" (the filter;
# the bar, which shows its own limit, turns orange).
NEAR_LIMIT: Final = 0.8
# Below it, half the limit separates a green bar from a yellow one.
WATCH_LIMIT: Final = 0.5
CACHE_SECONDS: Final = 30.0
PAGE_SIZES: Final[tuple[int, ...]] = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE: Final = 50
MAX_SEARCH_LENGTH: Final = 200
# OpenRouter's own limit on a guardrail's name: a longer filter could match nothing.
MAX_GUARDRAIL_LENGTH: Final = 200

# The filters, with the label the page shows for each.
FILTERS: Final[dict[str, str]] = {
    "all": "All keys",
    "active": "Active",
    "near_limit": "Near or over limit",
    "disabled": "Disabled",
    "expired": "Expired",
}
# Sortable columns: the order a first click on the column gives (amounts are most useful largest first) and
# what a row is ordered by.
_COLUMNS: Final[dict[str, tuple[str, Callable[[KeyRow], Any]]]] = {
    "name": ("asc", lambda row: row.name.casefold()),
    "limit": ("desc", attrgetter("limit")),
    "usage": ("desc", attrgetter("usage")),
    "remaining": ("asc", attrgetter("remaining")),
    "used": ("desc", attrgetter("used")),
    "lifetime": ("desc", attrgetter("lifetime_usage")),
    "expires": ("asc", attrgetter("expires_at")),
    "created": ("desc", attrgetter("created_at")),
    "guardrail": ("asc", lambda row: None if row.guardrail is None else row.guardrail.name.casefold()),
    "effective": ("asc", attrgetter("effective_left")),
}
SORTS: Final[dict[str, str]] = {column: order for column, (order, _) in _COLUMNS.items()}
_NO_BUDGET: Final = EffectiveBudget("none", None, None, "")


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One key as the page shows it. Holds the key's metadata only: OpenRouter never returns a plaintext."""

    hash: str
    name: str
    label: str
    disabled: bool
    expired: bool
    limit: float | None
    limit_reset: str | None
    window: str  # "today", "this week", "this month" or "lifetime": what ``usage`` counts
    usage: float  # in the window the limit resets on, BYOK included where the limit counts it
    remaining: float | None
    used: float | None  # share of the limit used, None without a limit
    level: str  # "none", "ok", "watch", "near" or "over": the bar's colour
    lifetime_usage: float
    expires_at: dt.datetime | None
    created_at: dt.datetime | None
    guardrail: GuardrailCell | None = None
    guardrail_used: float | None = None  # share of the guardrail's budget spent, where known exactly
    effective: EffectiveBudget = _NO_BUDGET

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "expired" if self.expired else "active"

    @property
    def effective_left(self) -> float | None:
        """What the effective budget leaves, for sorting: the least it can be where only bounds are known."""
        return self.effective.low if self.effective.low is not None else self.effective.high

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for the page's JSON endpoint."""
        data = dataclasses.asdict(self)
        for name in ("expires_at", "created_at"):
            data[name] = _instant(data[name])
        if self.guardrail is not None:
            data["guardrail"]["assigned_at"] = _instant(self.guardrail.assigned_at)
        data["effective"] = self.effective.to_dict()
        data["status"] = self.status
        return data


def _instant(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _usage_in_window(key: ApiKey) -> tuple[str, float]:
    usage = spend_in_window(key, key.limit_reset, byok=key.include_byok_in_limit)
    return WINDOWS.get(key.limit_reset, "lifetime"), usage


def _level(used: float | None) -> str:
    if used is None:
        return "none"
    if used >= 1:
        return "over"
    if used >= NEAR_LIMIT:
        return "near"
    return "watch" if used >= WATCH_LIMIT else "ok"


def key_row(key: ApiKey, now: dt.datetime, guardrail: GuardrailCell | None = None) -> KeyRow:
    """The row of ``key``, with the budget layers of its own limit and of ``guardrail``, the one it holds."""
    window, usage = _usage_in_window(key)
    remaining = key.limit_remaining
    used: float | None = None
    if key.limit is not None:
        if remaining is None:
            remaining = key.limit - usage
        # OpenRouter's remaining is what it enforces, but it may stop at zero: a key past its limit shows by
        # how much through its usage.
        used = 1.0 if key.limit <= 0 else max((key.limit - remaining) / key.limit, usage / key.limit)
    expires_at = parse_instant(key.expires_at) if key.expires_at else None
    layers = []
    if key.limit is not None and remaining is not None:
        layers.append(Layer("key", key.limit, window, remaining, True))
    layer = None if guardrail is None else guardrail_layer(key, guardrail, now)
    if layer is not None:
        layers.append(layer)
    return KeyRow(
        hash=key.hash,
        name=key.name,
        label=key.label,
        disabled=key.disabled,
        expired=expires_at is not None and expires_at <= now,
        limit=key.limit,
        limit_reset=key.limit_reset,
        window=window,
        usage=usage,
        remaining=remaining if key.limit is not None else None,
        used=used,
        level=_level(used),
        lifetime_usage=key.usage + (key.byok_usage if key.include_byok_in_limit else 0.0),
        expires_at=expires_at,
        created_at=parse_instant(key.created_at),
        guardrail=guardrail,
        guardrail_used=None if layer is None else layer.used,
        effective=effective_budget(layers),
    )


def _matches(row: KeyRow, show: str) -> bool:
    if show == "active":
        return not row.disabled and not row.expired
    if show == "disabled":
        return row.disabled
    if show == "expired":
        return row.expired
    if show == "near_limit":
        return any(used is not None and used >= NEAR_LIMIT for used in (row.used, row.guardrail_used))
    return True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key of one connection's account (its default workspace), the guardrails they hold and the
    account's credits, as fetched at ``fetched_at``. ``credits`` is ``None`` when OpenRouter would not tell
    (``credits_problem`` says why); ``guardrails_problem`` says why guardrails are missing, if they are.
    """

    conn_id: str
    fetched_at: dt.datetime
    rows: tuple[KeyRow, ...]
    credits: Credits | None
    credits_problem: str | None = None
    fetch_seconds: float = 0.0
    guardrails_problem: str | None = None
    counts: dict[str, int] = field(init=False)
    # Keys holding each guardrail, by name (names need not be unique: same-named guardrails count together).
    guardrail_counts: dict[str, int] = field(init=False)
    monotonic: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        counts = {show: sum(1 for row in self.rows if _matches(row, show)) for show in FILTERS}
        object.__setattr__(self, "counts", counts)
        held: dict[str, int] = {}
        for row in self.rows:
            if row.guardrail is not None:
                held[row.guardrail.name] = held.get(row.guardrail.name, 0) + 1
        object.__setattr__(
            self, "guardrail_counts", dict(sorted(held.items(), key=lambda i: i[0].casefold()))
        )

    @classmethod
    def of(
        cls,
        conn_id: str,
        keys: Iterable[ApiKey],
        credits: Credits | None,
        *,
        credits_problem: str | None = None,
        now: dt.datetime | None = None,
        fetch_seconds: float = 0.0,
        guardrails: Iterable[Guardrail] = (),
        assignments: Iterable[KeyAssignment] = (),
        guardrails_problem: str | None = None,
    ) -> Snapshot:
        now = now or dt.datetime.now(dt.timezone.utc)
        cells = guardrail_cells(guardrails, assignments)
        rows = tuple(key_row(key, now, cells.get(key.hash)) for key in keys)
        return cls(conn_id, now, rows, credits, credits_problem, fetch_seconds, guardrails_problem)


def _sort_value(row: KeyRow, sort: str) -> Any:
    return _COLUMNS[sort][1](row)


@dataclass(frozen=True, slots=True)
class Query:
    """A search, a filter, a sort and a page, validated: a bad value names its parameter. ``guardrail``
    keeps the keys holding a guardrail of exactly that name."""

    search: str = ""
    show: str = "all"
    sort: str = "name"
    order: str = "asc"
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE
    guardrail: str = ""

    @classmethod
    def parse(
        cls,
        *,
        search: str | None = None,
        show: str | None = None,
        sort: str | None = None,
        order: str | None = None,
        page: str | int | None = None,
        size: str | int | None = None,
        guardrail: str | None = None,
    ) -> Query:
        search = (search or "").strip()
        if len(search) > MAX_SEARCH_LENGTH:
            raise OpenRouterValidationError("q", f"must be at most {MAX_SEARCH_LENGTH} characters")
        guardrail = _guardrail_name(guardrail)
        show = show or "all"
        if show not in FILTERS:
            raise OpenRouterValidationError("show", f"must be one of {', '.join(FILTERS)} (got {show!r})")
        sort = sort or "name"
        if sort not in SORTS:
            raise OpenRouterValidationError("sort", f"must be one of {', '.join(SORTS)} (got {sort!r})")
        order = order or SORTS[sort]
        if order not in ("asc", "desc"):
            raise OpenRouterValidationError("order", f"must be asc or desc (got {order!r})")
        return cls(search, show, sort, order, _positive("page", page, 1), _page_size(size), guardrail)

    def to_params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters, defaults left out, with ``changes`` applied."""
        query = dataclasses.replace(self, **changes)
        params = {
            "q": query.search,
            "show": query.show if query.show != "all" else "",
            "sort": query.sort if query.sort != "name" else "",
            "order": query.order if query.order != SORTS[query.sort] else "",
            "page": str(query.page) if query.page != 1 else "",
            "size": str(query.size) if query.size != DEFAULT_PAGE_SIZE else "",
            "guardrail": query.guardrail,
        }
        return {name: value for name, value in params.items() if value}


def _guardrail_name(value: str | None) -> str:
    name = (value or "").strip()
    if len(name) > MAX_GUARDRAIL_LENGTH:
        raise OpenRouterValidationError(
            "guardrail", f"must be at most {MAX_GUARDRAIL_LENGTH} characters, as a guardrail's name is"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise OpenRouterValidationError("guardrail", "must not contain control characters")
    return name


def _positive(field_name: str, value: str | int | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OpenRouterValidationError(field_name, f"must be a whole number (got {value!r})") from None
    if number < 1:
        raise OpenRouterValidationError(field_name, f"must be 1 or more (got {number})")
    return number


def _page_size(value: str | int | None) -> int:
    size = _positive("size", value, DEFAULT_PAGE_SIZE)
    if size not in PAGE_SIZES:
        raise OpenRouterValidationError(
            "size", f"must be one of {', '.join(map(str, PAGE_SIZES))} (got {size})"
        )
    return size


@dataclass(frozen=True, slots=True)
class Selection:
    """One page of the rows a query matches."""

    query: Query
    rows: Sequence[KeyRow]
    matched: int
    page: int
    pages: int

    @property
    def first(self) -> int:
        """1-based position of the page's first row (0 when nothing matched)."""
        return (self.page - 1) * self.query.size + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def select(snapshot: Snapshot, query: Query) -> Selection:
    """The rows of ``snapshot`` that ``query`` matches, sorted, cut to its page (the last page when the
    requested one is past the end). Keys without a value in the sort column (no limit, no expiry) come last
    in either order."""
    needle = query.search.casefold()
    rows = [
        row
        for row in snapshot.rows
        if _matches(row, query.show)
        and (not needle or needle in row.name.casefold())
        and (not query.guardrail or (row.guardrail is not None and row.guardrail.name == query.guardrail))
    ]
    present = [row for row in rows if _sort_value(row, query.sort) is not None]
    missing = [row for row in rows if _sort_value(row, query.sort) is None]
    present.sort(key=lambda row: (row.name.casefold(), row.hash))
    present.sort(key=lambda row: _sort_value(row, query.sort), reverse=query.order == "desc")
    missing.sort(key=lambda row: (row.name.casefold(), row.hash))
    ordered = present + missing
    pages = max(1, math.ceil(len(ordered) / query.size))
    page = min(query.page, pages)
    start = (page - 1) * query.size
    return Selection(query, ordered[start : start + query.size], len(ordered), page, pages)


class SnapshotCache:
    """Snapshots by connection id, each kept ``max_age`` seconds; failures are not kept.

    Requests for the same connection wait for one walk rather than each starting its own; a refresh asked
    for while another request was already walking takes that fresher walk's result.
    """

    def __init__(self, loader: Callable[[str], Snapshot], *, max_age: float = CACHE_SECONDS) -> None:
        self._loader = loader
        self.max_age = max_age
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, conn_id: str, *, refresh: bool = False) -> Snapshot:
        asked_at = time.monotonic()
        with self._guard:
            lock = self._locks.setdefault(conn_id, threading.Lock())
        with lock:
            snapshot = self._snapshots.get(conn_id)
            if snapshot is not None:
                fresh = time.monotonic() - snapshot.monotonic < self.max_age
                if (fresh and not refresh) or snapshot.monotonic >= asked_at:
                    return snapshot
            snapshot = self._loader(conn_id)
            self._snapshots[conn_id] = snapshot
            return snapshot

    def clear(self) -> None:
        with self._guard:
            self._snapshots.clear()


@dataclass(frozen=True, slots=True)
class Problem:
    """Why the page cannot show a connection's keys, said for the person looking at it."""

    title: str
    detail: str
    hint: str
    status: int  # of the page's own answer: 404 no such connection, 502/503/429 OpenRouter's trouble

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "detail": self.detail, "hint": self.hint}


def describe_problem(exc: BaseException, conn_id: str) -> Problem:
    """The readable side of a failure to load a snapshot. The provider's exceptions never carry a key."""
    from airflow_provider_openrouter import exceptions as errors

    if isinstance(exc, ConnectionNotUsable):
        return Problem("This connection cannot be used here", str(exc), exc.hint, exc.status)
    if isinstance(exc, errors.OpenRouterConnectionConfigError):
        return Problem(
            "The connection is not set up correctly",
            str(exc),
            f"Edit the connection {conn_id!r} under Admin → Connections.",
            400,
        )
    if isinstance(exc, errors.AuthenticationError):
        return Problem(
            "OpenRouter refused the management key",
            f"OpenRouter answered {exc.status}: {exc.message}",
            f"The key in connection {conn_id!r} is wrong, revoked or disabled. Put a current management key "
            "(openrouter.ai/settings/management-keys) in the connection's password field.",
            502,
        )
    if isinstance(exc, errors.ForbiddenError):
        return Problem(
            "The connection's key may not manage keys",
            f"OpenRouter answered {exc.status}: {exc.message}",
            f"Connection {conn_id!r} needs a management key, not a regular API key.",
            502,
        )
    if isinstance(exc, errors.RateLimitedError):
        wait = (
            f"in about {math.ceil(exc.retry_after)} s" if exc.retry_after is not None else "in a little while"
        )
        return Problem(
            "OpenRouter is rate limiting this account",
            f"OpenRouter answered {exc.status}: {exc.message}",
            f"Try again {wait}. Everything using the management key of connection {conn_id!r} shares the "
            "limit.",
            429,
        )
    if isinstance(exc, errors.ServerError):
        return Problem(
            "OpenRouter is having trouble",
            f"OpenRouter answered {exc.status}: {exc.message}",
            "This is on OpenRouter's side: try again in a few minutes (status.openrouter.ai).",
            503,
        )
    if isinstance(exc, errors.OpenRouterTransportError):
        return Problem(
            "OpenRouter could not be reached",
            exc.detail,
            f"Check the base URL of connection {conn_id!r} and that the API server can reach it.",
            503,
        )
    if isinstance(exc, errors.OpenRouterAPIError):
        return Problem(
            "OpenRouter refused the request",
            f"OpenRouter answered {exc.status}: {exc.message}",
            f"Check connection {conn_id!r}.",
            502,
        )
    return Problem(
        "The keys could not be loaded",
        f"Unexpected {type(exc).__name__}; the API server's log has the details.",
        "Try again; if it keeps failing, ask whoever runs this Airflow to look at the API server's log.",
        500,
    )


class ConnectionNotUsable(Exception):
    """The connection id names no connection, or one of another type."""

    def __init__(self, message: str, *, hint: str, status: int) -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status
