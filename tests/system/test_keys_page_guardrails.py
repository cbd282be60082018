"""Guardrails on the "OpenRouter keys" page: each key's guardrail, the budget that stops it first, and the
guardrail filter.

The first tests load the page's snapshot over real HTTP from a local OpenRouter (no API server), and check
what each row says against figures worked out here by hand, and how many requests a load makes. The last
runs the page in Airflow's API server and opens it in headless Chromium, leaving screenshots in
``artifacts/screenshots/keys_page_guardrails/``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.plugins._keys_app import load_snapshot
from airflow_provider_openrouter.plugins._keys_budget import (
    GuardrailCell,
    Layer,
    effective_budget,
    guardrail_layer,
)
from airflow_provider_openrouter.plugins._keys_view import Query, Snapshot, key_row, select
from airflow_provider_openrouter.testing import Status
from airflow_provider_openrouter.testing._guardrails import guardrails_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import FrameLocator, Page

    from airflow_provider_openrouter.guardrails import GuardrailSettings
    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance
    from tests.ui_support import ApiServer

CONN_ID = "openrouter_guarded"
FILLER = 250  # keys without a guardrail, so that every walk takes several pages


class Expect(NamedTuple):
    """What a row must say: its guardrail's name (or None), who stops it first and what is left."""

    guardrail: str | None
    stopper: str
    low: float | None
    high: float | None
    window: str


# Each key: own limit and reset, its guardrail, credit spend today / this week / this month, BYOK spend
# today, and what the page must conclude (worked out by hand from the guardrails in _seed).
CASES: dict[str, tuple[float | None, str | None, str | None, tuple[float, float, float], float, Expect]] = {
    # $1 a day from the guardrail is spent before $10 a month of its own: 1 - 0.40 = 0.60 left today.
    "acme-basic": (10.0, "monthly", "tier-basic", (0.40, 0.40, 0.40), 0.0,
                   Expect("tier-basic", "guardrail", 0.60, 0.60, "today")),
    # Its own $0.50 a day goes first: 0.50 - 0.30 = 0.20, the guardrail would leave 0.70.
    "globex-basic": (0.50, "daily", "tier-basic", (0.30, 0.30, 0.30), 0.0,
                     Expect("tier-basic", "key", 0.20, 0.20, "today")),
    # No limit of its own: $30 a month from the guardrail, 12 spent this month.
    "initech-pro": (None, None, "tier-pro", (1.0, 5.0, 12.0), 0.0,
                    Expect("tier-pro", "guardrail", 18.0, 18.0, "this month")),
    # $30 a month on both layers, 10 spent: a tie.
    "umbrella-pro": (30.0, "monthly", "tier-pro", (2.0, 4.0, 10.0), 0.0,
                     Expect("tier-pro", "both", 20.0, 20.0, "this month")),
    # Its guardrail sets models only: its own lifetime limit is all there is (25 - (5 + 7 of earlier
    # months, see _seed)).
    "hooli-models": (25.0, None, "models-only", (5.0, 5.0, 5.0), 0.0,
                     Expect("models-only", "key", 13.0, 13.0, "lifetime")),
    # Nothing limits it.
    "stark-free": (None, None, None, (3.0, 3.0, 3.0), 0.0, Expect(None, "none", None, None, "")),
    # Past its guardrail's daily budget: 1 - 1.25.
    "wonka-spent": (100.0, "monthly", "tier-basic", (1.25, 1.25, 1.25), 0.0,
                    Expect("tier-basic", "guardrail", -0.25, -0.25, "today")),
    # Its guardrail counts BYOK: 2 - (0.50 + 1.00); its own limit does not: 50 - 0.50.
    "tyrell-byok": (50.0, "daily", "tier-byok", (0.50, 0.50, 0.50), 1.0,
                    Expect("tier-byok", "guardrail", 0.50, 0.50, "today")),
    # Assigned this week: spend before the assignment may not count, so the guardrail has at least
    # 10 - 4 left and its own limit 50 - 4: either may stop it first.
    "wayne-late": (50.0, "monthly", "tier-late", (1.0, 4.0, 4.0), 0.0,
                   Expect("tier-late", "either", 6.0, 46.0, "")),
}  # fmt: skip
GUARDRAILS: dict[str, GuardrailSettings] = {
    "tier-basic": {"limit_usd": 1.0, "reset_interval": "daily", "allowed_models": ["openai/gpt-4o-mini"]},
    "tier-pro": {"limit_usd": 30.0, "reset_interval": "monthly"},
    "models-only": {"allowed_models": ["openai/gpt-4o-mini", "anthropic/claude-3.5-haiku"]},
    "tier-byok": {"limit_usd": 2.0, "reset_interval": "daily", "include_byok_in_budgets": True},
}
LATE: dict[str, GuardrailSettings] = {"tier-late": {"limit_usd": 10.0, "reset_interval": "weekly"}}


