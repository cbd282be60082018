"""The provisioning sequence where an OpenRouter harder than the documented one, or an unlucky timing, used to
break it: waiting out another try's claim, a batch whose check fails, the check's stopping rule, claims inside
their grace, claims renamed between a sync's plan and its apply, a list that trails its writes, the grace
against one call's budget, names shaped like claims, disabled claims, and timestamps with any fraction.

The sequence runs against the local OpenRouter over real HTTP. Where a test needs time to pass (leases of
minutes), the ``Provisioner`` gets a clock and a sleep of the test's: sleeping moves that clock, and a test
can act at a given sleep, as another task would meanwhile. The stopping rule of the check is tested on lists
made up here, in the orders an API sorting by ``created_at`` may serve.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter._batch import Request, provision_many
from airflow_provider_openrouter._claims import NameView, claim_name, recent, replaced_name
from airflow_provider_openrouter._claims import epoch_of as _epoch
from airflow_provider_openrouter._provisioning import Provisioner
from airflow_provider_openrouter.exceptions import (
    ApiKeyExistsError,
    ClaimHeldError,
    OpenRouterError,
    OpenRouterValidationError,
    PlaintextDeliveryError,
    ServerError,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.models import ApiKey
from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator, validate_tenants
from airflow_provider_openrouter.testing import LocalOpenRouter, Realism
from airflow_provider_openrouter.testing.faults import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_openrouter.models import CreatedApiKey

NAME = "tenant-acme"
LEASE = 120.0
GRACE = 60.0


class Clock:
    """A clock that moves only when the sequence sleeps; ``at_sleep[n]`` runs at the n-th sleep (from 1)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps = 0
        self.at_sleep: dict[int, Callable[[], None]] = {}

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        action = self.at_sleep.pop(self.sleeps, None)
        if action is not None:
            action()


class Task:
    """What a task hands the sequence: its create and its delivery, and what it delivered."""

    def __init__(self, hook: OpenRouterHook, *, after_create: Callable[[CreatedApiKey], None] | None = None):
        self.hook = hook
        self.delivered: list[str] = []
        self.after_create = after_create

    def create(self, provisional: str) -> CreatedApiKey:
        created = self.hook.create_key(provisional, mask=False)
        if self.after_create is not None:
            self.after_create(created)
        return created

    def deliver(self, created: CreatedApiKey) -> list[str]:
        self.delivered.append(created.hash)
        return ["the test"]


def provisioner(clock: Clock, **kwargs: Any) -> Provisioner:
    options: dict[str, Any] = {"lease": LEASE, "grace": GRACE, "call_budget": 1.0, **kwargs}
    return Provisioner(OpenRouterHook(), clock=clock, sleep=clock.sleep, rng=random.Random(7), **options)


def walks(fake: LocalOpenRouter) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith("/keys"))


REPLACED = re.compile(rf"{NAME} \[replaced \d+\]")


def name_of(fake: LocalOpenRouter, key_hash: str) -> str:
    [name] = [k["name"] for k in fake.keys() if k["hash"] == key_hash]  # noqa: SIM118
    return name


def names(fake: LocalOpenRouter) -> list[str]:
    return sorted(k["name"] for k in fake.keys())  # noqa: SIM118


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


# --------------------------------------------------------------------- E1: waiting out a live claim ---


def test_a_try_waits_out_a_live_claim_then_collects_it(fake: LocalOpenRouter) -> None:
    clock = Clock()
    until = int(clock.now) + 100  # a claim's name holds whole seconds
    rival = fake.add_key(name=claim_name(NAME, "aaaaaaaa00", until))  # a killed try's claim, still live
    task = Task(OpenRouterHook())
    fake.clear_requests()
    outcome = provisioner(clock).provision(NAME, "fail", task.create, task.deliver)
    assert outcome.action == "created"
    assert clock.now > until + GRACE
    assert not fake.has_key(rival.hash)
    assert names(fake) == [NAME]
    assert task.delivered == [outcome.key.hash]
    # The wait reads the claim by its hash: a look before, a look after, the check of the new claim.
    assert walks(fake) == 3
    assert sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith(rival.hash)) > 1


def test_a_claim_held_past_the_wait_raises_claim_held_error(fake: LocalOpenRouter) -> None:
    clock = Clock()
    started = clock.now
    rival = fake.add_key(name=claim_name(NAME, "aaaaaaaa00", clock.now + 1000))
    task = Task(OpenRouterHook())
    fake.clear_requests()
    with pytest.raises(ClaimHeldError) as raised:
        provisioner(clock).provision(NAME, "fail", task.create, task.deliver)
    assert raised.value.holders == [rival.hash]
    assert clock.now - started >= LEASE + GRACE
    assert names(fake) == [rival.name]
    assert task.delivered == []
    assert walks(fake) == 1


