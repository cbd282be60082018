"""An in-memory OpenRouter key API as hard as the real one could be, on a virtual clock.

Nothing here is kinder than what OpenRouter documents (or leaves undocumented):

* ``created_at`` is stamped when a create *arrives*, in the documented form with microseconds
  (``2025-02-19T20:52:27.363244+00:00``), optionally coarsened to whole seconds so that ties are common, and
  optionally jittered (OpenRouter's servers need not share one clock).
* A key is listable only once its create *commits* (a gap after the stamp), and every write (create, rename,
  delete) reaches lists only after a further lag. ``GET``, ``PATCH`` and ``DELETE`` by hash see the committed
  state at once.
* ``GET /keys`` lists newest first by ``created_at``; keys with equal stamps come in an order drawn afresh
  for every request. Pages hold 100 keys and are addressed by offset, so keys that appear or disappear
  between two page requests shift the pages.

The model also keeps the truth the invariants are checked against: which keys exist under which name, and
who deleted what.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter.models import ApiKey

if TYPE_CHECKING:
    import random

PAGE_SIZE = 100
# The claim's shape, as a person reading the account would see it (kept apart from the code under test).
_CLAIM = re.compile(r"^(?P<name>.+) \[pending delivery (?P<token>[0-9a-f]+) until (?P<until>\d+)\]$")


@dataclass(frozen=True, slots=True)
class Knobs:
    """How hard the model is for one run (seconds of virtual time)."""

    commit_gap: float = 0.0
    lag: float = 0.0
    whole_seconds: bool = False
    stamp_jitter: float = 0.0


@dataclass(slots=True)
class Key:
    """One key's truth, and the states lists show of it (each visible from a moment on)."""

    hash: str
    name: str
    stamp: float
    created_at: str
    deleted: bool = False
    # (visible from, name or None once deleted), in the order the writes were made.
    listed: list[tuple[float, str | None]] = field(default_factory=list)
    api: ApiKey | None = None

    def listed_name(self, now: float) -> str | None:
        shown = None
        for since, name in self.listed:
            if since > now:
                break
            shown = name
        return shown

    def view(self, name: str) -> ApiKey:
        """The key as the API returns it under ``name`` (one object per state: building one is not free)."""
        api = self.api
        if api is None or api.name != name:
            api = self.api = ApiKey.from_api(
                {
                    "hash": self.hash,
                    "name": name,
                    "label": "sk-or-v1-" + self.hash[:3] + "..." + self.hash[-3:],
                    "disabled": False,
                    "limit": None,
                    "limit_remaining": None,
                    "limit_reset": None,
                    "include_byok_in_limit": False,
                    "usage": 0,
                    "usage_daily": 0,
                    "usage_weekly": 0,
                    "usage_monthly": 0,
                    "byok_usage": 0,
                    "byok_usage_daily": 0,
                    "byok_usage_weekly": 0,
                    "byok_usage_monthly": 0,
                    "created_at": self.created_at,
                }
            )
        return api


class Missing(LookupError):
    """No key has this hash (any more): the API's 404."""


def claim_of(name: str) -> tuple[str, float] | None:
    """The real name and lease end of a claim's name; ``None`` for any other name."""
    match = _CLAIM.match(name)
    return None if match is None else (match["name"], float(match["until"]))


def stamp_text(moment: float, whole_seconds: bool) -> str:
    when = dt.datetime.fromtimestamp(moment, tz=dt.timezone.utc)
    return when.isoformat(timespec="seconds" if whole_seconds else "microseconds")


def _old_keys(count: int) -> list[ApiKey]:
    """Keys made long before a run (an hour earlier, a second apart), newest first; never written to during
    a run, so every run shares the same objects."""
    start = 1_767_225_600.0 - 3600.0
    keys = []
    for index in range(count):
        key = Key(
            format(index + 1, "064x"), f"other-{index}", start + index, stamp_text(start + index, False)
        )
        keys.append(key.view(key.name))
    keys.reverse()
    return keys


