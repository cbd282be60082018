"""A key's budget layers on the keys page: its own limit, its guardrail's budget, and which stops it first.

OpenRouter checks every layer on each request and refuses the first one spent, so the layer that stops a key
first is the one with the least left in its current window (``effective_budget`` of ``GET /key`` follows the
same rule, but only for the key making the request). A guardrail's spend is counted per key, so a key's
spend against its guardrail is the key's own usage in the guardrail's window, BYOK included only where the
guardrail says so. Where that spend cannot be known, the layer says so and the comparison says what it can.
Pure code: no web framework and no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._usage import money

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment
    from airflow_provider_openrouter.models import ApiKey

# The UTC windows OpenRouter resets budgets on, with the words the page uses for "the current one".
WINDOWS: Final[dict[str | None, str]] = {"daily": "today", "weekly": "this week", "monthly": "this month"}
_SUFFIXES: Final[dict[str, str]] = {"daily": "_daily", "weekly": "_weekly", "monthly": "_monthly"}

# Who stops a key first, in the page's words.
STOPPERS: Final[dict[str, str]] = {
    "key": "Own limit",
    "guardrail": "Guardrail",
    "both": "Own limit and guardrail",
    "either": "Own limit or guardrail",
    "none": "No budget",
}


def window_start(reset: str, now: dt.datetime) -> dt.datetime:
    """Where the current ``daily``/``weekly``/``monthly`` window began (UTC; weeks start on Monday)."""
    midnight = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == "daily":
        return midnight
    if reset == "weekly":
        return midnight - dt.timedelta(days=midnight.weekday())
    return midnight.replace(day=1)


def spend_in_window(key: ApiKey, reset: str | None, *, byok: bool) -> float:
    """The key's spend in the current window of ``reset`` (its whole life for ``None``)."""
    suffix = _SUFFIXES.get(reset or "", "")
    usage: float = getattr(key, "usage" + suffix)
    if byok:
        usage += getattr(key, "byok_usage" + suffix)
    return usage


@dataclass(frozen=True, slots=True)
class GuardrailCell:
    """The guardrail a key holds, as the page shows it. ``readable`` is ``False`` for an assignment to a
    guardrail the connection could not read: only its id is known then."""

    id: str
    name: str
    limit_usd: float | None
    reset_interval: str | None
    include_byok: bool
    assigned_at: dt.datetime | None
    readable: bool = True

    @property
    def budget(self) -> str:
        """The budget in words: ``$5.00 daily``, ``no budget``."""
        if not self.readable:
            return "not readable"
        if self.limit_usd is None:
            return "no budget"
        return f"{money(self.limit_usd)} {self.reset_interval or 'with no window'}"


@dataclass(frozen=True, slots=True)
class Layer:
    """One budget that applies to a key. ``remaining`` is exact when ``exact``, else the least the layer can
    have left; ``None`` when even that is unknown (``note`` says why)."""

    source: str  # "key" or "guardrail"
    limit: float | None
    window: str  # "today", "this week", "this month", "lifetime", or "" when not known
    remaining: float | None
    exact: bool
    note: str = ""

    @property
    def used(self) -> float | None:
        """The share of the budget spent, where it is known exactly."""
        if not self.exact or self.limit is None or self.remaining is None:
            return None
        return 1.0 if self.limit <= 0 else (self.limit - self.remaining) / self.limit


@dataclass(frozen=True, slots=True)
class EffectiveBudget:
    """Which layer stops a key first (:data:`STOPPERS`), and what is left before it does.

    ``low`` and ``high`` bound what is left: equal when known exactly, ``high`` ``None`` when there is no
    upper bound, both ``None`` when nothing can be said.
    """

    stopper: str
    low: float | None
    high: float | None
    window: str
    note: str = ""

    @property
    def label(self) -> str:
        return STOPPERS[self.stopper]

    @property
    def exact(self) -> bool:
        return self.low is not None and self.low == self.high

    @property
    def left(self) -> str:
        """What is left, in words: ``$2.50``, ``at least $2.50``, ``$2.50 to $4.00``, ``unknown``."""
        if self.low is None:
            return "unknown" if self.high is None else f"at most {money(self.high)}"
        if self.high is None:
            return f"at least {money(self.low)}"
        if self.low == self.high:
            return money(self.low)
        return f"{money(self.low)} to {money(self.high)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stopper": self.stopper,
            "low": self.low,
            "high": self.high,
            "exact": self.exact,
            "window": self.window,
            "note": self.note,
        }