def _hook(fake: LocalOpenRouter) -> OpenRouterHook:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fake.airflow_env(CONN_ID).items():
            patch.setenv(name, value)
        hook = OpenRouterHook(openrouter_conn_id=CONN_ID)
        hook.get_credits()  # reads the connection while the environment holds it
    return hook


def _seed(fake: LocalOpenRouter) -> None:
    """The keys of CASES, plus filler keys, with their guardrails assigned through the API.

    All but ``tier-late`` are assigned 40 days back on the fake's clock, before every current window, so that
    their spend this window is known; ``tier-late`` is assigned now.
    """
    now = fake.now
    fake.set_clock(now - dt.timedelta(days=40))
    hook = _hook(fake)
    try:
        made = {name: hook.create_guardrail(name, **settings) for name, settings in GUARDRAILS.items()}
        hashes = {}
        for name, (limit, reset, _, _, _, _) in CASES.items():
            hashes[name] = fake.add_key(name, limit=limit, limit_reset=reset).hash
        for i in range(FILLER):
            fake.add_key(f"filler-{i:03d}", limit=(None, 100.0)[i % 2], limit_reset=(None, "daily")[i % 2])
        for guardrail in made.values():
            held = [hashes[name] for name, case in CASES.items() if case[2] == guardrail.name]
            if held:
                hook.assign_keys_to_guardrail(guardrail.id, held)
        fake.set_clock(now)
        late = {name: hook.create_guardrail(name, **settings) for name, settings in LATE.items()}
        for name, case in CASES.items():
            if case[2] in late:
                hook.assign_keys_to_guardrail(late[case[2]].id, [hashes[name]])
    finally:
        hook.close()
    for name, (_, _, _, (daily, weekly, monthly), byok, _) in CASES.items():
        fake.set_usage(
            hashes[name],
            usage=monthly + 7.0,  # earlier months' spend, which no window counts
            usage_daily=daily,
            usage_weekly=weekly,
            usage_monthly=monthly,
            byok_usage=byok,
            byok_usage_daily=byok,
            byok_usage_weekly=byok,
            byok_usage_monthly=byok,
        )


