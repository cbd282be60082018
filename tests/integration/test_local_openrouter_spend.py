"""The local OpenRouter's simulated spend: brought into a key when the key is read, it costs a request the
same however many keys the account holds, and it adds up to what walking every key at every request gave.

The reference is that walk itself (``EagerState``, the account walking all its keys at every accrual): the
same operations on both, on one controlled monotonic clock, must leave the same figures.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_openrouter.testing import LocalOpenRouter
from airflow_provider_openrouter.testing import _spend as spend_module
from airflow_provider_openrouter.testing._records import KeyRecord, Spend
from airflow_provider_openrouter.testing._state import ApiError, OpenRouterState, stamp, windows

if TYPE_CHECKING:
    from collections.abc import Callable

NOON: dt.datetime = dt.datetime(2030, 1, 7, 12, 0, tzinfo=dt.timezone.utc)  # a Monday
SIZES = (100, 1_000, 10_000)


class Monotonic:
    """A monotonic clock that moves only when told, in binary-exact steps so sums do not depend on order."""

    def __init__(self) -> None:
        self.value = 1000.0

    def monotonic(self) -> float:
        return self.value


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    fake = Monotonic()
    monkeypatch.setattr(spend_module, "time", fake)
    return fake


class EagerState(OpenRouterState):
    """The account walking every key at every accrual: the reference the ledger must add up to."""

    def __init__(self, clock: Monotonic, *, spend_per_second: float) -> None:
        super().__init__()
        self._clock = clock
        self._rate = spend_per_second
        self._mark = clock.monotonic()

    def set_spend_per_second(self, usd: float) -> None:
        with self.lock:
            self._accrue()
            self._rate = float(usd)

    def _accrue(self) -> None:
        mark = self._clock.monotonic()
        elapsed, self._mark = mark - self._mark, mark
        if self._rate <= 0 or elapsed <= 0:
            return
        now = self.now()
        amount = self._rate * elapsed
        for rec in self._keys.values():
            if rec.management or rec.disabled or rec.expired(now):
                continue
            self._roll(rec, now)
            remaining = rec.limit_remaining()
            spend = amount if remaining is None else min(amount, remaining)
            if spend > 0:
                self._spend(rec, spend, byok=False, now=now)


def close(lazy: Any, eager: Any) -> bool:
    """Equal, floats to within their rounding (the ledger adds a key's spend in fewer, larger steps)."""
    if isinstance(lazy, float) and isinstance(eager, float):
        return abs(lazy - eager) <= 1e-9
    if isinstance(lazy, dict) and isinstance(eager, dict):
        return lazy.keys() == eager.keys() and all(close(lazy[k], eager[k]) for k in lazy)
    if isinstance(lazy, (list, tuple)) and isinstance(eager, (list, tuple)):
        return len(lazy) == len(eager) and all(close(a, b) for a, b in zip(lazy, eager, strict=True))
    return bool(lazy == eager)


class Pair:
    """The same account twice, lazy and eager, driven by the same operations; keys are known by name."""

    def __init__(self, clock: Monotonic, rate: float) -> None:
        self.clock = clock
        self.lazy = OpenRouterState(spend_per_second=rate)
        self.eager = EagerState(clock, spend_per_second=rate)
        self.plaintexts: dict[int, dict[str, str]] = {id(self.lazy): {}, id(self.eager): {}}
        for state in self.states:
            state.set_clock(NOON, frozen=True)

    @property
    def states(self) -> tuple[OpenRouterState, OpenRouterState]:
        return self.lazy, self.eager

    def hash(self, state: OpenRouterState, name: str) -> str:
        return str(next(k["hash"] for k in state.all_keys() if k["name"] == name))

    def add_key(self, name: str, **options: Any) -> None:
        for state in self.states:
            _, plaintext = state.add_key(name, **options)
            self.plaintexts[id(state)][name] = plaintext

    def both(self, act: Callable[[OpenRouterState], Any]) -> tuple[Any, Any]:
        results = []
        for state in self.states:
            try:
                results.append(act(state))
            except ApiError as error:
                results.append(("error", error.status, error.message))
        return results[0], results[1]

    def request(self, state: OpenRouterState, name: str) -> dict[str, Any]:
        """What ``GET /key`` answers the key ``name``."""
        caller = state.authenticate(f"Bearer {self.plaintexts[id(state)][name]}")
        return state.current_key(caller)

    def figures(self, state: OpenRouterState) -> dict[str, dict[str, Any]]:
        drop = ("hash", "label")
        return {k["name"]: {f: v for f, v in k.items() if f not in drop} for k in state.all_keys()}

    def assert_same(self) -> None:
        lazy, eager = self.figures(self.lazy), self.figures(self.eager)
        assert close(lazy, eager), (lazy, eager)
        assert close(self.lazy.credits(), self.eager.credits())


# -- a request's cost ---------------------------------------------------------------------------------------


class Counter:
    """Counts the key records a request looks at: every window roll and every expiry check of a key."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        roll, expired = Spend.roll, KeyRecord.expired

        def counted_roll(spend: Spend, current: Any) -> None:
            self.count += 1
            roll(spend, current)

        def counted_expired(rec: KeyRecord, now: dt.datetime) -> bool:
            self.count += 1
            return expired(rec, now)

        monkeypatch.setattr(Spend, "roll", counted_roll)
        monkeypatch.setattr(KeyRecord, "expired", counted_expired)


def _requests_cost(state: OpenRouterState, clock: Monotonic, counter: Counter, key: str) -> int:
    """Key records looked at by ten rounds of requests, one second of spend apart."""
    management = f"Bearer {state.management_key}"
    key_hash = next(k["hash"] for k in state.all_keys() if k["name"] == "watched")
    before = counter.count
    for _ in range(10):
        clock.value += 1.0
        state.current_key(state.authenticate(f"Bearer {key}"))
        clock.value += 1.0
        state.authenticate(management)
        state.credits()
        state.authenticate(management)
        state.get_key(key_hash)
        state.authenticate(management)
        state.list_keys(offset=0, include_disabled=False, include_expired=False, workspace_id=None)
    return counter.count - before


def _cost_for(size: int, eager: bool, clock: Monotonic, counter: Counter) -> int:
    state = EagerState(clock, spend_per_second=0.25) if eager else OpenRouterState(spend_per_second=0.25)
    state.set_clock(NOON, frozen=True)
    state.seed_keys(size)
    _, key = state.add_key("watched", limit=1_000.0)
    state.add_key("capped", limit=1.0)
    state.add_key("expiring", expires_at=NOON + dt.timedelta(hours=1))
    # The first accrual starts the ledger's segment, looking at every key once, as a new day does.
    clock.value += 1.0
    state.credits()
    return _requests_cost(state, clock, counter, key)


def test_a_requests_cost_does_not_grow_with_the_account(
    clock: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(monkeypatch)
    costs = {size: _cost_for(size, eager=False, clock=clock, counter=counter) for size in SIZES}
    assert costs[100] == costs[1_000] == costs[10_000], costs


def test_the_counter_sees_a_walk_of_every_key(clock: Monotonic, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    small = _cost_for(100, eager=True, clock=clock, counter=counter)
    large = _cost_for(1_000, eager=True, clock=clock, counter=counter)
    assert large > small + 40 * 900, (small, large)


def test_a_served_requests_cost_does_not_grow_with_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    costs: dict[int, int] = {}
    for size in (100, 10_000):
        with LocalOpenRouter(spend_per_second=0.5) as fake:
            fake.set_clock(NOON, frozen=True)
            fake.seed_keys(size)
            key = fake.add_key("watched")
            session = requests.Session()
            session.trust_env = False
            session.headers["Authorization"] = f"Bearer {fake.management_key}"
            session.get(fake.base_url + "/credits", timeout=10).raise_for_status()
            before = counter.count
            for _ in range(5):
                session.get(fake.base_url + "/credits", timeout=10).raise_for_status()
                session.get(f"{fake.base_url}/keys/{key.hash}", timeout=10).raise_for_status()
                session.get(fake.base_url + "/keys", timeout=10).raise_for_status()
                answer = requests.get(
                    fake.base_url + "/key", headers={"Authorization": f"Bearer {key.plaintext}"}, timeout=10
                )
                answer.raise_for_status()
            costs[size] = counter.count - before
            assert answer.json()["data"]["usage"] > 0
            session.close()
    assert costs[100] == costs[10_000], costs


# -- the same figures as the walk ---------------------------------------------------------------------------


@pytest.fixture
def pair(clock: Monotonic) -> Pair:
    pair = Pair(clock, rate=0.25)
    pair.add_key("open")
    pair.add_key("twin-read-often")
    pair.add_key("twin-read-late")
    pair.add_key("capped", limit=2.0)
    pair.add_key("daily", limit=1.5, limit_reset="daily")
    pair.add_key("weekly-byok", limit=3.0, limit_reset="weekly", include_byok_in_limit=True)
    pair.add_key("monthly", limit=4.0, limit_reset="monthly")
    pair.add_key("expiring", expires_at=NOON + dt.timedelta(hours=2))
    pair.add_key("expiring-later", limit=9.0, expires_at=NOON + dt.timedelta(hours=30))
    pair.add_key("disabled", disabled=True)
    return pair


def test_a_key_read_often_and_one_read_late_spend_the_same(pair: Pair, clock: Monotonic) -> None:
    for _ in range(40):
        clock.value += 0.5
        pair.both(lambda state: pair.request(state, "twin-read-often"))
    lazy = pair.figures(pair.lazy)
    assert {**lazy["twin-read-often"], "name": ""} == {**lazy["twin-read-late"], "name": ""}
    assert lazy["twin-read-late"]["usage"] == 40 * 0.5 * 0.25
    assert lazy["capped"]["usage"] == 2.0
    assert lazy["disabled"]["usage"] == 0.0
    pair.assert_same()


def test_the_limit_stops_the_spend_at_the_accrual_that_used_it_up(pair: Pair, clock: Monotonic) -> None:
    def a_minute_on(state: OpenRouterState) -> Any:
        return state.advance_clock(dt.timedelta(minutes=1))

    for _ in range(12):
        clock.value += 1.0  # 0.25 USD a step: the 2 USD of "capped" are used up at the eighth
        pair.both(a_minute_on)
    capped = pair.lazy.key_state(pair.hash(pair.lazy, "capped"))
    assert capped["usage"] == 2.0
    assert capped["limit_remaining"] == 0.0
    # advance_clock accrues before it moves the clock: the eighth accrual is stamped at minute 7.
    assert capped["last_used_at"] == stamp(NOON + dt.timedelta(minutes=7))
    open_ended = pair.lazy.key_state(pair.hash(pair.lazy, "open"))
    assert open_ended["last_used_at"] == stamp(NOON + dt.timedelta(minutes=11))
    pair.assert_same()


def test_an_expired_key_stops_spending_and_keeps_its_last_use(pair: Pair, clock: Monotonic) -> None:
    clock.value += 4.0
    pair.both(lambda state: state.credits())
    pair.both(lambda state: state.advance_clock(dt.timedelta(hours=3)))
    clock.value += 4.0
    pair.both(lambda state: state.credits())
    expiring = pair.lazy.key_state(pair.hash(pair.lazy, "expiring"))
    assert expiring["usage"] == 1.0
    assert expiring["last_used_at"] == stamp(NOON)
    assert pair.lazy.key_state(pair.hash(pair.lazy, "open"))["usage"] == 2.0
    # The clock set back before the expiry: the key spends again, as it did when every key was walked.
    pair.both(lambda state: state.set_clock(NOON + dt.timedelta(hours=1), frozen=True))
    clock.value += 4.0
    pair.both(lambda state: state.credits())
    assert pair.lazy.key_state(pair.hash(pair.lazy, "expiring"))["usage"] == 2.0
    pair.assert_same()


def test_windows_roll_and_free_a_daily_limit(pair: Pair, clock: Monotonic) -> None:
    clock.value += 8.0
    pair.both(lambda state: state.credits())
    daily = pair.hash(pair.lazy, "daily")
    assert pair.lazy.key_state(daily)["usage_daily"] == 1.5
    pair.both(lambda state: state.advance_clock(dt.timedelta(days=1)))
    clock.value += 2.0
    pair.both(lambda state: state.credits())
    state = pair.lazy.key_state(daily)
    assert (state["usage"], state["usage_daily"], state["usage_weekly"]) == (2.0, 0.5, 2.0)
    assert windows(pair.lazy.now())["daily"] == "2030-01-08"
    pair.assert_same()


def _operation(rng: random.Random, step: int, pair: Pair, name: str) -> Callable[[OpenRouterState], Any]:
    """One random operation on the key ``name`` (or the account), as both accounts will be given it."""
    choice = rng.randrange(10)

    def read(state: OpenRouterState) -> Any:
        return state.key_state(pair.hash(state, name))

    def request(state: OpenRouterState) -> Any:
        return pair.request(state, name)

    def listed(state: OpenRouterState) -> Any:
        page = state.list_keys(offset=0, include_disabled=True, include_expired=True, workspace_id=None)
        return sorted((k["name"], k["usage"], k["usage_daily"], k["last_used_at"]) for k in page)

    def update(state: OpenRouterState) -> Any:
        state.authenticate(f"Bearer {state.management_key}")
        return state.update_key(pair.hash(state, name), body)

    def add_usage(state: OpenRouterState) -> Any:
        return state.add_usage(pair.hash(state, name), usd, byok=byok)

    def advance(state: OpenRouterState) -> Any:
        return state.advance_clock(dt.timedelta(hours=hours))

    def set_clock(state: OpenRouterState) -> Any:
        return state.set_clock(back, frozen=True)

    def set_rate(state: OpenRouterState) -> Any:
        state.set_spend_per_second(rate)

    def credits(state: OpenRouterState) -> Any:
        return state.credits()

    body: dict[str, Any] = rng.choice(
        (
            {"disabled": rng.random() < 0.5},
            {"limit": rng.choice((None, 0.5, 2.0, 6.0))},
            {"limit_reset": rng.choice((None, "daily", "weekly", "monthly"))},
            {"include_byok_in_limit": rng.random() < 0.5},
        )
    )
    usd, byok = rng.choice((0.5, 1.0)), rng.random() < 0.5
    hours = rng.choice((1, 5, 13, 26))
    back = NOON + dt.timedelta(hours=rng.choice((0, 3, 20)))
    rate = rng.choice((0.0, 0.25, 0.5))
    if choice == 6 and step % 4:
        return credits
    return (read, request, listed, update, add_usage, advance, set_clock, set_rate, credits, credits)[choice]


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_leave_the_figures_the_walk_leaves(seed: int, pair: Pair, clock: Monotonic) -> None:
    rng = random.Random(seed)
    names = sorted(pair.plaintexts[id(pair.lazy)])
    for step in range(150):
        clock.value += rng.choice((0.25, 0.5, 1.0, 4.0))
        name = rng.choice(names)
        operation = _operation(rng, step, pair, name)
        lazy, eager = pair.both(operation)
        if isinstance(lazy, dict):
            lazy, eager = ({f: v for f, v in d.items() if f not in ("hash", "label")} for d in (lazy, eager))
        assert close(lazy, eager), (step, operation.__name__, name, lazy, eager)
    pair.assert_same()


def test_a_deleted_keys_spend_stays_in_the_account_total(pair: Pair, clock: Monotonic) -> None:
    clock.value += 4.0
    pair.both(lambda state: state.authenticate(f"Bearer {state.management_key}"))
    before = pair.lazy.credits()["total_usage"]
    pair.both(lambda state: state.delete_key(pair.hash(state, "open")))
    assert pair.lazy.credits()["total_usage"] == before
    clock.value += 4.0
    pair.both(lambda state: state.credits())
    assert "open" not in pair.figures(pair.lazy)
    pair.assert_same()
