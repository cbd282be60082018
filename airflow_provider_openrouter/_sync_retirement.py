"""When the tenant sync retires a key it rotated out: the rule, free of I/O, and the reasons a plan gives.

A rotation renames the old key ``<name> [retired <epoch>]`` and leaves it working. The key is *retired* at one
moment, worked out from the rotation's epoch and what the walk shows of the key: a run from that moment on
disables it, and a run ``rotation_grace`` after it deletes it.

- Without ``retire_when_idle_for`` the moment is fixed: the rotation plus ``rotation_overlap``.
- With it, the moment is the earlier of the moment the key has gone unused for that long and the deadline,
  the rotation plus ``retire_deadline``. The idle time counts from the key's ``last_used_at`` or from the
  rotation, whichever is later: a key last used before the rotation still keeps working for the idle time
  after it, so that its clients have that long to pick the new key up.
- A key whose ``last_used_at`` is missing (or unreadable) waits for the deadline. The API gives the same
  ``null`` for a key never used and for one whose use it has not recorded, and retiring a key on no evidence
  that it is idle could cut off a client still using it; the deadline is the longest it was to wait anyway.

A disabled key cannot be used, so its ``last_used_at`` and with it the moment stay put once a run has
disabled it: the delete follows ``rotation_grace`` later, as it does after a fixed overlap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from airflow_provider_openrouter import _validation
from airflow_provider_openrouter._claims import epoch_of
from airflow_provider_openrouter.exceptions import OpenRouterValidationError

if TYPE_CHECKING:
    from airflow_provider_openrouter.models import ApiKey

DAY: Final = 86400.0
#: What a run does with a rotated-out key: leave it (with a reason: it waits to be idle), disable, delete.
Retire = Literal["keep", "disable", "delete"]
_UNITS: Final = (("d", DAY), ("h", 3600.0), ("min", 60.0))


class Retirement(TypedDict):
    """The durations that decide when a rotated-out key is retired, in seconds, named as the operator's
    arguments and :class:`~airflow_provider_openrouter._sync_plan.PlanPolicy`'s fields are."""

    rotation_overlap: float
    rotation_grace: float
    retire_when_idle_for: float | None
    retire_deadline: float


def validate_retirement(
    *, rotation_overlap: Any, rotation_grace: Any, retire_when_idle_for: Any, retire_deadline: Any
) -> Retirement:
    """Each duration checked (seconds or a ``timedelta``), an error naming the argument."""

    def seconds(value: Any, field: str, *, positive: bool = False) -> float:
        return _validation.validate_seconds(value, field=field, above_minimum=positive)

    # An overlap or grace of None has always meant none at all.
    overlap = 0.0 if rotation_overlap is None else seconds(rotation_overlap, "rotation_overlap")
    grace = 0.0 if rotation_grace is None else seconds(rotation_grace, "rotation_grace")
    idle_for = (
        None
        if retire_when_idle_for is None
        else seconds(retire_when_idle_for, "retire_when_idle_for", positive=True)
    )
    deadline = seconds(retire_deadline, "retire_deadline", positive=True)
    if idle_for is not None and deadline < idle_for:
        # The idle moment is never before the rotation plus the idle time: the deadline would always win.
        raise OpenRouterValidationError(
            "retire_deadline",
            f"must be at least retire_when_idle_for ({span(idle_for)}), since the idle time counts from the "
            f"rotation at the earliest (got {span(deadline)})",
        )
    return {
        "rotation_overlap": overlap,
        "rotation_grace": grace,
        "retire_when_idle_for": idle_for,
        "retire_deadline": deadline,
    }


def span(seconds: float) -> str:
    """A duration as people say it: ``45 s``, ``3 min``, ``1.5 h``, ``5 d``."""
    seconds = max(seconds, 0.0)
    unit, size = next(((u, s) for u, s in _UNITS if seconds >= s), ("s", 1.0))
    value = seconds / size
    text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
    return f"{text} {unit}"


def retired_action(
    key: ApiKey, name: str, at: float, *, now: float, rules: Retirement
) -> tuple[Retire, str] | None:
    """What a run at ``now`` does with ``key``, rotated out of ``name`` at ``at``, and why. ``None``: nothing
    to do or say (inside a fixed overlap; or disabled, the delete still to come)."""
    idle_for = rules["retire_when_idle_for"]
    moment = retirement_moment(key, at, rules=rules)
    if idle_for is None:
        if now >= moment + rules["rotation_grace"]:
            return "delete", f"rotated out of {name!r}; overlap and grace over"
        if now >= moment and not key.disabled:
            return "disable", f"rotated out of {name!r}; overlap over"
        return None
    deadline = at + rules["retire_deadline"]
    used = epoch_of(key.last_used_at)
    idle = moment < deadline
    if used is None:
        seen = "no use recorded"
    elif used < at:
        seen = f"not used since the rotation {span(now - at)} ago"
    else:
        seen = f"last used {span(now - used)} ago"
    cause = f"idle for {span(idle_for)}" if idle else "deadline reached"
    if now >= moment + rules["rotation_grace"]:
        return "delete", f"rotated out of {name!r}; {cause}; grace over"
    if now >= moment:
        if key.disabled:
            return None
        return "disable", f"rotated out of {name!r}; {cause} ({seen})"
    if key.disabled:
        return None  # nobody can use it meanwhile: nothing to wait for but the delete
    if used is None:
        waiting = f"{seen}, so it waits for the deadline in {span(deadline - now)}"
    else:
        waiting = f"{seen}; idle for {span(idle_for)} needed; deadline in {span(deadline - now)}"
    return "keep", f"rotated out of {name!r}, still working until idle: {waiting}"


def retirement_moment(key: ApiKey, at: float, *, rules: Retirement) -> float:
    """When ``key``, rotated out at ``at``, is retired by what is known of it now (see the module's rule)."""
    idle_for = rules["retire_when_idle_for"]
    if idle_for is None:
        return at + rules["rotation_overlap"]
    deadline = at + rules["retire_deadline"]
    used = epoch_of(key.last_used_at)
    # The idle time counts from the rotation at the earliest; without a last use, only the deadline counts.
    return deadline if used is None else min(max(used, at) + idle_for, deadline)


def due_at(key: ApiKey, at: float, *, rules: Retirement) -> float:
    """The earliest moment :func:`retired_action` can next ask for a disable or delete of ``key``, rotated
    out at ``at``, by what is known of it now. A later use can only push it back (up to the deadline), so a
    waiter that sleeps until then, and reads the key again, misses no moment."""
    moment = retirement_moment(key, at, rules=rules)
    # A disabled key (by a run or a person) waits only for the delete.
    return moment + rules["rotation_grace"] if key.disabled else moment


def waiting_reason(key: ApiKey, name: str, at: float, *, now: float, rules: Retirement) -> str:
    """Why a rotated-out key is left as it is at ``now``: :func:`retired_action`'s reason, or (where it has
    nothing to say) when the next step comes."""
    decided = retired_action(key, name, at, now=now, rules=rules)
    if decided is not None:
        return decided[1]
    left = span(due_at(key, at, rules=rules) - now)
    if key.disabled:
        return f"rotated out of {name!r} and disabled; deleted in {left}"
    return f"rotated out of {name!r}; overlap over in {left}"
