"""A walk of ``GET /keys`` with several pages in flight, against the local OpenRouter over real HTTP.

The local OpenRouter delays each page (its latency fault), so that pages overlap as they would on a real
network, and counts how many it holds at once: the connection's ``pages_in_flight`` is a bound on that count,
whatever shifts, restarts and 429s the walk meets.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, cast

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterConnectionConfigError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.testing.faults import Latency, MeteredLatency, RateLimit

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Generator

    from airflow_provider_openrouter.models import ApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter

CONN_ENV = "AIRFLOW_CONN_OPENROUTER_DEFAULT"


@pytest.fixture
def connect(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., OpenRouterHook]:
    """A hook on the local OpenRouter whose connection has the given extras."""

    def hook(**extras: object) -> OpenRouterHook:
        monkeypatch.setenv(CONN_ENV, local_openrouter.connection_json(**extras))
        return OpenRouterHook(retry_jitter=lambda delay: delay)

    return hook


def page_requests(fake: LocalOpenRouter) -> list[str]:
    return [
        r.query.get("offset", "0") for r in fake.requests if r.method == "GET" and r.path.endswith("/keys")
    ]


#: How long each page is held where a test needs the walk to reach its bound: long enough that pages sent
#: together still overlap on a machine busy with other work, where threads can wait tens of ms for a core.
REACHES_BOUND = 0.25


def meter_pages(fake: LocalOpenRouter, seconds: float) -> MeteredLatency:
    fault = MeteredLatency(seconds)
    fake.inject(fault, method="GET", path="/keys", times=None)
    return fault


@pytest.mark.parametrize("bound", [1, 3, 8])
def test_a_long_walk_keeps_up_to_the_bound_in_flight_and_never_more(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook], bound: int
) -> None:
    hook = connect(pages_in_flight=bound)
    fault = meter_pages(fake_keys, REACHES_BOUND)
    keys = [key.hash for key in hook.list_keys()]
    assert len(keys) == len(set(keys)) == KEYS
    assert fault.meter.peak == bound
    pages = -(-KEYS // 99)  # each page after the first repeats the last key of the one before
    # Past the end, the pages already asked for when the short page came back: fewer than the bound.
    assert pages <= fault.meter.count <= pages + bound - 1


def test_the_default_bound_is_eight(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect()
    fault = meter_pages(fake_keys, REACHES_BOUND)
    assert sum(1 for _ in hook.list_keys()) == KEYS
    assert fault.meter.peak == 8


KEYS = 2_000


@pytest.fixture
def fake_keys(local_openrouter: LocalOpenRouter) -> LocalOpenRouter:
    local_openrouter.seed_keys(KEYS)
    return local_openrouter


@pytest.mark.parametrize(
    ("stop_after", "offsets"),
    [
        (1, ["0"]),
        (100, ["0"]),
        # The second page (from offset 99) starts with the first page's last key: 99 keys more.
        (150, ["0", "99"]),
        (199, ["0", "99"]),
        # The third page read, the walk asks for the next one while the caller reads it.
        (200, ["0", "99", "198", "297"]),
    ],
)
def test_a_caller_that_stops_within_two_pages_sends_nothing_it_does_not_read(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook], stop_after: int, offsets: list[str]
) -> None:
    hook = connect()
    walk = cast("Generator[ApiKey, None, None]", hook.list_keys())
    for _ in range(stop_after):
        next(walk)
    walk.close()
    assert page_requests(fake_keys) == offsets


@pytest.mark.parametrize(("keys", "pages"), [(99, 1), (250, 3), (350, 4)])
def test_a_short_list_is_walked_without_a_request_past_its_end(
    local_openrouter: LocalOpenRouter, connect: Callable[..., OpenRouterHook], keys: int, pages: int
) -> None:
    local_openrouter.seed_keys(keys)
    hook = connect()
    assert sum(1 for _ in hook.list_keys()) == keys
    # Up to four pages, the pages asked for ahead never reach past the last one.
    assert sorted(page_requests(local_openrouter), key=int) == [str(99 * page) for page in range(pages)]


def test_a_caller_that_stops_later_waits_for_nothing_past_the_bound(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect(pages_in_flight=4)
    fault = meter_pages(fake_keys, 0.02)
    walk = cast("Generator[ApiKey, None, None]", hook.list_keys())
    read = 0
    for _ in walk:
        read += 1
        if read == 1_000:
            break
    walk.close()
    pages_read = -(-read // 99) + 1  # the page whose keys were being read counts
    assert fault.meter.count <= pages_read + 4
    assert fault.meter.peak <= 4


@pytest.mark.parametrize("seed", range(6))
def test_every_lasting_key_once_while_another_thread_creates_and_deletes(
    local_openrouter: LocalOpenRouter, connect: Callable[..., OpenRouterHook], seed: int
) -> None:
    rng = random.Random(seed)
    fake = local_openrouter
    keys = [fake.add_key(f"tenant-{i:04d}").hash for i in range(rng.randint(900, 1_500))]
    doomed = rng.sample(keys, 60)
    deleted: list[str] = []
    hook = connect(pages_in_flight=rng.choice([2, 4, 8]), max_retries=2, max_retry_wait=0.01)
    fault = meter_pages(fake, 0.005)
    other = OpenRouterHook()  # another writer, through the API
    walking = threading.Event()
    finished = threading.Event()

    def writer() -> None:
        walking.wait()
        while not finished.is_set() and doomed:
            action = rng.random()
            if action < 0.4:
                fake.add_key("newcomer")
            else:
                victim = doomed.pop()
                other.delete_key(victim)
                deleted.append(victim)
            finished.wait(rng.uniform(0.0, 0.01))

    thread = threading.Thread(target=writer)
    thread.start()
    reported: list[str] = []
    try:
        for key in hook.list_keys():
            reported.append(key.hash)
            walking.set()
    finally:
        finished.set()
        thread.join()
    lasting = set(keys) - set(deleted)
    assert deleted, "the writer changed nothing during the walk"
    assert len(reported) == len(set(reported)), "a key was reported twice"
    assert lasting <= set(reported), f"{len(lasting - set(reported))} lasting key(s) skipped"
    assert fault.meter.peak <= hook._get_config().pages_in_flight


def test_a_shift_drops_the_pages_asked_for_beyond_it_and_stays_within_the_bound(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect(pages_in_flight=4)
    hashes = [key.hash for key in hook.list_keys()]  # in the order of the list
    fake_keys.clear_requests()
    fault = meter_pages(fake_keys, 0.02)
    other = OpenRouterHook()
    reported: list[str] = []
    for key in hook.list_keys():
        reported.append(key.hash)
        if len(reported) == 700:
            # Pulls every later key up a place: the pages already asked for miss their anchors.
            other.delete_key(hashes[100])
    assert len(reported) == len(set(reported)) == KEYS
    offsets = page_requests(fake_keys)
    assert len(offsets) > len(set(offsets)), "no page was asked for again after the shift"
    assert fault.meter.peak <= 4


def test_a_429_in_the_middle_of_a_walk_pauses_every_page_in_flight(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect(max_retries=5, max_retry_wait=1)
    fault = meter_pages(fake_keys, 0.02)
    reported: list[str] = []
    for key in hook.list_keys():
        reported.append(key.hash)
        if len(reported) == 800:  # pages in flight by now
            fake_keys.inject(RateLimit(0.2, retry_after=0.1), method="GET", path="/keys")
    assert len(reported) == len(set(reported)) == KEYS
    assert hook.rate_limit_pauses >= 1
    limited = [r for r in fake_keys.requests if r.status == 429]
    assert limited, "the rate limit was never met"
    assert fault.meter.peak <= 8


async def test_the_async_walk_keeps_the_same_bound(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect(pages_in_flight=3)
    fault = meter_pages(fake_keys, REACHES_BOUND)
    keys = [key.hash async for key in hook.alist_keys()]
    assert len(keys) == len(set(keys)) == KEYS
    assert fault.meter.peak == 3


async def test_the_async_walk_reports_every_key_once_across_a_shift(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect(pages_in_flight=4)
    hashes = [key.hash async for key in hook.alist_keys()]  # in the order of the list
    fault = meter_pages(fake_keys, 0.01)
    other = OpenRouterHook()
    reported: list[str] = []
    async for key in hook.alist_keys():
        reported.append(key.hash)
        if len(reported) == 700:
            await other.adelete_key(hashes[100])
            fake_keys.add_key("newcomer")
    assert len(reported) == len(set(reported))
    assert set(hashes) - {hashes[100]} <= set(reported)
    assert fault.meter.peak <= 4


async def test_an_async_caller_that_stops_early_sends_nothing_it_does_not_read(
    fake_keys: LocalOpenRouter, connect: Callable[..., OpenRouterHook]
) -> None:
    hook = connect()
    fake_keys.inject(Latency(0.01), method="GET", path="/keys", times=None)
    walk = cast("AsyncGenerator[ApiKey, None]", hook.alist_keys())
    async for _ in walk:
        break
    await walk.aclose()
    assert page_requests(fake_keys) == ["0"]


@pytest.mark.parametrize("value", [0, 11, -1, "many", 2.5, True])
def test_pages_in_flight_is_checked_and_named(connect: Callable[..., OpenRouterHook], value: object) -> None:
    hook = connect(pages_in_flight=value)
    with pytest.raises(OpenRouterConnectionConfigError) as exc:
        next(hook.list_keys())
    assert "pages_in_flight" in str(exc.value)


@pytest.mark.parametrize(("value", "expected"), [("", 8), ("2", 2), (10, 10), (1, 1)])
def test_pages_in_flight_is_read_from_the_connection(
    connect: Callable[..., OpenRouterHook], value: object, expected: int
) -> None:
    assert connect(pages_in_flight=value)._get_config().pages_in_flight == expected