def test_a_claim_delivered_while_waiting_is_found_by_one_more_look(fake: LocalOpenRouter) -> None:
    clock = Clock()
    hook = OpenRouterHook()
    rival = fake.add_key(name=claim_name(NAME, "aaaaaaaa00", clock.now + 100))
    clock.at_sleep[3] = lambda: hook.update_key(rival.hash, name=NAME)  # its owner delivered and renamed it
    task = Task(hook)
    fake.clear_requests()
    with pytest.raises(ApiKeyExistsError):
        provisioner(clock).provision(NAME, "fail", task.create, task.deliver)
    assert names(fake) == [NAME]
    assert walks(fake) == 2


# ------------------------------------------------------------------ E2: a batch whose check fails ---


def test_a_batch_whose_check_walk_fails_withdraws_every_claim(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in local_openrouter.airflow_env(max_retries=0).items():
        monkeypatch.setenv(variable, value)
    task = Task(OpenRouterHook())
    requests = [
        Request(name=f"t-{i}", create=task.create, deliver=task.deliver, view=NameView(f"t-{i}"))
        for i in range(3)
    ]
    local_openrouter.inject(Status(500), method="GET", path="/keys", times=None)
    results = provision_many(Provisioner(OpenRouterHook(), lease=LEASE), requests)
    assert [type(result) for result in results] == [ServerError] * 3
    assert sum(1 for r in local_openrouter.requests if r.method == "POST") == 3  # the claims were made
    assert names(local_openrouter) == []
    assert task.delivered == []


# ------------------------------------------------------- E3, E4: where the check after a claim stops ---

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def key(name: str, seconds_ago: float) -> ApiKey:
    created = NOW - dt.timedelta(seconds=seconds_ago)
    return ApiKey.from_api(
        {
            "hash": name.ljust(64, "0"),
            "name": name,
            "label": "sk-or-v1-abc...xyz",
            "disabled": False,
            "limit": None,
            "created_at": created.isoformat(timespec="microseconds"),
        }
    )


def names_read(keys: list[ApiKey], horizon: list[str], expect: list[str]) -> list[str]:
    since = frozenset(n.ljust(64, "0") for n in horizon)
    return [k.name for k in recent(iter(keys), since, [n.ljust(64, "0") for n in expect])]


def test_the_check_reads_a_rival_tied_with_the_earlier_walks_newest_key() -> None:
    # Ordered by created_at, ties in any order: the rival's claim has the stamp of the newest key the
    # earlier walk saw, and is listed after it.
    keys = [key("mine", 0), key("top1", 1), key("rival", 1), key("top2", 30), key("x", 60)]
    assert "rival" in names_read(keys, ["top1", "top2"], ["mine"])


def test_the_check_reads_a_claim_stamped_before_the_earlier_walk_but_listed_after_it() -> None:
    # The rival's create arrived (and was stamped) a moment before the earlier walk began, but committed
    # only after that walk's first page was read; a key created in between sits above it.
    keys = [key("mine", 0.2), key("top1", 0.9), key("rival", 1.0), key("top2", 30), key("x", 60)]
    assert names_read(keys, ["top1", "top2"], ["mine"]) == ["mine", "top1", "rival"]


# -------------------------------------------------------------- E5: a rival claim inside its grace ---


def test_a_rival_claim_past_its_lease_but_inside_its_grace_is_ahead(fake: LocalOpenRouter) -> None:
    clock = Clock()
    hook = OpenRouterHook()
    # Delivered; its owner is renaming it. The walk before this try's claim did not see it (an older view).
    rival = fake.add_key(name=claim_name(NAME, "bbbbbbbb00", clock.now - 10))
    clock.at_sleep[1] = lambda: hook.update_key(rival.hash, name=NAME)
    task = Task(hook)
    with pytest.raises(ApiKeyExistsError):
        provisioner(clock).provision(NAME, "fail", task.create, task.deliver, view=NameView(NAME))
    assert [k["hash"] for k in fake.keys()] == [rival.hash]  # noqa: SIM118
    assert names(fake) == [NAME]
    assert task.delivered == []


# -------------------------------------------------- E6: a sync apply and a claim renamed since its plan ---


def test_a_sync_apply_keeps_a_claim_renamed_since_its_plan(fake: LocalOpenRouter) -> None:
    grace = Provisioner(OpenRouterHook(), lease=LEASE).grace
    # Another task's claim on a name under the prefix: its lease is over, its grace nearly.
    until = time.time() - grace + 3.0
    claim = fake.add_key(name=claim_name("t-other", "cccccccc00", until))
    seen: dict[str, str] = {}
    op = SyncApiKeysOperator(
        task_id="sync",
        tenants=[{"name": "t-a", "limit": 1}],
        name_prefix="t-",
        deliver_to_callable=lambda created, context: seen.__setitem__(created.name, created.hash),
    )
    tenants = validate_tenants(op.tenants, "t-")
    plan = op.make_plan(tenants)
    OpenRouterHook().update_key(claim.hash, name="t-other")  # its owner delivered it and renamed it
    while time.time() <= until + grace:  # the plan's claim is past lease and grace when applied
        time.sleep(0.1)
    op.apply(plan, tenants, {})  # type: ignore[arg-type]
    assert fake.has_key(claim.hash)
    assert names(fake) == ["t-a", "t-other"]
    assert list(seen) == ["t-a"]


# --------------------------------------------------------------------------- a list that trails ---


@pytest.fixture
def lagging(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalOpenRouter]:
    with LocalOpenRouter(realism=Realism(list_lag=1.0)) as fake:
        for variable, value in fake.airflow_env().items():
            monkeypatch.setenv(variable, value)
        yield fake


def test_a_try_waits_for_the_list_to_show_its_claim_instead_of_withdrawing(lagging: LocalOpenRouter) -> None:
    task = Task(OpenRouterHook())
    outcome = Provisioner(OpenRouterHook(), lease=LEASE).provision(NAME, "fail", task.create, task.deliver)
    assert outcome.action == "created"
    assert task.delivered == [outcome.key.hash]
    assert sum(1 for r in lagging.requests if r.method == "POST") == 1  # one claim, never withdrawn
    assert [k["name"] for k in lagging.keys()] == [NAME]  # noqa: SIM118


# ------------------------------------------------------------------ the grace and the call budget ---


def test_a_grace_shorter_than_one_call_is_refused(fake: LocalOpenRouter) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        Provisioner(OpenRouterHook(), lease=LEASE, grace=10.0, call_budget=300.0)
    assert raised.value.field == "grace"


def test_the_default_grace_covers_one_call_of_the_connection(fake: LocalOpenRouter) -> None:
    # The default connection: timeout 30 s, 3 retries, retry waits of up to 60 s.
    assert Provisioner(OpenRouterHook(), lease=LEASE).grace >= 30 * 4 + 60 * 3


def test_a_replace_takes_the_old_key_out_before_the_new_key_takes_the_name(
    fake: LocalOpenRouter,
) -> None:
    # Renaming the new key first left two keys under the name until the old one was deleted, and for good
    # when that delete failed or the try was killed in between.
    hook = OpenRouterHook()
    old = hook.create_key(NAME, mask=False)
    task = Task(hook)
    fake.clear_requests()
    outcome = provisioner(Clock()).provision(NAME, "replace", task.create, task.deliver)
    assert outcome.replaced == [old.hash]
    writes = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests if r.method in ("PATCH", "DELETE")]
    assert writes == [("PATCH", old.hash), ("PATCH", outcome.key.hash), ("DELETE", old.hash)]
    assert [k["hash"] for k in fake.keys()] == [outcome.key.hash]  # noqa: SIM118


