"""The simulated spend of the local OpenRouter: every usable regular key spends at one rate, until its limit
stops it, as the real API refuses a key's requests once its limit is used up.

The spend is counted once for the account and brought into a key's record only when the key is looked at,
so that a request costs the same however many keys the account holds. What the account's keys would each
have spent by now is one figure, :attr:`SpendLedger.per_key`: the spend of a key that has spent at every
accrual of the current *segment* (a run of accruals within one set of reset windows, on a clock that has not
gone back). A spending key remembers that figure as it was when its record was last brought up to date; the
difference is what it still owes its record. A key stops spending in the middle of a segment only when it
expires or reaches its limit, both known in advance: a heap of each says which accrual stops which key, and
the key's record is brought up to date right then, as it would have been with every key walked every time.
When the windows change or the clock goes back, every key's standing may change (a daily limit frees the key
again, an expired key is not expired any more), so the segment ends: every key is brought up to date and
looked at again. That happens once a day of the fake's clock, or when a test sets it back or to another day.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import TYPE_CHECKING

from airflow_provider_openrouter.testing._records import windows

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    from airflow_provider_openrouter.testing._records import KeyRecord


class SpendLedger:
    """The account's simulated spend; the caller holds the account's lock around every call.

    ``touched`` counts the key records the ledger has looked at, so that a test can hold a request's cost to
    a constant without timing it.
    """

    def __init__(self, keys: Mapping[str, KeyRecord], rate: float) -> None:
        self._keys = keys
        self.rate = float(rate)
        # Account-level spend: it outlives deleted keys, as the real account's total usage does.
        self.account_usage = 0.0
        self.per_key = 0.0
        self.touched = 0
        self._mark = time.monotonic()
        self._windows: dict[str, str] | None = None
        self._stale = False
        self._last: dt.datetime | None = None
        # hash -> (the live record, per_key when it was last brought up to date, its enlistment)
        self._spending: dict[str, tuple[KeyRecord, float, int]] = {}
        # (when the key expires, or per_key at which its limit is used up; its enlistment; hash), earliest
        # first; an entry whose enlistment is no longer the key's is stale and skipped.
        self._expiries: list[tuple[dt.datetime, int, str]] = []
        self._limits: list[tuple[float, int, str]] = []
        self._enlistments = itertools.count()

    def accrue(self, now: dt.datetime) -> None:
        """Spend what the time since the last call (on the monotonic clock) is worth, stamped ``now``."""
        mark = time.monotonic()
        elapsed, self._mark = mark - self._mark, mark
        if self.rate <= 0 or elapsed <= 0:
            return
        amount = self.rate * elapsed
        current = windows(now)
        if self._stale or current != self._windows or (self._last is not None and now < self._last):
            self._new_segment(now, current)
        self._stop_expired(now)
        self.account_usage += amount * len(self._spending)
        self.per_key += amount
        self._last = now
        self._stop_limited(now)

    def settle(self, rec: KeyRecord) -> None:
        """Bring ``rec``'s usage and ``last_used_at`` up to date; a copy the list shows is left as it was."""
        entry = self._spending.get(rec.hash)
        if entry is None or entry[0] is not rec:
            return
        self.touched += 1
        _, settled, enlistment = entry
        owed = self.per_key - settled
        if owed > 0 and self._windows is not None:
            rec.usage.add(owed, self._windows)
            rec.last_used_at = self._last
            self._spending[rec.hash] = (rec, self.per_key, enlistment)

    def saw_windows(self, current: dict[str, str]) -> None:
        """A key was rolled to ``current`` by a read: if these are not the segment's windows, a key held
        back by its limit may be free again (its window counter zeroed), so the next accrual starts a new
        segment and looks at every key again."""
        if current is not self._windows and current != self._windows:
            self._stale = True

    def enlist(self, rec: KeyRecord, now: dt.datetime) -> None:
        """Look at ``rec`` afresh after it changed (its record already up to date): spending from now on
        if it is a usable regular key under its limit, else not."""
        self.touched += 1
        self._spending.pop(rec.hash, None)
        if rec.management or rec.disabled or rec.expired(now):
            return
        remaining = rec.limit_remaining()
        if remaining is not None and remaining <= 0:
            return
        enlistment = next(self._enlistments)
        self._spending[rec.hash] = (rec, self.per_key, enlistment)
        if rec.expires_at is not None:
            heapq.heappush(self._expiries, (rec.expires_at, enlistment, rec.hash))
        if remaining is not None:
            heapq.heappush(self._limits, (self.per_key + remaining, enlistment, rec.hash))

    def drop(self, rec: KeyRecord) -> None:
        """Stop ``rec`` spending (it is being deleted), its spend so far brought into its record first."""
        self.settle(rec)
        if self._spending.get(rec.hash, (None,))[0] is rec:
            del self._spending[rec.hash]

    def _new_segment(self, now: dt.datetime, current: dict[str, str]) -> None:
        for rec, _, _ in list(self._spending.values()):
            self.settle(rec)
        self._spending.clear()
        self._expiries.clear()
        self._limits.clear()
        self.per_key = 0.0
        self._windows = current
        self._stale = False
        for rec in self._keys.values():
            if rec.management or rec.disabled or rec.expired(now):
                continue
            # Every usable key takes the new windows at this accrual, as each did when all were walked.
            rec.usage.roll(current)
            rec.byok.roll(current)
            self.enlist(rec, now)

    def _live(self, key_hash: str, enlistment: int) -> tuple[KeyRecord, float] | None:
        entry = self._spending.get(key_hash)
        if entry is None or entry[2] != enlistment:
            return None
        return entry[0], entry[1]

    def _stop_expired(self, now: dt.datetime) -> None:
        """Keys expired by ``now`` stop before this accrual: what they spent ends at the previous one."""
        while self._expiries and self._expiries[0][0] <= now:
            _, enlistment, key_hash = heapq.heappop(self._expiries)
            live = self._live(key_hash, enlistment)
            if live is not None:
                self.settle(live[0])
                del self._spending[key_hash]

    def _stop_limited(self, now: dt.datetime) -> None:
        """Keys whose limit this accrual used up spend only what was left of it, and stop."""
        while self._limits and self._limits[0][0] <= self.per_key:
            threshold, enlistment, key_hash = heapq.heappop(self._limits)
            live = self._live(key_hash, enlistment)
            if live is None or self._windows is None:
                continue
            rec, settled = live
            self.touched += 1
            del self._spending[key_hash]
            rec.usage.add(threshold - settled, self._windows)
            rec.last_used_at = now
            self.account_usage -= self.per_key - threshold
