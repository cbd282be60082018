"""The local OpenRouter's realism knobs, each seen working over real HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests
from openrouter import OpenRouter
from openrouter.utils.retries import BackoffStrategy, RetryConfig

from airflow_provider_openrouter.testing import (
    HARD,
    LocalOpenRouter,
    LocalOpenRouterControl,
    LocalOpenRouterControlError,
    Realism,
    clock_skew,
)
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

UTC = dt.timezone.utc
T0 = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
MICROSECOND_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")
NO_RETRIES = RetryConfig("backoff", BackoffStrategy(1, 1, 1.0, 1), retry_connection_errors=False)

pytestmark = pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")


class Api:
    """A keep-alive client of the fake's API with its management key."""

    def __init__(self, fake: LocalOpenRouter) -> None:
        self.base_url = fake.base_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {fake.management_key}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=30, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json()

    def create(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("POST", "/keys", 201, json={"name": name})["data"]
        return result

    def names(self, **query: str) -> list[str]:
        """The names of the first page of ``GET /keys``, in the order listed."""
        return [key["name"] for key in self.ok("GET", "/keys", params=query)["data"]]

    def walk(self) -> list[dict[str, Any]]:
        """Every page of ``GET /keys``, ``offset += 100`` until a short page."""
        keys: list[dict[str, Any]] = []
        while True:
            page = self.ok("GET", "/keys", params={"offset": str(len(keys))})["data"]
            keys.extend(page)
            if len(page) < 100:
                return keys


@pytest.fixture
def fake() -> Iterator[LocalOpenRouter]:
    with LocalOpenRouter() as started:
        started.set_clock(T0, frozen=True)
        yield started


@pytest.fixture
def api(fake: LocalOpenRouter) -> Iterator[Api]:
    client = Api(fake)
    yield client
    client.session.close()


def test_the_default_is_the_simple_fake() -> None:
    assert Realism() == Realism(
        list_order="insertion",
        shuffle_ties=False,
        commit_gap=0.0,
        list_lag=0.0,
        name_max_length=None,
        trim_stamp_zeros=False,
    )
    assert HARD.list_order == "created_at"
    assert HARD.shuffle_ties
    assert HARD.commit_gap > 0
    assert HARD.list_lag > 0
    assert HARD.name_max_length is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"list_order": "random"},
        {"commit_gap": -1.0},
        {"list_lag": float("inf")},
        {"name_max_length": 0},
        {"shuffle_ties": "yes"},
    ],
)
def test_realism_refuses_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Realism(**bad)


# -- stamps ----------------------------------------------------------------------------------------------


