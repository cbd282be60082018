"""The model behind the local OpenRouter: the account's keys, its clock, and the API's rules over them.

Everything here is plain data guarded by one lock; the HTTP layer only translates requests into calls on
:class:`OpenRouterState` and its :class:`ApiError` into error answers. A key's record is
:mod:`~airflow_provider_openrouter.testing._records`'s, the checks of a request's values
:mod:`~airflow_provider_openrouter.testing._checks`'s, and the simulated spend
:mod:`~airflow_provider_openrouter.testing._spend`'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import random
import threading
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter.testing._checks import (
    _UPDATE_FIELDS,
    _bad,
    _check_bool,
    _check_expires_at,
    _check_limit,
    _check_limit_reset,
    _check_name,
    check_workspace_id,
)
from airflow_provider_openrouter.testing._records import (
    DEFAULT_CREATOR,
    DEFAULT_WORKSPACE_ID,
    KEY_PREFIX,
    LIMIT_RESETS,
    PAGE_SIZE,
    ApiError,
    KeyRecord,
    Spend,
    hash_of,
    iso,
    mask,
    new_plaintext,
    parse_instant,
    stamp,
    windows,
)
from airflow_provider_openrouter.testing._spend import SpendLedger
from airflow_provider_openrouter.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

# The names the rest of the fake (and its users' tests) import from here.
__all__ = [
    "DEFAULT_CREATOR",
    "DEFAULT_WORKSPACE_ID",
    "KEY_PREFIX",
    "LIMIT_RESETS",
    "PAGE_SIZE",
    "ApiError",
    "KeyRecord",
    "OpenRouterState",
    "Spend",
    "check_workspace_id",
    "hash_of",
    "iso",
    "mask",
    "new_plaintext",
    "parse_instant",
    "stamp",
    "windows",
]

_UTC = dt.timezone.utc
_USAGE_FIELDS: Final = (
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
)


class OpenRouterState:
    """The fake account: keys, clock, spend. Thread-safe; every public method takes the lock.

    ``_keys`` holds the committed keys, which every read by hash sees. ``_listed`` is what ``GET /keys`` sees:
    the same keys in the order they reached it, behind by the list lag of :class:`Realism`. A write that has
    not reached it waits in ``_pending`` with a copy of the key as it was written, so that later writes to the
    live key do not show through early.
    """

    def __init__(
        self,
        *,
        management_key: str | None = None,
        total_credits: float = 100.0,
        spend_per_second: float = 0.0,
        realism: Realism | None = None,
    ) -> None:
        self.lock = threading.RLock()
        # Wakes creates waiting for their commit when the clock or the realism changes.
        self._changed = threading.Condition(self.lock)
        self._realism = realism or Realism()
        self._rng = random.Random()
        self._keys: dict[str, KeyRecord] = {}
        self._listed: dict[str, KeyRecord] = {}
        self._listed_version = 0
        self._by_stamp: tuple[int, list[KeyRecord]] = (-1, [])
        # (visible at, sequence, hash, the key as written or None for a delete), earliest first.
        self._pending: list[tuple[dt.datetime, int, str, KeyRecord | None]] = []
        self._pending_until: dict[str, dt.datetime] = {}
        self._sequence = itertools.count()
        self._awaiting_commit = 0
        self._issued: list[str] = []
        self._offset = dt.timedelta(0)
        self._frozen: dt.datetime | None = None
        self.total_credits = float(total_credits)
        self.ledger = SpendLedger(self._keys, spend_per_second)
        self.management_key = management_key or new_plaintext()
        self._insert(self.management_key, name="Local management key", management=True)

    # -- realism -------------------------------------------------------------------------------------------

    @property
    def realism(self) -> Realism:
        return self._realism

    def set_realism(self, realism: Realism) -> None:
        """Change the knobs from now on; writes already on their way to the list keep their lag."""
        with self.lock:
            self._realism = realism
            self._changed.notify_all()

    # -- clock ---------------------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        with self.lock:
            if self._frozen is not None:
                return self._frozen
            return dt.datetime.now(_UTC) + self._offset

    def advance_clock(self, delta: dt.timedelta) -> dt.datetime:
        with self.lock:
            self._accrue()
            if self._frozen is not None:
                self._frozen += delta
            else:
                self._offset += delta
            self._changed.notify_all()
            return self.now()

    def set_clock(self, moment: dt.datetime, *, frozen: bool = False) -> dt.datetime:
        if moment.tzinfo is None:
            raise ValueError("set_clock needs a timezone-aware datetime")
        with self.lock:
            self._accrue()
            moment = moment.astimezone(_UTC)
            if frozen:
                self._frozen = moment
            else:
                self._frozen = None
                self._offset = moment - dt.datetime.now(_UTC)
            self._changed.notify_all()
            return self.now()

    # -- spend ---------------------------------------------------------------------------------------------

    @property
    def spend_per_second(self) -> float:
        return self.ledger.rate

    def set_spend_per_second(self, usd: float) -> None:
        with self.lock:
            self._accrue()
            self.ledger.rate = float(usd)

    def _accrue(self) -> None:
        """Apply the simulated spend since the last call (see :class:`SpendLedger`): a key's record takes
        its share when it is next read, through :meth:`_roll`."""
        self.ledger.accrue(self.now())

    def _roll(self, rec: KeyRecord, now: dt.datetime) -> None:
        """Bring ``rec`` up to date for reading at ``now``: its simulated spend, then its windows."""
        self.ledger.settle(rec)
        current = windows(now)
        self.ledger.saw_windows(current)
        rec.usage.roll(current)
        rec.byok.roll(current)

    def _spend(self, rec: KeyRecord, usd: float, *, byok: bool, now: dt.datetime) -> None:
        self.ledger.settle(rec)
        current = windows(now)
        self.ledger.saw_windows(current)
        (rec.byok if byok else rec.usage).add(usd, current)
        if not byok:
            self.ledger.account_usage += usd
        rec.last_used_at = now

    def add_usage(self, key_hash: str, usd: float, *, byok: bool = False) -> dict[str, Any]:
        with self.lock:
            self._accrue()
            rec = self._held(key_hash)
            now = self.now()
            self._spend(rec, float(usd), byok=byok, now=now)
            # What counts against its limit changed: whether, and how long, it goes on spending.
            self.ledger.enlist(rec, now)
            return rec.to_state()

    def set_usage(self, key_hash: str, values: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(values)
        used = values.pop("last_used_at", ...)  # an ISO instant, a datetime, None (never used); absent: kept
        unknown = set(values) - set(_USAGE_FIELDS)
        if unknown:
            raise ValueError(f"unknown usage fields: {', '.join(sorted(unknown))}")
        with self.lock:
            self._accrue()
            rec = self._held(key_hash)
            now = self.now()
            self._roll(rec, now)
            if "usage" in values:
                self.ledger.account_usage += float(values["usage"]) - rec.usage.total
            for name, value in values.items():
                spend = rec.byok if name.startswith("byok_") else rec.usage
                attr = name.removeprefix("byok_").removeprefix("usage").lstrip("_") or "total"
                setattr(spend, attr, float(value))
            if used is not ...:
                keep = used is None or isinstance(used, dt.datetime)
                rec.last_used_at = used if keep else parse_instant(str(used))
            self.ledger.enlist(rec, now)
            return rec.to_state()

    # -- keys ----------------------------------------------------------------------------------------------

    def _insert(self, plaintext: str, *, listed: bool = True, **fields: Any) -> KeyRecord:
        """Store a new key; ``fields`` are :class:`KeyRecord`'s (``management`` defaults to ``False``,
        ``created_at`` to now). ``listed``: the list shows it at once (else :meth:`_publish` it)."""
        now = self.now()
        rec = KeyRecord(
            hash=hash_of(plaintext),
            label=mask(plaintext),
            created_at=fields.pop("created_at", now),
            **{
                "management": False,
                **fields,
                "workspace_id": fields.get("workspace_id") or DEFAULT_WORKSPACE_ID,
            },
        )
        self._roll(rec, now)
        self._keys[rec.hash] = rec
        self.ledger.enlist(rec, now)
        self._issued.append(plaintext)
        if listed:
            self._list(rec.hash, rec)
        return rec

    def seed_keys(self, count: int, prefix: str = "filler-") -> int:
        """Insert ``count`` keys named ``<prefix><index>`` (index zero-padded, from 0), listed at once and
        stamped a microsecond apart just before now, the last one newest: an account of many pages."""
        if count < 0:
            raise ValueError("count must be >= 0")
        width = len(str(max(count - 1, 0)))
        with self.lock:
            self._accrue()
            now = self.now()
            for index in range(count):
                self._insert(
                    new_plaintext(),
                    name=f"{prefix}{index:0{width}d}",
                    created_at=now - dt.timedelta(microseconds=count - index),
                )
            return count

    # -- what the list sees ------------------------------------------------------------------------------

    def _list(self, key_hash: str, rec: KeyRecord | None) -> None:
        """Make the list show ``rec`` for ``key_hash`` (``None``: not at all); a key keeps its place."""
        if rec is None:
            self._listed.pop(key_hash, None)
        else:
            self._listed[key_hash] = rec
        self._listed_version += 1

    def _catch_up(self, now: dt.datetime) -> None:
        """Let every write whose lag has passed reach the list, in the order they become visible."""
        pending = self._pending
        while pending and pending[0][0] <= now:
            visible, _, key_hash, rec = heapq.heappop(pending)
            self._list(key_hash, rec)
            if self._pending_until.get(key_hash, visible) <= visible:
                self._pending_until.pop(key_hash, None)

    def _publish(self, key_hash: str, rec: KeyRecord | None) -> None:
        """Send a committed write (``rec`` as written, ``None`` for a delete) towards the list."""
        now = self.now()
        self._catch_up(now)
        lag = self._realism.list_lag
        visible = now + dt.timedelta(seconds=self._rng.uniform(0.0, lag)) if lag > 0 else now
        # The writes to one key reach the list in their order: a rename never comes back undone.
        earlier = self._pending_until.get(key_hash)
        if earlier is not None and earlier > visible:
            visible = earlier
        if visible <= now:
            self._list(key_hash, rec)
            return
        snapshot = None if rec is None else dataclasses.replace(rec)
        heapq.heappush(self._pending, (visible, next(self._sequence), key_hash, snapshot))
        self._pending_until[key_hash] = visible

    def _detach(self, rec: KeyRecord) -> None:
        """Before a key changes in place, the list keeps a copy of it as it was, until the change arrives."""
        if self._listed.get(rec.hash) is rec:
            self._listed[rec.hash] = dataclasses.replace(rec)

    def _by_created_at(self) -> list[KeyRecord]:
        """The listed keys, newest ``created_at`` first, equal stamps in a fixed arbitrary order (by hash)."""
        version, ordered = self._by_stamp
        if version != self._listed_version:
            ordered = sorted(self._listed.values(), key=lambda rec: (rec.created_at, rec.hash), reverse=True)
            self._by_stamp = (self._listed_version, ordered)
        return ordered

    def _listing(self) -> Iterator[KeyRecord]:
        """The listed keys in :attr:`Realism.list_order`, equal stamps as :attr:`Realism.shuffle_ties`."""
        realism = self._realism
        if realism.list_order == "insertion":
            yield from reversed(self._listed.values())
            return
        ordered = self._by_created_at()
        if not realism.shuffle_ties:
            yield from ordered
            return
        index = 0
        while index < len(ordered):
            end = index + 1
            while end < len(ordered) and ordered[end].created_at == ordered[index].created_at:
                end += 1
            if end - index == 1:
                yield ordered[index]
            else:
                tied = ordered[index:end]
                self._rng.shuffle(tied)
                yield from tied
            index = end

    def _await_commit(self, arrived: dt.datetime) -> None:
        """Hold a create between its arrival and its commit, ``commit_gap`` seconds of the fake's clock later;
        the lock is free meanwhile, so other requests go on (and do not see the key)."""
        gap = self._realism.commit_gap
        if gap <= 0:
            return
        commit = arrived + dt.timedelta(seconds=gap)
        self._awaiting_commit += 1
        try:
            while (now := self.now()) < commit:
                # A frozen clock moves only when a test moves it, which wakes this; else sleep until commit.
                self._changed.wait(0.1 if self._frozen is not None else (commit - now).total_seconds())
        finally:
            self._awaiting_commit -= 1

    @property
    def awaiting_commit(self) -> int:
        """How many creates have arrived and not committed yet."""
        with self.lock:
            return self._awaiting_commit

    def add_key(self, name: str, **options: Any) -> tuple[dict[str, Any], str]:
        """Insert a key directly, bypassing the API's validation (so tests can build any state).

        ``options`` are those of :meth:`LocalOpenRouter.add_key`, which declares them.
        """
        limit, limit_reset, expires_at = (options.get(o) for o in ("limit", "limit_reset", "expires_at"))
        if limit_reset is not None and limit_reset not in LIMIT_RESETS:
            raise ValueError(f"limit_reset must be one of {LIMIT_RESETS} or None")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        with self.lock:
            self._accrue()
            plaintext = new_plaintext()
            rec = self._insert(
                plaintext,
                name=name,
                **{
                    **options,
                    "limit": None if limit is None else float(limit),
                    "expires_at": None
                    if expires_at is None
                    else expires_at.astimezone(_UTC).replace(microsecond=0),
                },
            )
            return rec.to_api(), plaintext

    def _record(self, key_hash: str) -> KeyRecord:
        """An API key for the API: management keys are not among them."""
        rec = self._keys.get(key_hash)
        if rec is None or rec.management:
            raise ApiError(404, "API key not found")
        return rec

    def _held(self, key_hash: str) -> KeyRecord:
        """Any key, management keys included, for the test helpers: ``KeyError`` if there is none."""
        rec = self._keys.get(key_hash)
        if rec is None:
            raise KeyError(key_hash)
        return rec

    def key_state(self, key_hash: str) -> dict[str, Any]:
        with self.lock:
            self._accrue()
            rec = self._held(key_hash)
            self._roll(rec, self.now())
            return rec.to_state()

    def listed_hashes(self) -> list[str]:
        """The hashes ``GET /keys`` would show now (every workspace, disabled and expired too), unordered."""
        with self.lock:
            self._catch_up(self.now())
            return [h for h, rec in self._listed.items() if not rec.management]

    def all_keys(self, *, include_management: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            self._accrue()
            now = self.now()
            out = []
            for rec in self._keys.values():
                if rec.management and not include_management:
                    continue
                self._roll(rec, now)
                out.append(rec.to_state())
            return out

    @property
    def issued_plaintexts(self) -> list[str]:
        with self.lock:
            return list(self._issued)

    # -- the API -------------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> KeyRecord:
        """The key making a request, or the API's 401."""
        if not authorization:
            raise ApiError(401, "Missing Authentication header")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing Authentication header")
        with self.lock:
            self._accrue()
            rec = self._keys.get(hash_of(token.strip()))
            if rec is None:
                raise ApiError(401, "User not found.")
            if rec.disabled:
                raise ApiError(401, "API key is disabled")
            now = self.now()
            if rec.expired(now):
                raise ApiError(401, "API key has expired")
            self._roll(rec, now)
            return rec

    @staticmethod
    def require_management(rec: KeyRecord) -> None:
        if not rec.management:
            raise ApiError(403, "Only management keys can perform this operation")

    def current_key(self, rec: KeyRecord) -> dict[str, Any]:
        with self.lock:
            self.ledger.settle(rec)
            return rec.to_current()

    def list_keys(
        self, *, offset: int, include_disabled: bool, include_expired: bool, workspace_id: str | None
    ) -> list[dict[str, Any]]:
        workspace = workspace_id or DEFAULT_WORKSPACE_ID
        with self.lock:
            now = self.now()
            self._catch_up(now)
            trim = self._realism.trim_stamp_zeros
            page: list[dict[str, Any]] = []
            seen = 0
            # Newest first, as the API's "the most recent 100 API keys".
            for rec in self._listing():
                if rec.management or rec.workspace_id != workspace:
                    continue
                if rec.disabled and not include_disabled:
                    continue
                if rec.expired(now) and not include_expired:
                    continue
                if seen >= offset:
                    self._roll(rec, now)
                    page.append(rec.to_api(trim=trim))
                    if len(page) == PAGE_SIZE:
                        break
                seen += 1
            return page

    def create_key(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        if "name" not in body:
            raise _bad("name: required")
        name = _check_name(body["name"], self._realism.name_max_length)
        limit = _check_limit(body.get("limit"))
        limit_reset = _check_limit_reset(body.get("limit_reset"))
        include_byok = _check_bool("include_byok_in_limit", body.get("include_byok_in_limit", False))
        creator = body.get("creator_user_id", DEFAULT_CREATOR)
        if creator is not None and (not isinstance(creator, str) or not creator):
            raise _bad("creator_user_id: expected a non-empty string or null")
        workspace = check_workspace_id(body["workspace_id"]) if body.get("workspace_id") is not None else None
        external_user = None
        external = body.get("external")
        if external is not None:
            if not isinstance(external, dict) or not isinstance(external.get("user"), str):
                raise _bad("external: expected an object with a string 'user'")
            api_key = external.get("api_key")
            if api_key is not None and (not isinstance(api_key, str) or len(api_key) < 32):
                raise _bad("external.api_key: must contain at least 32 characters")
            external_user = external["user"]
        with self.lock:
            self._accrue()
            arrived = self.now()
            expires_at = _check_expires_at(body.get("expires_at"), arrived)
            self._await_commit(arrived)
            plaintext = new_plaintext()
            rec = self._insert(
                plaintext,
                listed=False,
                created_at=arrived,
                name=name,
                limit=limit,
                limit_reset=limit_reset,
                include_byok_in_limit=include_byok,
                expires_at=expires_at,
                workspace_id=workspace,
                creator_user_id=creator,
                external_user=external_user,
            )
            self._publish(rec.hash, rec)
            return rec.to_api(trim=self._realism.trim_stamp_zeros), plaintext

    def get_key(self, key_hash: str) -> dict[str, Any]:
        with self.lock:
            rec = self._record(key_hash)
            self._roll(rec, self.now())
            return rec.to_api(trim=self._realism.trim_stamp_zeros)

    def update_key(self, key_hash: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if "expires_at" in body:
            raise _bad("expires_at cannot be changed after a key is created")
        given = [name for name in _UPDATE_FIELDS if name in body]
        if not given:
            raise _bad("No update fields provided")
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = _check_name(body["name"], self._realism.name_max_length)
        if "disabled" in body:
            changes["disabled"] = _check_bool("disabled", body["disabled"])
        if "limit" in body:
            changes["limit"] = _check_limit(body["limit"])
        if "limit_reset" in body:
            changes["limit_reset"] = _check_limit_reset(body["limit_reset"])
        if "include_byok_in_limit" in body:
            changes["include_byok_in_limit"] = _check_bool(
                "include_byok_in_limit", body["include_byok_in_limit"]
            )
        if "workspace_id" in body:
            changes["workspace_id"] = check_workspace_id(body["workspace_id"])
        with self.lock:
            rec = self._record(key_hash)
            now = self.now()
            self._roll(rec, now)
            self._detach(rec)
            for name, value in changes.items():
                setattr(rec, name, value)
            rec.updated_at = now
            # Disabled, re-enabled or given another limit: whether, and how long, it goes on spending.
            self.ledger.enlist(rec, now)
            self._publish(key_hash, rec)
            return rec.to_api(trim=self._realism.trim_stamp_zeros)

    def delete_key(self, key_hash: str) -> None:
        with self.lock:
            self.ledger.drop(self._record(key_hash))
            del self._keys[key_hash]
            self._publish(key_hash, None)

    def credits(self) -> dict[str, float]:
        with self.lock:
            self._accrue()
            return {"total_credits": self.total_credits, "total_usage": round(self.ledger.account_usage, 10)}