OLD_KEYS = _old_keys(300)


class Account:
    """The keys of one workspace. Every method is one request arriving at ``now``; the caller (the
    scheduler) owns the clock and the random source, so a run is a pure function of its seed."""

    def __init__(self, rng: random.Random, knobs: Knobs, old: int = 0) -> None:
        self.rng = rng
        self.knobs = knobs
        # Listed below every key of the run (they are older), in a fixed order: only the run's own keys need
        # sorting for each page.
        self.old = OLD_KEYS[:old]
        self.keys: dict[str, Key] = {}
        self.live: list[Key] = []  # every key ever listable, for the list (deleted ones drop out lazily)
        self.serial = 0
        #: Called with (key, old name, new name or None for a delete, who) on every committed write.
        self.watchers: list[Any] = []

    # -- writes ------------------------------------------------------------------------------------------

    def _visible(self, key: Key, at: float) -> float:
        lag = self.rng.uniform(0.0, self.knobs.lag) if self.knobs.lag else 0.0
        last = key.listed[-1][0] if key.listed else at
        return max(last, at + lag)

    def create(self, name: str, now: float, who: str) -> tuple[Key, str, float]:
        """A key under ``name`` arriving at ``now``: it, its plaintext and when the create commits."""
        self.serial += 1
        key_hash = format(self.rng.getrandbits(256) | (self.serial << 240), "064x")[-64:]
        jitter = (
            self.rng.uniform(-self.knobs.stamp_jitter, self.knobs.stamp_jitter)
            if self.knobs.stamp_jitter
            else 0
        )
        stamp = now + jitter
        stamp = float(int(stamp)) if self.knobs.whole_seconds else round(stamp, 6)
        key = Key(key_hash, name, stamp, stamp_text(stamp, self.knobs.whole_seconds))
        committed = now + (self.rng.uniform(0.0, self.knobs.commit_gap) if self.knobs.commit_gap else 0.0)
        key.listed.append((self._visible(key, committed), name))
        self.keys[key_hash] = key
        self.live.append(key)
        for watch in self.watchers:
            watch(key, None, name, who)
        plaintext = "sk-or-v1-" + format(self.rng.getrandbits(256), "064x")
        return key, plaintext, committed

    def get(self, key_hash: str) -> ApiKey:
        key = self.keys.get(key_hash)
        if key is None or key.deleted:
            raise Missing(key_hash)
        return key.view(key.name)

    def rename(self, key_hash: str, name: str, now: float, who: str) -> ApiKey:
        key = self.keys.get(key_hash)
        if key is None or key.deleted:
            raise Missing(key_hash)
        old, key.name = key.name, name
        key.listed.append((self._visible(key, now), name))
        for watch in self.watchers:
            watch(key, old, name, who)
        return key.view(name)

    def delete(self, key_hash: str, now: float, who: str) -> None:
        key = self.keys.get(key_hash)
        if key is None or key.deleted:
            raise Missing(key_hash)
        key.deleted = True
        key.listed.append((self._visible(key, now), None))
        for watch in self.watchers:
            watch(key, key.name, None, who)

    # -- reads -------------------------------------------------------------------------------------------

    def page(self, offset: int, now: float) -> list[ApiKey]:
        """``GET /keys?offset=…`` at ``now``: newest first, ties in an order drawn for this request."""
        shown: list[tuple[float, float, Key, str]] = []
        rand = self.rng.random
        for key in self.live:
            name = key.listed_name(now)
            if name is not None:
                shown.append((-key.stamp, rand(), key, name))
        shown.sort(key=lambda row: (row[0], row[1]))
        page = [key.view(name) for _, _, key, name in shown[offset : offset + PAGE_SIZE]]
        if len(page) < PAGE_SIZE and self.old:
            start = max(0, offset - len(shown))
            page.extend(self.old[start : start + PAGE_SIZE - len(page)])
        return page