def test_stamps_carry_microseconds_in_the_documented_form(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_clock(T0.replace(microsecond=0), frozen=True)
    created = api.create("whole-second")
    # Six digits even when they are zeros: the form of OpenRouter's guide.
    assert created["created_at"] == "2031-05-06T07:08:09.000000+00:00"
    fake.set_clock(dt.datetime.now(UTC))
    live = api.create("live")
    assert MICROSECOND_STAMP.fullmatch(live["created_at"])
    renamed = api.ok("PATCH", f"/keys/{live['hash']}", json={"name": "renamed"})["data"]
    assert MICROSECOND_STAMP.fullmatch(renamed["updated_at"])
    assert {key["created_at"] for key in api.walk()} == {created["created_at"], live["created_at"]}


def test_trimmed_stamps_drop_the_zeros_of_their_fraction(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_realism(Realism(trim_stamp_zeros=True))
    fake.set_clock(T0.replace(microsecond=360000), frozen=True)
    assert api.create("a")["created_at"] == "2031-05-06T07:08:09.36+00:00"
    fake.set_clock(T0.replace(microsecond=0), frozen=True)
    key = api.create("b")
    assert key["created_at"] == "2031-05-06T07:08:09+00:00"
    assert api.ok("GET", f"/keys/{key['hash']}")["data"]["created_at"] == "2031-05-06T07:08:09+00:00"


# -- order -----------------------------------------------------------------------------------------------


def test_the_list_can_be_ordered_by_created_at(fake: LocalOpenRouter, api: Api) -> None:
    for name, seconds in (("ten", 10), ("five", 5), ("seven", 7)):
        fake.set_clock(T0 + dt.timedelta(seconds=seconds), frozen=True)
        api.create(name)
    assert api.names() == ["seven", "five", "ten"]  # insertion order, newest first
    fake.set_realism(Realism(list_order="created_at"))
    assert api.names() == ["ten", "seven", "five"]
    api.ok("PATCH", f"/keys/{api.ok('GET', '/keys')['data'][2]['hash']}", json={"name": "five-renamed"})
    assert api.names() == ["ten", "seven", "five-renamed"]


def _tied_orders(fake: LocalOpenRouter, api: Api, *, shuffle: bool) -> set[tuple[str, ...]]:
    fake.set_realism(Realism(list_order="created_at", shuffle_ties=shuffle))
    fake.set_clock(T0 - dt.timedelta(seconds=1), frozen=True)
    api.create("older")
    fake.set_clock(T0, frozen=True)
    tied = [api.create(f"tied-{i}")["created_at"] for i in range(8)]
    assert len(set(tied)) == 1
    fake.set_clock(T0 + dt.timedelta(seconds=1), frozen=True)
    api.create("newer")
    orders = set()
    for _ in range(25):
        names = api.names()
        assert names[0] == "newer"
        assert names[-1] == "older"
        assert sorted(names[1:-1]) == [f"tied-{i}" for i in range(8)]
        orders.add(tuple(names))
    return orders


def test_tied_stamps_keep_one_order_between_requests(fake: LocalOpenRouter, api: Api) -> None:
    assert len(_tied_orders(fake, api, shuffle=False)) == 1


def test_tied_stamps_can_come_in_a_new_order_on_every_request(fake: LocalOpenRouter, api: Api) -> None:
    # 25 lists of 8 tied keys all in one order would have a chance of (1/8!)^24.
    assert len(_tied_orders(fake, api, shuffle=True)) > 1


# -- list lag --------------------------------------------------------------------------------------------


def test_a_create_reaches_the_list_after_the_lag(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_realism(Realism(list_lag=5.0))
    key = api.create("lagging")
    assert api.names() == []
    assert fake.listed_hashes() == []
    # A read by hash sees the committed key at once.
    assert api.ok("GET", f"/keys/{key['hash']}")["data"]["name"] == "lagging"
    fake.advance_clock(5.0)
    assert api.names() == ["lagging"]


def test_a_rename_reaches_the_list_after_the_lag(fake: LocalOpenRouter, api: Api) -> None:
    key = api.create("before")
    fake.set_realism(Realism(list_lag=5.0))
    api.ok("PATCH", f"/keys/{key['hash']}", json={"name": "after"})
    assert api.ok("GET", f"/keys/{key['hash']}")["data"]["name"] == "after"
    assert api.names() == ["before"]
    fake.advance_clock(5.0)
    assert api.names() == ["after"]


def test_a_delete_reaches_the_list_after_the_lag(fake: LocalOpenRouter, api: Api) -> None:
    kept, gone = api.create("kept"), api.create("gone")
    fake.set_realism(Realism(list_lag=5.0))
    api.ok("DELETE", f"/keys/{gone['hash']}")
    assert api("GET", f"/keys/{gone['hash']}").status_code == 404
    assert api.names() == ["gone", "kept"]
    fake.advance_clock(5.0)
    assert api.names() == ["kept"]
    assert fake.listed_hashes() == [kept["hash"]]


def test_the_writes_to_one_key_reach_the_list_in_their_order(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_realism(Realism(list_lag=5.0))
    key = api.create("v0")
    for version in range(1, 6):
        api.ok("PATCH", f"/keys/{key['hash']}", json={"name": f"v{version}"})
    seen: list[str] = []
    for _ in range(51):
        names = api.names()
        if names and (not seen or seen[-1] != names[0]):
            seen.append(names[0])
        fake.advance_clock(0.1)
    # Each write draws its own lag, yet no later name is ever followed by an earlier one.
    assert seen == sorted(seen)
    assert seen[-1] == "v5"


def test_writes_to_different_keys_may_reach_the_list_out_of_order(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_realism(Realism(list_lag=5.0))
    made = [api.create(f"k{i:02d}")["hash"] for i in range(30)]
    first_seen: list[str] = []
    for _ in range(51):
        first_seen.extend(h for h in fake.listed_hashes() if h not in first_seen)
        fake.advance_clock(0.1)
    assert sorted(first_seen) == sorted(made)
    # 30 lags drawn independently arrive in creation order with a chance of 1/30!.
    assert first_seen != made


# -- commit gap ------------------------------------------------------------------------------------------


def test_a_create_is_stamped_when_it_arrives_and_listed_when_it_commits(
    fake: LocalOpenRouter, api: Api
) -> None:
    fake.set_realism(Realism(commit_gap=2.0, list_order="created_at"))
    answers: list[dict[str, Any]] = []
    creating = threading.Thread(target=lambda: answers.append(Api(fake).create("slow")))
    creating.start()
    try:
        while fake.awaiting_commit == 0:
            time.sleep(0.01)
        # Other requests go on meanwhile, and none of them sees the key.
        assert api.names() == []
        assert fake.keys() == []
        fake.advance_clock(1.0)
        assert fake.awaiting_commit == 1
        assert api.names() == []
        fake.advance_clock(1.0)
    finally:
        creating.join(timeout=60)
    [created] = answers
    # Its stamp is the moment it arrived, two seconds before it became visible.
    assert created["created_at"] == "2031-05-06T07:08:09.123456+00:00"
    assert fake.now == T0 + dt.timedelta(seconds=2)
    assert api.names() == ["slow"]


def test_a_slow_commit_appears_below_keys_a_reader_has_already_seen(fake: LocalOpenRouter, api: Api) -> None:
    fake.set_realism(Realism(commit_gap=2.0, list_order="created_at"))
    answers: list[dict[str, Any]] = []
    creating = threading.Thread(target=lambda: answers.append(Api(fake).create("stamped-first")))
    creating.start()
    try:
        while fake.awaiting_commit == 0:
            time.sleep(0.01)
        # The gap of a create is fixed when it arrives: the next one commits at once.
        fake.set_realism(Realism(list_order="created_at"))
        fake.advance_clock(1.0)
        api.create("stamped-second")
        assert api.names() == ["stamped-second"]
        fake.advance_clock(1.0)
    finally:
        creating.join(timeout=60)
    assert len(answers) == 1
    # A walk that stopped at the newest key it had seen would never read the first one.
    assert api.names() == ["stamped-second", "stamped-first"]


# -- name length -----------------------------------------------------------------------------------------


def test_a_name_over_the_limit_is_a_400(fake: LocalOpenRouter, api: Api) -> None:
    assert api.create("x" * 5000)["name"] == "x" * 5000  # no limit by default
    fake.set_realism(Realism(name_max_length=10))
    key = api.create("x" * 10)
    for response in (
        api("POST", "/keys", json={"name": "x" * 11}),
        api("PATCH", f"/keys/{key['hash']}", json={"name": "y" * 11}),
    ):
        assert response.status_code == 400
        assert response.json() == {
            "error": {"code": 400, "message": "name: must contain at most 10 characters", "metadata": None}
        }
    assert api.ok("GET", f"/keys/{key['hash']}")["data"]["name"] == "x" * 10
    assert len(fake.keys()) == 2


# -- many pages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["insertion", "created_at"])
def test_an_account_of_many_pages(fake: LocalOpenRouter, api: Api, order: str) -> None:
    fake.set_realism(Realism(list_order=order))  # type: ignore[arg-type]
    assert fake.seed_keys(12_000, prefix="filler-") == 12_000
    fake.advance_clock(1.0)
    newest = api.create("newest")
    keys = api.walk()
    assert len(keys) == 12_001
    assert keys[0]["hash"] == newest["hash"]
    names = [key["name"] for key in keys[1:]]
    assert names == [f"filler-{i:05d}" for i in reversed(range(12_000))]
    assert len({key["hash"] for key in keys}) == 12_001


def test_filler_keys_over_the_control_endpoints(fake: LocalOpenRouter, api: Api) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    assert control.seed_keys(250, prefix="bulk-") == 250
    assert len(api.walk()) == 250
    assert api.names()[0] == "bulk-249"
    with pytest.raises(LocalOpenRouterControlError, match="400"):
        control.seed_keys(-1)


# -- run-time changes and the other process --------------------------------------------------------------


def test_realism_changes_at_run_time_over_the_control_endpoints(fake: LocalOpenRouter, api: Api) -> None:
    control = LocalOpenRouterControl(fake.base_url)
    assert control.realism == Realism()
    control.set_realism(HARD)
    assert control.realism == HARD
    assert fake.realism == HARD
    assert api("POST", "/keys", json={"name": "x" * 256}).status_code == 400
    response = requests.put(
        f"{control.root_url}/_local/realism", json={"list_lag": -1}, timeout=10, proxies={}
    )
    assert response.status_code == 400
    response = requests.put(f"{control.root_url}/_local/realism", json={"lag": 1}, timeout=10, proxies={})
    assert response.status_code == 400
    assert control.realism == HARD


def test_a_fake_in_its_own_process_takes_its_realism() -> None:
    chosen = dataclasses.replace(HARD, list_lag=0.0, name_max_length=40)
    with LocalOpenRouterProcess(realism=chosen) as process:
        assert process.control.realism == chosen
    with LocalOpenRouterProcess() as process:
        assert process.control.realism == Realism()


def test_the_command_line_starts_hard() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_openrouter.testing", "--hard", "--list-lag", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        printed = {}
        while "control_url" not in printed:
            name, _, value = child.stdout.readline().strip().partition("=")
            printed[name] = value
        control = LocalOpenRouterControl(printed["base_url"])
        assert control.realism == dataclasses.replace(HARD, list_lag=0.0)
    finally:
        child.terminate()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


# -- the official SDK ------------------------------------------------------------------------------------


def test_the_sdk_creates_and_lists_against_the_hard_fake(fake: LocalOpenRouter) -> None:
    fake.set_realism(HARD)
    fake.set_clock(T0.replace(microsecond=360000), frozen=True)
    with OpenRouter(api_key=fake.management_key, server_url=fake.base_url, retry_config=NO_RETRIES) as sdk:
        creating = threading.Thread(target=lambda: sdk.api_keys.create(name="sdk-made"))
        creating.start()
        while fake.awaiting_commit == 0:
            time.sleep(0.01)
        fake.advance_clock(HARD.commit_gap)
        creating.join(timeout=60)
        assert sdk.api_keys.list().data == []
        fake.advance_clock(HARD.list_lag)
        [listed] = sdk.api_keys.list().data
    assert listed.name == "sdk-made"
    assert str(listed.created_at) in ("2031-05-06T07:08:09.36+00:00", "2031-05-06 07:08:09.360000+00:00")


# -- clock skew of a child process -----------------------------------------------------------------------

_REPORT_CLOCKS = """
import json, time
from airflow_provider_openrouter._provisioning import Provisioner
clock = Provisioner(object()).clock  # its default clock, as a task gets it
print(json.dumps({"time": time.time(), "time_ns": time.time_ns(), "provisioner": clock()}))
"""


@pytest.mark.parametrize("skew", [-3600.0, 90.5])
def test_a_child_process_runs_on_a_skewed_clock(skew: float) -> None:
    before = time.time()
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_CLOCKS],
        env={**_environ(), **clock_skew.child_env(skew)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    after = time.time()
    clocks = json.loads(result.stdout.strip().splitlines()[-1])
    for seconds in (clocks["time"], clocks["time_ns"] / 1e9, clocks["provisioner"]):
        assert before <= seconds - skew <= after


def test_a_child_without_the_variable_keeps_the_true_clock() -> None:
    before = time.time()
    env = {**_environ(), **clock_skew.child_env(-3600.0)}
    del env[clock_skew.ENV]
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_CLOCKS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    after = time.time()
    clocks = json.loads(result.stdout.strip().splitlines()[-1])
    assert before <= clocks["time"] <= after


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != clock_skew.ENV}