def guardrail_cells(
    guardrails: Iterable[Guardrail], assignments: Iterable[KeyAssignment]
) -> dict[str, GuardrailCell]:
    """Each assigned key's guardrail by key hash. An assignment to a guardrail not among ``guardrails``
    (one outside the workspace listed) keeps its id, with the budget unknown."""
    from airflow_provider_openrouter._validation import parse_instant

    by_id = {guardrail.id.lower(): guardrail for guardrail in guardrails}
    cells = {}
    for assignment in assignments:
        assigned_at = parse_instant(assignment.created_at)
        guardrail = by_id.get(assignment.guardrail_id.lower())
        if guardrail is None:
            cells[assignment.key_hash] = GuardrailCell(
                assignment.guardrail_id, assignment.guardrail_id, None, None, False, assigned_at, False
            )
        else:
            cells[assignment.key_hash] = GuardrailCell(
                guardrail.id,
                guardrail.name,
                guardrail.limit_usd,
                guardrail.reset_interval,
                guardrail.include_byok_in_budgets,
                assigned_at,
            )
    return cells


def guardrail_layer(key: ApiKey, cell: GuardrailCell, now: dt.datetime) -> Layer | None:
    """The guardrail's budget as it applies to ``key``, or ``None`` when it sets none."""
    if not cell.readable:
        return Layer("guardrail", None, "", None, False, "the guardrail could not be read")
    if cell.limit_usd is None:
        return None
    if cell.reset_interval not in _SUFFIXES:
        note = (
            f"no usage is reported for its window ({cell.reset_interval})"
            if cell.reset_interval
            else "its budget has no window, and no usage is reported for one"
        )
        return Layer("guardrail", cell.limit_usd, "", None, False, note)
    reset = str(cell.reset_interval)
    window = WINDOWS[reset]
    remaining = cell.limit_usd - spend_in_window(key, reset, byok=cell.include_byok)
    start = window_start(reset, now)
    if cell.assigned_at is None or cell.assigned_at > start:
        # OpenRouter does not say whether spend before the assignment counts: counting all of it gives the
        # least the guardrail can have left.
        when = (
            "at a time not reported" if cell.assigned_at is None else f"{cell.assigned_at:%Y-%m-%d %H:%M} UTC"
        )
        note = f"assigned {when}, in this window: spend before that may not count"
        return Layer("guardrail", cell.limit_usd, window, remaining, False, note)
    return Layer("guardrail", cell.limit_usd, window, remaining, True)


def effective_budget(layers: Iterable[Layer]) -> EffectiveBudget:
    """The layer that stops the key first: the one with the least left in its current window.

    A layer known exactly stops the key first when no other can have less left: less than another exact
    layer, and no more than the least a layer known only from below can have. When that cannot be decided,
    the answer is ``either``, with what can be said of the amount left.
    """
    present = list(layers)
    if not present:
        return EffectiveBudget("none", None, None, "")
    unknown = [layer for layer in present if layer.remaining is None]
    known = sorted(
        ((layer.remaining, layer) for layer in present if layer.remaining is not None), key=lambda p: p[0]
    )
    if not known:
        source = present[0].source if len(present) == 1 else "either"
        return EffectiveBudget(source, None, None, "", present[0].note)
    low, first = known[0]
    if unknown:
        # A layer with nothing known could have less left: this one only caps what is left.
        return EffectiveBudget("either", None, low if first.exact else None, first.window, unknown[0].note)
    if first.exact:
        tied = [layer for amount, layer in known[1:] if amount == low and layer.exact]
        return EffectiveBudget("both" if tied else first.source, low, low, first.window)
    # The least is only a lower bound; an exact layer, if any, caps what is left, and may be what stops it.
    exact = [(amount, layer) for amount, layer in known if layer.exact]
    if not exact:
        return EffectiveBudget(first.source, low, first.limit, first.window, first.note)
    return EffectiveBudget("either", low, exact[0][0], "", first.note)
