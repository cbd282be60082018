"""Rate limits as a whole: a 429 that one thread (or coroutine) of a hook gets holds all of them.

Each test opens a rate-limit window on the local OpenRouter (every matching request is answered 429 for a
while, over real HTTP) and counts the requests it answered 429: with the hook's shared gate they are the ones
already in flight when the window opened plus one per pause, however many threads there are. Nothing here
asserts a duration; the windows are long enough (seconds) that threads retrying on their own would each be
answered 429 several times, which the control run shows.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import RateLimitedError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator
from airflow_provider_openrouter.testing import Latency, RateLimit, Status

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter

THREADS = 16
CALLS = 6
# Enough retries that no call gives up inside a window: each pause is at most a second or two here.
EXTRAS = {"max_retries": 8, "max_retry_wait": 5}
# A window of 2.5 s holds at most four pauses: without Retry-After the backoff doubles from 0.25-0.5 s (the
# fourth pause begins 1.75 s in at the earliest), with Retry-After 1 s they begin at 0, 1 and 2 s. A thread on
# its own is answered 429 at least three times in it (at 0, and by 0.5 and 1.5 s, or at 0, 1 and 2 s).
WINDOW = 2.5
MOST_PAUSES = 5


@pytest.fixture
def fake(local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> LocalOpenRouter:
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", local_openrouter.connection_json(**EXTRAS))
    return local_openrouter


def rate_limited(fake: LocalOpenRouter) -> int:
    return sum(1 for request in fake.requests if request.status == 429)


def hammer(hooks: list[OpenRouterHook], key_hash: str) -> list[BaseException]:
    """``THREADS`` threads released together, thread ``i`` making ``CALLS`` reads through ``hooks[i]``."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(hook: OpenRouterHook) -> None:
        barrier.wait(timeout=30)
        for _ in range(CALLS):
            try:
                hook.get_key(key_hash)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(hook,)) for hook in hooks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


@pytest.mark.parametrize("retry_after", [1, None], ids=["retry-after", "backoff"])
def test_threads_of_one_hook_wait_out_a_429_together(fake: LocalOpenRouter, retry_after: int | None) -> None:
    key = fake.add_key("reader")
    shared = OpenRouterHook()
    shared.get_key(key.hash)  # the connection is read before the window opens
    fake.inject(RateLimit(WINDOW, retry_after=retry_after), method="GET", path="/keys/*")
    assert hammer([shared] * THREADS, key.hash) == []
    together = rate_limited(fake)
    assert together >= 1
    # The first wave (one request per thread at most), then one request per pause.
    assert together <= THREADS + MOST_PAUSES
    assert shared._gate.pauses <= MOST_PAUSES

    # Control: the same window, each thread with a hook (and so a gate) of its own.
    fake.clear_requests()
    fake.inject(RateLimit(WINDOW, retry_after=retry_after), method="GET", path="/keys/*")
    assert hammer([OpenRouterHook() for _ in range(THREADS)], key.hash) == []
    alone = rate_limited(fake)
    assert alone >= 2 * THREADS  # each thread was answered 429 at least twice: the bound above is not slack
    assert alone > together


def test_coroutines_of_one_hook_wait_out_a_429_together(fake: LocalOpenRouter) -> None:
    key = fake.add_key("reader")
    hook = OpenRouterHook()

    async def main() -> None:
        await hook.aget_key(key.hash)
        fake.inject(RateLimit(WINDOW), method="GET", path="/keys/*")

        async def worker() -> None:
            for _ in range(CALLS):
                await hook.aget_key(key.hash)

        await asyncio.gather(*(worker() for _ in range(THREADS)))

    asyncio.run(main())
    assert 1 <= rate_limited(fake) <= THREADS + MOST_PAUSES


def test_a_retry_after_beyond_the_max_wait_fails_every_call_at_once_without_sending_more(
    fake: LocalOpenRouter,
) -> None:
    key = fake.add_key("reader")
    hook = OpenRouterHook()
    hook.get_key(key.hash)
    fake.inject(RateLimit(60.0, retry_after=3600), method="GET", path="/keys/*")
    errors = hammer([hook] * THREADS, key.hash)
    assert len(errors) == THREADS * CALLS
    assert all(isinstance(error, RateLimitedError) for error in errors)
    # Only requests already on their way when the first answer came were sent; the rest were refused here,
    # each saying how long the server asked to wait.
    assert rate_limited(fake) <= THREADS
    refused = [e for e in errors if "not sent" in str(e)]
    assert len(refused) >= THREADS * CALLS - THREADS
    assert all(e.retry_after is not None and e.retry_after > EXTRAS["max_retry_wait"] for e in refused)


def test_a_cancelled_probe_lets_another_request_go(fake: LocalOpenRouter) -> None:
    key = fake.add_key("reader")
    hook = OpenRouterHook()

    async def main() -> None:
        await hook.aget_key(key.hash)
        # The first request is answered 429 (the gate closes for 0.2 s); the next, the probe, hangs for 5 s.
        fake.inject(Status(429, retry_after=0.2), method="GET", path="/keys/*")
        fake.inject(Latency(5.0), method="GET", path="/keys/*")
        probe = asyncio.ensure_future(hook.aget_key(key.hash))
        await asyncio.sleep(1.0)
        assert hook._gate._probing  # its retry is the one request out
        probe.cancel()
        # Were the cancelled probe still counted as on its way, this one would wait for it.
        assert (await asyncio.wait_for(hook.aget_key(key.hash), timeout=3)).hash == key.hash
        assert not hook._gate._closed

    asyncio.run(main())


def test_a_sync_apply_under_a_rate_limit_converges_without_hammering(fake: LocalOpenRouter) -> None:
    count = 120
    vault: dict[str, str] = {}

    def deliver(created: Any, context: Any) -> None:
        vault[created.name] = created.hash

    fake.inject(RateLimit(WINDOW, retry_after=1), method="POST", path="/keys")
    op = SyncApiKeysOperator(
        task_id="sync",
        tenants=[{"name": f"t-{i:03d}", "limit": 1} for i in range(count)],
        name_prefix="t-",
        deliver_to_callable=deliver,
        max_workers=THREADS,
    )
    result = op.execute({})  # type: ignore[arg-type]
    limited = rate_limited(fake)
    assert 1 <= limited <= THREADS + MOST_PAUSES
    assert result["applied"]["rate_limit_pauses"] >= 1
    assert result["applied"]["counts"]["create"] == count
    keys = {k["name"]: k["hash"] for k in fake.keys()}  # noqa: SIM118
    assert sorted(keys) == [f"t-{i:03d}" for i in range(count)]  # one key per tenant, no claim left
    assert all(vault[name] == key_hash for name, key_hash in keys.items())  # each is the one delivered