@pytest.fixture
def seeded(local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> LocalOpenRouter:
    _seed(local_openrouter)
    for name, value in local_openrouter.airflow_env(CONN_ID).items():
        monkeypatch.setenv(name, value)
    local_openrouter.clear_requests()
    return local_openrouter


def _rows(snapshot: Snapshot, **params: Any) -> dict[str, Any]:
    """Every row ``params`` select, by name, through all the pages."""
    found: dict[str, Any] = {}
    page = 1
    while True:
        selection = select(snapshot, Query.parse(size=200, page=page, **params))
        found.update((row.name, row) for row in selection.rows)
        if page >= selection.pages:
            return found
        page += 1


def _check(row: Any, expect: Expect) -> None:
    assert (row.guardrail.name if row.guardrail else None) == expect.guardrail, row.name
    effective = row.effective
    assert effective.stopper == expect.stopper, (row.name, effective)
    for got, want in ((effective.low, expect.low), (effective.high, expect.high)):
        assert got == (None if want is None else pytest.approx(want)), (row.name, effective)
    assert effective.window == expect.window, (row.name, effective)


# ------------------------------------------------------------------------------------ the view logic ---


def test_each_key_shows_its_guardrail_and_the_budget_that_stops_it_first(seeded: LocalOpenRouter) -> None:
    snapshot = load_snapshot(CONN_ID)
    assert snapshot.guardrails_problem is None
    rows = _rows(snapshot)
    for name, case in CASES.items():
        _check(rows[name], case[5])
    basic = rows["acme-basic"].guardrail
    assert (basic.limit_usd, basic.reset_interval, basic.budget) == (1.0, "daily", "$1.00 daily")
    assert rows["hooli-models"].guardrail.budget == "no budget"
    assert rows["wonka-spent"].effective.left == "-$0.25"
    late = rows["wayne-late"].effective
    assert late.left == "$6.00 to $46.00"
    assert "spend before that may not count" in late.note
    # Keys without a guardrail keep their own limit as their budget.
    filler = _rows(snapshot, search="filler-001")["filler-001"]
    assert filler.guardrail is None
    assert (filler.effective.stopper, filler.effective.low, filler.effective.window) == (
        "key",
        100.0,
        "today",
    )
    assert snapshot.guardrail_counts == {
        "models-only": 1,
        "tier-basic": 3,
        "tier-byok": 1,
        "tier-late": 1,
        "tier-pro": 2,
    }
    # The JSON endpoint's rows say the same, JSON-safe.
    data = json.loads(json.dumps(rows["wayne-late"].to_dict()))
    assert data["guardrail"]["name"] == "tier-late"
    assert data["guardrail"]["assigned_at"].endswith("Z")
    assert data["effective"] == {
        "stopper": "either",
        "low": pytest.approx(6.0),
        "high": pytest.approx(46.0),
        "exact": False,
        "window": "",
        "note": late.note,
    }


def test_a_load_walks_guardrails_and_assignments_once_whatever_the_keys(seeded: LocalOpenRouter) -> None:
    load_snapshot(CONN_ID)
    paths = [request.path.removeprefix("/api/v1") for request in seeded.requests]
    keys = len(seeded.keys())
    assert paths.count("/credits") == 1
    # The key walk pages as before: 100 keys a page, and a last page that comes back short or empty.
    assert keys // 100 + 1 <= paths.count("/keys") <= keys // 100 + 8
    # One page each for a handful of guardrails and of assignments, not a request per key or guardrail.
    assert paths.count("/guardrails") == 1
    assert paths.count("/guardrails/assignments/keys") == 1
    assert not [path for path in paths if re.fullmatch(r"/guardrails/[0-9a-f-]{36}.*", path)]
    print(f"\nrequests for one load of {keys} keys: {len(paths)} ({', '.join(sorted(set(paths)))})")


def test_the_filter_keeps_the_keys_of_one_guardrail(seeded: LocalOpenRouter) -> None:
    snapshot = load_snapshot(CONN_ID)
    held = {name for name, case in CASES.items() if case[2] == "tier-basic"}
    assert set(_rows(snapshot, guardrail="tier-basic")) == held
    assert set(_rows(snapshot, guardrail=" tier-basic ")) == held  # surrounding blanks are dropped
    assert set(_rows(snapshot, guardrail="tier-basic", search="wonka")) == {"wonka-spent"}
    # Near the limit counts a guardrail's budget too, where its spend is known.
    assert set(_rows(snapshot, show="near_limit")) == {"wonka-spent"}
    assert set(_rows(snapshot, guardrail="tier-basic", show="near_limit")) == {"wonka-spent"}
    assert snapshot.counts["near_limit"] == 1
    assert _rows(snapshot, guardrail="Tier-Basic") == {}  # a name, exactly
    assert _rows(snapshot, guardrail="no-such-guardrail") == {}
    # Sorted by what the effective budget leaves: least first, keys with no budget last.
    ordered = select(snapshot, Query.parse(sort="effective", size=200)).rows
    amounts = [row.effective_left for row in ordered if row.effective_left is not None]
    assert amounts == sorted(amounts)
    assert ordered[0].name == "wonka-spent"
    assert ordered[-1].effective.stopper == "none"
    assert Query.parse(guardrail="tier-pro").to_params(page=2) == {"guardrail": "tier-pro", "page": "2"}


@pytest.mark.parametrize(
    ("value", "says"),
    [("x" * 201, "at most 200 characters"), ("tier\nbasic", "control characters")],
)
def test_a_bad_guardrail_filter_names_its_parameter(value: str, says: str) -> None:
    with pytest.raises(OpenRouterValidationError) as raised:
        Query.parse(guardrail=value)
    assert raised.value.field == "guardrail"
    assert says in str(raised.value)


def test_a_guardrail_outside_the_listed_workspace_is_fetched_by_id(seeded: LocalOpenRouter) -> None:
    store = guardrails_of(seeded._state)
    [pro] = [g for g in store.in_workspace(None) if g["name"] == "tier-pro"]
    # A guardrail older than workspaces is not in the default workspace's list.
    store._guardrails[pro["id"]]["workspace_id"] = None
    snapshot = load_snapshot(CONN_ID)
    rows = _rows(snapshot, search="-pro")
    _check(rows["initech-pro"], CASES["initech-pro"][5])
    paths = [request.path.removeprefix("/api/v1") for request in seeded.requests]
    assert paths.count(f"/guardrails/{pro['id']}") == 1


def test_refused_guardrails_leave_the_keys_shown(seeded: LocalOpenRouter) -> None:
    seeded.inject(Status(403, message="Forbidden"), path="/guardrails/*", times=None)
    snapshot = load_snapshot(CONN_ID)
    assert snapshot.guardrails_problem == "OpenRouter would not show the guardrails (403: Forbidden)"
    rows = _rows(snapshot)
    assert all(row.guardrail is None for row in rows.values())
    # Without its guardrail, a key's own limit is the only budget the page can see.
    assert rows["acme-basic"].effective.stopper == "key"
    assert len(snapshot.rows) == len(CASES) + FILLER


@pytest.mark.parametrize(
    ("layers", "stopper", "left", "note"),
    [
        ([], "none", "unknown", ""),
        ([Layer("key", 5.0, "today", 2.0, True)], "key", "$2.00", ""),
        # A budget whose window OpenRouter reports no usage for: what is left is capped by the own limit.
        (
            [Layer("key", 5.0, "today", 2.0, True), Layer("guardrail", 9.0, "", None, False, "no window")],
            "either",
            "at most $2.00",
            "no window",
        ),
        ([Layer("guardrail", None, "", None, False, "unreadable")], "guardrail", "unknown", "unreadable"),
        # Only a lower bound, and no other layer: at least that much, at most the whole budget.
        ([Layer("guardrail", 10.0, "this week", 6.0, False, "late")], "guardrail", "$6.00 to $10.00", "late"),
        # The lower bound is no less than the own limit's exact amount: the own limit goes first.
        (
            [
                Layer("key", 5.0, "today", 2.0, True),
                Layer("guardrail", 10.0, "this week", 6.0, False, "late"),
            ],
            "key",
            "$2.00",
            "",
        ),
    ],
)
def test_the_effective_budget_rule(layers: list[Layer], stopper: str, left: str, note: str) -> None:
    effective = effective_budget(layers)
    assert (effective.stopper, effective.left, effective.note) == (stopper, left, note)


def test_a_budget_without_a_known_window_is_not_guessed(seeded: LocalOpenRouter) -> None:
    snapshot = load_snapshot(CONN_ID)
    key = next(k for k in OpenRouterHook(openrouter_conn_id=CONN_ID).list_keys() if k.name == "acme-basic")
    cell = GuardrailCell("id", "odd", 1.0, "hourly", False, snapshot.fetched_at - dt.timedelta(days=90))
    layer = guardrail_layer(key, cell, snapshot.fetched_at)
    assert layer is not None
    assert (layer.remaining, layer.window) == (None, "")
    assert "no usage is reported for its window (hourly)" in layer.note
    row = key_row(key, snapshot.fetched_at, cell)
    assert (row.effective.stopper, row.effective.left) == ("either", "at most $9.60")
    assert row.guardrail_used is None


# ------------------------------------------------------------------------------------------ browser ---


@pytest.fixture(scope="module")
def browser_fake() -> Iterator[LocalOpenRouter]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        _seed(fake)
        fake.total_credits = 500.0
        yield fake


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> AirflowInstance:
    from tests.airflow_runner import make_airflow_instance

    base = tmp_path_factory.mktemp("keys-page-guardrails")
    dags = base / "dags"
    dags.mkdir()
    return make_airflow_instance(base, dags)


@pytest.fixture(scope="module")
def server(home: AirflowInstance, browser_fake: LocalOpenRouter) -> Iterator[ApiServer]:
    from tests.ui_support import ApiServer

    server = ApiServer(home)
    server.start()
    try:
        status, body = server.api(
            "POST",
            "/api/v2/connections",
            {
                "connection_id": CONN_ID,
                "conn_type": "openrouter",
                "host": browser_fake.base_url,
                "password": browser_fake.management_key,
            },
        )
        assert status == 201, body
        yield server
    finally:
        server.stop()


@pytest.mark.airflow_db
def test_the_json_answer_through_the_api_server(server: ApiServer) -> None:
    base = f"/openrouter/api/connections/{CONN_ID}/keys"
    status, body = server.api("GET", f"{base}?guardrail=tier-pro&sort=effective")
    assert status == 200, body
    assert body["guardrails_problem"] is None
    assert body["guardrail_counts"]["tier-pro"] == 2
    assert [key["name"] for key in body["keys"]] == ["initech-pro", "umbrella-pro"]
    initech = body["keys"][0]
    assert (initech["guardrail"]["limit_usd"], initech["guardrail"]["reset_interval"]) == (30.0, "monthly")
    assert initech["effective"]["stopper"] == "guardrail"
    assert initech["effective"]["low"] == pytest.approx(18.0)
    status, body = server.api("GET", f"{base}?guardrail=tier%01pro")
    assert status == 400
    assert body["detail"]["field"] == "guardrail"


def _frame(page: Page) -> FrameLocator:
    return page.frame_locator("iframe[title='OpenRouter keys']")


def _cells(frame: FrameLocator, name: str) -> tuple[str, str, str]:
    """The guardrail cell, the effective budget's stopper attribute and its text, of the key ``name``."""
    row = frame.locator(f"tbody tr:has(.name:text-is('{name}'))")
    effective = row.locator("td.effective")
    return (
        row.locator("td.guardrail").inner_text(),
        str(effective.get_attribute("data-stopper")),
        (effective.inner_text()),
    )


@pytest.mark.browser
@pytest.mark.airflow_db
def test_browser_guardrail_column_effective_budget_and_filter(
    server: ApiServer, browser_fake: LocalOpenRouter
) -> None:
    from tests.system.test_keys_page import PAGE_VIEWPORT, TIMEOUT_MS, _assert_no_secret
    from tests.ui_support import SCREENSHOTS, Screenshots, chromium

    shots = Screenshots(SCREENSHOTS / "keys_page_guardrails")
    with chromium() as browser:
        context = browser.new_context(viewport=PAGE_VIEWPORT, base_url=server.url)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        # Signed in as the login page would (Airflow 3.1's UI does not sign a visitor in by itself).
        context.add_cookies([{"name": "_token", "value": server.token(), "url": server.url}])
        page = context.new_page()
        page.goto("/plugin/openrouter-keys")
        frame = _frame(page)
        frame.locator("table tbody tr").first.wait_for()
        # Least left first: the keys of CASES, then filler keys with $100 a day, then keys with no budget.
        frame.get_by_role("link", name="Effective budget").click()
        frame.locator("th.sorted", has_text="Effective budget").wait_for()
        headers = frame.locator("thead th").all_inner_texts()
        assert [h for h in headers if h.startswith(("GUARDRAIL", "EFFECTIVE"))] == [
            "GUARDRAIL",
            "EFFECTIVE BUDGET ▲",
        ], headers

        guardrail, stopper, effective = _cells(frame, "acme-basic")
        assert guardrail.split("\n") == ["tier-basic", "$1.00 daily"]
        assert stopper == "guardrail"
        assert "Guardrail" in effective
        assert "$0.60 left today" in effective
        guardrail, stopper, effective = _cells(frame, "globex-basic")
        assert (stopper, "$0.20 left today" in effective) == ("key", True)
        guardrail, stopper, effective = _cells(frame, "wayne-late")
        assert stopper == "either"
        assert "$6.00 to $46.00 left" in effective
        assert "spend before that may not count" in effective
        shots.take(page, "guardrails: each key's guardrail and the budget that stops it first")
        _assert_no_secret(browser_fake, frame.locator("html").inner_html(), "the page")

        # A key without a guardrail: the guardrail column says so, its own limit is its budget.
        frame.get_by_role("searchbox", name="Search by name").fill("filler-001")
        frame.get_by_role("button", name="Search").click()
        frame.get_by_text("of 1 keys").wait_for()
        guardrail, stopper, effective = _cells(frame, "filler-001")
        assert (guardrail, stopper) == ("none", "key")
        assert "Own limit" in effective
        assert "$100.00 left today" in effective

        # Filter by guardrail, from the drop-down (the search is cleared first).
        frame.get_by_role("link", name="Clear").click()
        frame.get_by_text("of 259 keys").wait_for()
        frame.locator("select#guardrail").select_option("tier-basic")
        frame.get_by_text("of 3 keys").wait_for()
        names = sorted(frame.locator("tbody .name").all_inner_texts())
        assert names == ["acme-basic", "globex-basic", "wonka-spent"]
        assert "guardrail=tier-basic" in frame.locator("a[rel=next]").get_attribute("href")  # type: ignore[operator]
        path = shots.take(page, "guardrails: filtered to the keys of tier-basic")
        print(f"\nscreenshot: {path}")

        # The guardrail's name in a row filters too.
        frame.locator("select#guardrail").select_option("")
        frame.get_by_text("of 259 keys").wait_for()
        frame.get_by_role("link", name="tier-pro").first.click()
        frame.get_by_text("of 2 keys").wait_for()
        assert sorted(frame.locator("tbody .name").all_inner_texts()) == ["initech-pro", "umbrella-pro"]
        _, stopper, effective = _cells(frame, "umbrella-pro")
        assert stopper == "both"
        assert "$20.00 left this month" in effective

        # A bad filter is refused, naming the parameter.
        page.goto(f"/openrouter/connections/{CONN_ID}?guardrail={'x' * 201}")
        alert = page.get_by_role("alert")
        assert "guardrail" in alert.inner_text()
        assert "200 characters" in alert.inner_text()
        context.close()
    for taken in shots.taken:
        print(f"screenshot: {taken}")
