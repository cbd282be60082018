"""How hard the local OpenRouter is: what the real API may do that its documentation does not rule out.

Each knob is off (the fake's simplest behaviour) or realistic by default; :data:`HARD` turns them all to
settings that are hard but plausible. The evidence for each is in ``docs/testing.rst`` ("A harder local
OpenRouter").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal, get_args

ListOrder = Literal["insertion", "created_at"]


@dataclass(frozen=True)
class Realism:
    """The realism knobs of a local OpenRouter.

    ``list_order``
        ``"insertion"``: newest first by the moment a key reached the list (a rename keeps a key's place).
        ``"created_at"``: newest first by ``created_at``; the order of equal stamps is ``shuffle_ties``'s.
    ``shuffle_ties``
        With ``list_order="created_at"``: equal stamps come in a new random order on every request (otherwise
        in an arbitrary order that stays the same between requests).
    ``commit_gap``
        Seconds of the fake's clock between the moment a create arrives (its ``created_at``) and the moment
        it commits: until then no read sees the key, and the create has not answered.
    ``list_lag``
        Up to this many seconds of the fake's clock pass before a write (create, update, delete) reaches
        ``GET /keys``; each write draws its own lag, and the writes to one key reach the list in their order.
        ``GET /keys/{hash}`` reads the committed key at once.
    ``name_max_length``
        The longest ``name`` a create or update accepts (``None``: no limit); a longer one is a 400.
    ``trim_stamp_zeros``
        Stamps drop the trailing zeros of their fraction of a second, and the fraction itself when it is
        zero (``...27.36324+00:00``, ``...27+00:00``), as PostgreSQL's JSON of a timestamp does.
    """

    list_order: ListOrder = "insertion"
    shuffle_ties: bool = False
    commit_gap: float = 0.0
    list_lag: float = 0.0
    name_max_length: int | None = None
    trim_stamp_zeros: bool = False

    def __post_init__(self) -> None:
        if self.list_order not in get_args(ListOrder):
            raise ValueError(f"list_order must be one of {get_args(ListOrder)}, not {self.list_order!r}")
        for name in ("commit_gap", "list_lag"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        limit = self.name_max_length
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("name_max_length must be a positive integer or None")
        for name in ("shuffle_ties", "trim_stamp_zeros"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a boolean")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Realism:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown realism settings: {', '.join(sorted(unknown))}")
        return cls(**data)


#: Hard but plausible: what a replicated, PostgreSQL-backed API could do without breaking its documentation.
HARD: Final = Realism(
    list_order="created_at",
    shuffle_ties=True,
    commit_gap=0.05,
    list_lag=0.3,
    name_max_length=255,
    trim_stamp_zeros=True,
)
