"""The check after a claim reads only the keys created since the walk that found the name free.

The API lists newest first and puts a new key on top, so that check stops at the first key that was on the
earlier walk's first page. Against the local OpenRouter (real HTTP) the tests count the list requests and what
is left on the account; the stopping rule itself is tested on lists made up here, including lists in the wrong
order, which the local OpenRouter (newest first, like the API) never serves.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

import pytest

from airflow_provider_openrouter._claims import recent
from airflow_provider_openrouter.models import ApiKey
from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter

OLD_KEYS = 450  # five pages


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    # The account's keys were created over time, ten every five seconds: a check reads on past the earlier
    # walk's newest key through the keys created within seconds of it (their stamps cannot be told apart),
    # and no further.
    for i in range(OLD_KEYS):
        openrouter_conn_env.add_key(name=f"other-{i:04d}")
        if i % 10 == 9:
            openrouter_conn_env.advance_clock(5)
    return openrouter_conn_env


def list_requests(fake: LocalOpenRouter) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith("/keys"))


def full_walk_pages(fake: LocalOpenRouter) -> int:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

    fake.clear_requests()
    list(OpenRouterHook().list_keys(include_disabled=True, include_expired=True))
    pages = list_requests(fake)
    fake.clear_requests()
    return pages


def test_a_create_checks_its_claim_on_the_first_page_only(fake: LocalOpenRouter) -> None:
    pages = full_walk_pages(fake)
    assert pages >= 5
    delivered: list[str] = []
    CreateApiKeyOperator(
        task_id="create", name="tenant-acme", deliver_to_callable=lambda key, ctx: delivered.append(key.hash)
    ).execute({})  # type: ignore[arg-type]
    # One whole walk to find the name, then one page: the claim, then the newest key that walk saw.
    assert list_requests(fake) == pages + 1
    [key] = [k for k in fake.keys() if k["name"] == "tenant-acme"]  # noqa: SIM118
    assert delivered == [key["hash"]]


def test_a_sync_checks_each_chunk_against_the_keys_created_since_its_plan(fake: LocalOpenRouter) -> None:
    pages = full_walk_pages(fake)
    seen: dict[str, str] = {}
    tenants = [{"name": f"t-{i:03d}", "limit": 1} for i in range(30)]
    result = SyncApiKeysOperator(
        task_id="sync",
        tenants=tenants,
        name_prefix="t-",
        deliver_to_callable=lambda key, ctx: seen.__setitem__(key.name, key.hash),
    ).execute({})  # type: ignore[arg-type]
    assert result["applied"]["counts"]["create"] == 30
    # The plan's walk, then one page holding the 30 claims and the newest key the plan saw.
    assert list_requests(fake) == pages + 1
    finals = {k["name"]: k["hash"] for k in fake.keys() if k["name"].startswith("t-")}  # noqa: SIM118
    assert finals == seen


def test_each_chunks_check_reads_only_the_keys_created_since_the_last_check(fake: LocalOpenRouter) -> None:
    from airflow_provider_openrouter._batch import CHUNK

    pages = full_walk_pages(fake)
    seen: dict[str, str] = {}
    count = 3 * CHUNK - 10
    result = SyncApiKeysOperator(
        task_id="sync",
        tenants=[{"name": f"t-{i:04d}", "limit": 1} for i in range(count)],
        name_prefix="t-",
        deliver_to_callable=lambda key, ctx: seen.__setitem__(key.name, key.hash),
    ).execute({})  # type: ignore[arg-type]
    assert result["applied"]["counts"]["create"] == count
    # Each of the three checks reads its chunk's claims, then the keys of the check before (or of the plan)
    # created within seconds of its newest key: here the earlier chunks, all made within the same seconds,
    # and none of the account's older keys. Checks reading to the end would take 6, 7 and 8 pages.
    assert list_requests(fake) - pages <= 2 + 3 + 5
    finals = {k["name"]: k["hash"] for k in fake.keys() if k["name"].startswith("t-")}  # noqa: SIM118
    assert finals == seen


def test_a_chunks_claims_are_made_before_the_chunk_before_is_renamed(fake: LocalOpenRouter) -> None:
    from airflow_provider_openrouter._batch import CHUNK

    seen: dict[str, str] = {}
    fake.clear_requests()
    result = SyncApiKeysOperator(
        task_id="sync",
        tenants=[{"name": f"t-{i:04d}", "limit": 1} for i in range(2 * CHUNK)],
        name_prefix="t-",
        deliver_to_callable=lambda key, ctx: seen.__setitem__(key.name, key.hash),
    ).execute({})  # type: ignore[arg-type]
    assert result["applied"]["counts"]["create"] == 2 * CHUNK
    served = fake.requests
    claims = [i for i, r in enumerate(served) if r.method == "POST" and r.path.endswith("/keys")]
    renames = [i for i, r in enumerate(served) if r.method == "PATCH"]
    checks = [i for i, r in enumerate(served) if r.method == "GET" and r.path.endswith("/keys")]
    assert len(claims) == len(renames) == 2 * CHUNK
    # The workers go on to the second chunk's claims once the first chunk's check has walked, rather than
    # waiting for its renames: those are queued behind the claims, and the second check walks beside them.
    first_check_done = max(i for i in checks if i < claims[CHUNK])
    assert claims[CHUNK] < renames[0]
    assert first_check_done < claims[CHUNK]
    finals = {k["name"]: k["hash"] for k in fake.keys() if k["name"].startswith("t-")}  # noqa: SIM118
    assert finals == seen


def test_the_check_reads_every_page_once_the_horizon_is_gone(fake: LocalOpenRouter) -> None:
    # The plan's first page is 100 keys of departed tenants, which the apply deletes before it creates.
    for i in range(100):
        fake.add_key(name=f"t-gone-{i:03d}")
    after_deletes = full_walk_pages(fake) - 1
    fake.clear_requests()
    seen: dict[str, str] = {}
    result = SyncApiKeysOperator(
        task_id="sync",
        tenants=[{"name": "t-new", "limit": 1}],
        name_prefix="t-",
        prune="delete",
        max_destructive=100,
        deliver_to_callable=lambda key, ctx: seen.__setitem__(key.name, key.hash),
    ).execute({})  # type: ignore[arg-type]
    assert result["applied"]["counts"]["create"] == 1
    assert result["applied"]["counts"]["delete"] == 100
    # The plan's walk, then a check that finds none of the plan's first page left and reads to the end.
    assert list_requests(fake) == (after_deletes + 1) + after_deletes
    finals = {k["name"]: k["hash"] for k in fake.keys() if k["name"].startswith("t-")}  # noqa: SIM118
    assert finals == seen


# ---------------------------------------------------------------------------- the stopping rule ---

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def key(name: str, seconds_ago: float | None) -> ApiKey:
    created = None if seconds_ago is None else NOW - dt.timedelta(seconds=seconds_ago)
    return ApiKey.from_api(
        {
            "hash": name.ljust(64, "0"),
            "name": name,
            "label": "sk-or-v1-abc...xyz",
            "disabled": False,
            "limit": None,
            "created_at": None if created is None else created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def names_read(keys: list[ApiKey], horizon: list[str], expect: list[str]) -> list[str]:
    since = frozenset(n.ljust(64, "0") for n in horizon)
    return [k.name for k in recent(iter(keys), since, [n.ljust(64, "0") for n in expect])]


def test_stops_at_the_first_key_of_the_earlier_walks_first_page() -> None:
    keys = [key("mine", 1), key("rival", 5), key("top2", 100), key("top3", 100), key("x", 300)]
    # The newest key of the earlier walk was deleted since: the next one of its page marks the end, after
    # the keys created within the slack of it (a key created later may share its stamp).
    assert names_read(keys, ["top1", "top2", "top3"], ["mine"]) == ["mine", "rival", "top2", "top3"]


def test_reads_on_until_every_expected_key_came_by() -> None:
    keys = [key("rival", 5), key("top1", 100), key("mine", 100), key("top2", 100), key("x", 500)]
    assert names_read(keys, ["top1", "top2"], ["mine"]) == ["rival", "top1", "mine", "top2"]


def test_a_list_out_of_order_is_read_to_the_end(caplog: pytest.LogCaptureFixture) -> None:
    keys = [key("mine", 1), key("a", 50), key("b", 10), key("top1", 200), key("x", 300)]
    with caplog.at_level(logging.WARNING):
        assert names_read(keys, ["top1"], ["mine"]) == ["mine", "a", "b", "top1", "x"]
    assert "did not come newest first" in caplog.text


def test_a_key_without_a_creation_time_makes_the_whole_list_read() -> None:
    keys = [key("mine", 1), key("odd", None), key("top1", 200), key("x", 300)]
    assert names_read(keys, ["top1"], ["mine"]) == ["mine", "odd", "top1", "x"]


def test_without_a_horizon_left_the_whole_list_is_read() -> None:
    keys = [key("mine", 1), key("a", 50), key("b", 60)]
    assert names_read(keys, ["gone"], ["mine"]) == ["mine", "a", "b"]