def test_a_replace_whose_delete_of_the_old_key_fails_leaves_one_key_named(
    fake: LocalOpenRouter,
) -> None:
    hook = OpenRouterHook()
    old = hook.create_key(NAME, mask=False)
    task = Task(hook)
    fake.inject(Status(400), method="DELETE", path=f"/keys/{old.hash}", times=None)
    with pytest.raises(OpenRouterError, match=r"deleting the old key .* failed.*next run of this name"):
        provisioner(Clock()).provision(NAME, "replace", task.create, task.deliver)
    [new] = task.delivered
    assert name_of(fake, new) == NAME
    assert REPLACED.fullmatch(name_of(fake, old.hash))
    fake.clear_faults()
    # The next run of the name, whatever its if_exists, deletes it.
    outcome = provisioner(Clock()).provision(NAME, "reuse", task.create, task.deliver)
    assert (outcome.action, outcome.key.hash, outcome.collected) == ("reused", new, [old.hash])
    assert names(fake) == [NAME]


def test_a_replace_whose_rename_fails_is_finished_by_its_clean_up_with_one_key(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    old = hook.create_key(NAME, mask=False)
    task = Task(hook)
    made = provisioner(Clock())
    # The old key's rename out of the name passes; the new key's rename to the name fails once.
    fake.inject(Status(400), method="PATCH", path=re.compile(rf"/keys/(?!{old.hash})\w+"), times=1)
    with pytest.raises(OpenRouterError):
        made.provision(NAME, "replace", task.create, task.deliver)
    [new] = task.delivered
    assert name_of(fake, new) == NAME
    assert REPLACED.fullmatch(name_of(fake, old.hash))


def test_a_replace_stopped_between_its_renames_gives_the_old_key_its_name_back(fake: LocalOpenRouter) -> None:
    # Killed after taking the old key out and before its new key took the name: the name must not look free
    # to an if_exists="fail" run, which would create a second key for it.
    clock = Clock()
    old = fake.add_key(name=replaced_name(NAME, clock.now - 30))
    until = int(clock.now) - 10  # the killed try's delivered claim, inside its grace
    orphan = fake.add_key(name=claim_name(NAME, "aaaaaaaa00", until))
    task = Task(OpenRouterHook())
    with pytest.raises(ApiKeyExistsError):
        provisioner(clock).provision(NAME, "fail", task.create, task.deliver)
    assert clock.now > until + GRACE  # the claim could still have been renamed until then
    assert not fake.has_key(orphan.hash)
    assert [k["hash"] for k in fake.keys() if k["name"] == NAME] == [old.hash]  # noqa: SIM118
    assert task.delivered == []


def test_a_replace_whose_old_key_cannot_be_taken_out_withdraws_the_new_key(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    old = hook.create_key(NAME, mask=False)
    task = Task(hook)
    fake.inject(Status(400), method="PATCH", path=f"/keys/{old.hash}", times=None)
    with pytest.raises(PlaintextDeliveryError, match="taking the old key out of the name failed") as raised:
        provisioner(Clock()).provision(NAME, "replace", task.create, task.deliver)
    assert raised.value.key_deleted
    assert [k["hash"] for k in fake.keys()] == [old.hash]  # noqa: SIM118
    assert names(fake) == [NAME]


# ------------------------------------------------------------------------- names and disabled claims ---


CLAIM_SHAPED = claim_name(NAME, "0123456789", 1767225600)


def test_create_refuses_a_name_shaped_like_a_claim(fake: LocalOpenRouter) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        CreateApiKeyOperator(task_id="create", name=CLAIM_SHAPED, deliver_to_callable=lambda k, c: None)
    assert raised.value.field == "name"


def test_create_refuses_a_rendered_name_shaped_like_a_claim_before_any_request(fake: LocalOpenRouter) -> None:
    op = CreateApiKeyOperator(
        task_id="create", name="{{ params.name }}", deliver_to_callable=lambda k, c: None
    )
    op.name = CLAIM_SHAPED  # as rendered
    fake.clear_requests()
    with pytest.raises(OpenRouterValidationError) as raised:
        op.execute({})  # type: ignore[arg-type]
    assert raised.value.field == "name"
    assert fake.requests == []


@pytest.mark.parametrize("name", [f"{NAME} [replaced 1767225600]", f"{NAME} [replaced soon]"])
def test_create_and_sync_refuse_a_name_shaped_like_a_replaced_key(name: str) -> None:
    with pytest.raises(OpenRouterValidationError, match=r"must not contain '\[replaced '") as raised:
        CreateApiKeyOperator(task_id="create", name=name, deliver_to_callable=lambda k, c: None)
    assert raised.value.field == "name"
    with pytest.raises(OpenRouterValidationError, match=r"tenants\[0\].*name: must not contain '\[replaced"):
        validate_tenants([{"name": name}], "tenant-")


def test_sync_refuses_a_row_named_like_a_claim() -> None:
    with pytest.raises(OpenRouterValidationError, match=r"tenants\[0\].*\.name: must not contain '\[pending"):
        validate_tenants([{"name": claim_name("t-a", "0123456789", 1767225600)}], "t-")


def test_a_claim_disabled_before_delivery_is_never_delivered(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    task = Task(hook, after_create=lambda created: hook.update_key(created.hash, disabled=True))
    with pytest.raises(OpenRouterError, match="disabled"):
        provisioner(Clock()).provision(NAME, "fail", task.create, task.deliver)
    assert task.delivered == []
    assert names(fake) == []


# --------------------------------------------------------------------------------------- timestamps ---


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2025-02-19T20:52:27.363244+00:00", 1739998347.363244),
        ("2025-02-19T20:52:27.36324+00:00", 1739998347.36324),
        ("2025-02-19T20:52:27.3+00:00", 1739998347.3),
        ("2025-02-19T20:52:27+00:00", 1739998347.0),
        ("2025-02-19T20:52:27Z", 1739998347.0),
        ("2025-02-19T21:52:27.5+01:00", 1739998347.5),
    ],
)
def test_timestamps_with_any_fraction_are_read(stamp: str, epoch: float) -> None:
    assert _epoch(stamp) == pytest.approx(epoch, abs=1e-6)
