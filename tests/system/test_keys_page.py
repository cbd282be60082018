"""The "OpenRouter keys" page, against a real API server with the simple auth manager and real users.

One Airflow home for the module, served by ``airflow api-server`` with four users (admin, op, user,
viewer: the simple auth manager lets Op and Admin read connections, User and Viewer not). A local
OpenRouter holds a few hundred keys at varied usage; other connections point at a wrong key, at nothing, and
at a local OpenRouter that answers every request with 429. Requests without a session, with a session that
may not read the connection, and with one that may are made directly; then headless Chromium walks the
page inside Airflow's UI and leaves screenshots in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from tests.airflow_runner import make_airflow_instance
from tests.ui_support import ApiServer, Screenshots, chromium, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext, FrameLocator, Page

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

pytestmark = [pytest.mark.browser, pytest.mark.airflow_db]

CONN_ID = "openrouter_default"
WRONG_KEY_CONN = "openrouter_wrong_key"
DOWN_CONN = "openrouter_down"
LIMITED_CONN = "openrouter_rate_limited"
WRONG_KEY = "sk-or-v1-" + "7" * 64
PASSWORDS = {"admin": "admin-pw", "ops": "ops-pw", "analyst": "analyst-pw", "viewer": "viewer-pw"}
USERS = "admin:admin,ops:op,analyst:user,viewer:viewer"
KEYS = 300
COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "soylent")
STAGES = ("prod", "staging", "batch", "eval", "dev")
PAGE_VIEWPORT = {"width": 1440, "height": 1000}
TIMEOUT_MS = 30_000


# ------------------------------------------------------------------------------------------- fixtures ---


def _seed(fake: LocalOpenRouter) -> None:
    """Keys with every combination the page distinguishes: limits and resets, usage from nothing to over
    the limit, disabled, expired and expiring keys."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    limits = (None, 5.0, 10.0, 25.0, 100.0)
    resets = (None, "daily", "weekly", "monthly")
    for i in range(KEYS):
        limit = limits[(i // 3) % 5]
        reset = resets[(i // 2) % 4]
        expires = None
        if i % 29 == 0:
            expires = now - dt.timedelta(days=1 + i % 20)
        elif i % 7 == 0:
            expires = now + dt.timedelta(days=2 + i % 90)
        key = fake.add_key(
            f"{COMPANIES[i % 10]}-{STAGES[(i // 10) % 5]}-{i:03d}",
            limit=limit,
            limit_reset=reset,
            disabled=i % 23 == 0,
            expires_at=expires,
        )
        share = ((i * 37) % 118) / 100  # 0 to 1.17 of the limit
        spend = round(share * (limit or 20.0), 4)
        if spend:
            fake.add_usage(key.hash, spend)
        if reset is not None:  # earlier windows' spend, which only the lifetime figure still counts
            fake.set_usage(key.hash, usage=round(spend + (i % 11) * 3.1, 4))
    fake.total_credits = 25_000.0


@pytest.fixture(scope="module")
def fake() -> Iterator[LocalOpenRouter]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        _seed(fake)
        yield fake


@pytest.fixture(scope="module")
def limited() -> Iterator[LocalOpenRouter]:
    """A local OpenRouter that rate-limits every request."""
    from airflow_provider_openrouter.testing import LocalOpenRouter, Status

    with LocalOpenRouter() as limited:
        limited.inject(
            Status(429, retry_after=30, message="Rate limit exceeded: too many requests"), times=None
        )
        yield limited


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> AirflowInstance:
    base = tmp_path_factory.mktemp("keys-page")
    dags = base / "dags"
    dags.mkdir()
    return make_airflow_instance(base, dags)


@pytest.fixture(scope="module")
def server(home: AirflowInstance, fake: LocalOpenRouter, limited: LocalOpenRouter) -> Iterator[ApiServer]:
    passwords = home.home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    server = ApiServer(
        home,
        extra_env={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        },
    )
    server.start()
    try:
        server._token = _token(server, "admin")
        for conn_id, host, password in (
            (CONN_ID, fake.base_url, fake.management_key),
            (WRONG_KEY_CONN, fake.base_url, WRONG_KEY),
            (DOWN_CONN, f"http://127.0.0.1:{free_port()}/api/v1", fake.management_key),
            (LIMITED_CONN, limited.base_url, limited.management_key),
        ):
            status, body = server.api(
                "POST",
                "/api/v2/connections",
                {"connection_id": conn_id, "conn_type": "openrouter", "host": host, "password": password},
            )
            assert status == 201, body
        yield server
    finally:
        server.stop()


def _token(server: ApiServer, user: str) -> str:
    request = urllib.request.Request(
        f"{server.url}/auth/token",
        data=json.dumps({"username": user, "password": PASSWORDS[user]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(
    server: ApiServer, path: str, *, token: str | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str], str]:
    """GET without following redirects: ``(status, headers, body)``."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = f"_token={cookie}"
    request = urllib.request.Request(f"{server.url}{path}", headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _keys_json(server: ApiServer, token: str, conn_id: str = CONN_ID, **params: Any) -> dict[str, Any]:
    query = f"?{urlencode(params)}" if params else ""
    status, _, body = _get(server, f"/openrouter/api/connections/{conn_id}/keys{query}", token=token)
    assert status == 200, body
    return dict(json.loads(body))


def _shows(secret: str, text: str) -> bool:
    """A bool to assert on, so that a failing assertion does not print the secret."""
    return secret in text


def _assert_no_secret(fake: LocalOpenRouter, text: str, where: str) -> None:
    leaked = [n for n, plaintext in enumerate(fake.issued_plaintexts) if _shows(plaintext, text)]
    assert not leaked, f"plaintext keys number {leaked} appear in {where}"
    assert not _shows(fake.management_key, text), f"the management key appears in {where}"
    assert not _shows(WRONG_KEY, text), f"the wrong key's value appears in {where}"


# The endpoints of the app, each with a connection id in it where it takes one.
ENDPOINTS = (
    "/openrouter/",
    f"/openrouter/connections/{CONN_ID}",
    f"/openrouter/connections/{CONN_ID}?show=near_limit&sort=used",
    f"/openrouter/api/connections/{CONN_ID}/keys",
    f"/openrouter/api/connections/{CONN_ID}/keys?q=acme&size=200",
)


def _expected(fake: LocalOpenRouter) -> list[dict[str, Any]]:
    """The account's keys as the local OpenRouter holds them, with what the page must derive, computed
    here independently of the page's code."""
    now = dt.datetime.now(dt.timezone.utc)
    keys = []
    held = fake.keys()
    for key in held:
        expires = key.get("expires_at")
        expired = bool(expires) and dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now
        window = {"daily": "usage_daily", "weekly": "usage_weekly", "monthly": "usage_monthly"}
        usage = key[window.get(key["limit_reset"], "usage")]
        used = None
        if key["limit"] is not None:  # what OpenRouter counts against the limit, even past its end
            used = max((key["limit"] - key["limit_remaining"]) / key["limit"], usage / key["limit"])
        keys.append({**key, "expired": expired, "used": used})
    return keys


# ----------------------------------------------------------------------------------- registration ---


def test_the_page_is_a_plugin_of_the_provider(server: ApiServer) -> None:
    from airflow_provider_openrouter.get_provider_info import get_provider_info

    [declared] = get_provider_info()["plugins"]
    assert declared["plugin-class"] == "airflow_provider_openrouter.plugins.keys_page.OpenRouterKeysPlugin"

    status, body = server.api("GET", "/api/v2/plugins")
    assert status == 200, body
    [plugin] = [p for p in body["plugins"] if p["name"] == "openrouter_keys"]
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/openrouter", "name": "OpenRouter keys"}
    ]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["category"]) == (
        "OpenRouter keys",
        "/openrouter/",
        "nav",
        "browse",
    )
    status, errors = server.api("GET", "/api/v2/plugins/importErrors")
    assert status == 200, errors
    assert errors["total_entries"] == 0, errors


def test_loading_the_plugin_does_not_build_the_app() -> None:
    """Airflow imports the plugin module wherever it loads plugins: FastAPI and the app wait for the API
    server."""
    probe = (
        "import sys; import airflow.plugins_manager; before = 'fastapi' in sys.modules; "
        "import airflow_provider_openrouter.plugins.keys_page as m; "
        "print(before, 'fastapi' in sys.modules,"
        " 'airflow_provider_openrouter.plugins._keys_app' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    fastapi_before, fastapi_after, app_loaded, requests_loaded = out.split()
    assert fastapi_after == fastapi_before  # nothing the plugin module added
    assert app_loaded == "False"
    assert requests_loaded == "False"


# ------------------------------------------------------------------------------------------- access ---


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_request_without_a_session_gets_no_data(
    server: ApiServer, fake: LocalOpenRouter, path: str
) -> None:
    status, headers, body = _get(server, path)
    if "/api/" in path:
        assert status == 401, body
    else:  # the page sends a person to the login page, and back afterwards
        assert status == 303, body
        assert headers["location"].startswith("/auth/login"), headers["location"]
    assert "acme" not in body
    _assert_no_secret(fake, body, path)

    # A forged or foreign token is no better than none.
    status, _, body = _get(server, path, token="not.a.jwt")
    assert status in (401, 403), (status, body)
    assert "acme" not in body


@pytest.mark.parametrize("user", ["viewer", "analyst"])
@pytest.mark.parametrize("via", ["bearer", "cookie"])
def test_a_user_who_may_not_read_the_connection_gets_403(
    server: ApiServer, fake: LocalOpenRouter, user: str, via: str
) -> None:
    token = _token(server, user)
    credentials: dict[str, str] = {"token": token} if via == "bearer" else {"cookie": token}
    # The REST API agrees: this user may not read connections at all.
    status, _, _ = _get(server, f"/api/v2/connections/{CONN_ID}", **credentials)
    assert status == 403
    for path in ENDPOINTS:
        status, _, body = _get(server, path, **credentials)
        assert status == 403, (path, status, body[:300])
        assert "acme" not in body, path
        _assert_no_secret(fake, body, path)


@pytest.mark.parametrize("user", ["ops", "admin"])
def test_a_user_who_may_read_the_connection_sees_every_key(
    server: ApiServer, fake: LocalOpenRouter, user: str
) -> None:
    token = _token(server, user)
    status, headers, _ = _get(server, "/openrouter/", token=token)
    assert status == 303
    assert headers["location"] == f"/openrouter/connections/{CONN_ID}"

    seen: list[dict[str, Any]] = []
    page = 1
    while True:
        body = _keys_json(server, token, size=100, page=page)
        seen += body["keys"]
        if page == body["pages"]:
            break
        page += 1
    expected = {key["hash"]: key for key in _expected(fake)}
    assert {key["hash"] for key in seen} == set(expected)
    assert len(seen) == len(expected) == KEYS
    for row in seen:
        key = expected[row["hash"]]
        assert (row["name"], row["label"], row["disabled"], row["limit"], row["limit_reset"]) == (
            key["name"],
            key["label"],
            key["disabled"],
            key["limit"],
            key["limit_reset"],
        )
        assert row["expired"] == key["expired"]
        assert row["lifetime_usage"] == pytest.approx(key["usage"])
        assert row["remaining"] == (None if key["limit"] is None else pytest.approx(key["limit_remaining"]))
        window = {"daily": "usage_daily", "weekly": "usage_weekly", "monthly": "usage_monthly"}
        assert row["usage"] == pytest.approx(key[window.get(key["limit_reset"], "usage")])
        assert row["used"] == (None if key["used"] is None else pytest.approx(key["used"]))
    assert body["credits"]["total_credits"] == 25_000.0
    assert body["credits"]["remaining"] == pytest.approx(25_000.0 - body["credits"]["total_usage"])
    _assert_no_secret(fake, json.dumps(seen), "the JSON of the keys")


def test_search_filters_sorting_and_paging_happen_on_the_server(
    server: ApiServer, fake: LocalOpenRouter
) -> None:
    token = _token(server, "ops")
    keys = _expected(fake)

    def rows(**params: Any) -> list[dict[str, Any]]:
        found, page = [], 1
        while True:
            body = _keys_json(server, token, size=100, page=page, **params)
            found += body["keys"]
            if page >= body["pages"]:
                return found
            page += 1

    def names(**params: Any) -> list[str]:
        return [row["name"] for row in rows(**params)]

    assert sorted(names(q="WONKA-prod")) == sorted(k["name"] for k in keys if "wonka-prod" in k["name"])
    assert sorted(names(show="disabled")) == sorted(k["name"] for k in keys if k["disabled"])
    assert sorted(names(show="expired")) == sorted(k["name"] for k in keys if k["expired"])
    assert sorted(names(show="active")) == sorted(
        k["name"] for k in keys if not k["disabled"] and not k["expired"]
    )
    near = sorted(k["name"] for k in keys if k["used"] is not None and k["used"] >= 0.8)
    assert near
    assert sorted(names(show="near_limit")) == near
    assert sorted(names(show="near_limit", q="acme")) == [n for n in near if "acme" in n]

    # Most used first; keys without a limit have no share and come last.
    by_used = rows(sort="used", order="desc")
    shares = [row["used"] for row in by_used if row["used"] is not None]
    assert shares == sorted(shares, reverse=True)
    assert all(row["used"] is None for row in by_used[len(shares) :])
    by_name = names(sort="name")
    assert by_name == sorted(by_name, key=str.casefold)

    # Pages cut the sorted list: page 2 of 25 continues where page 1 stopped.
    first = _keys_json(server, token, size=25, sort="lifetime")
    second = _keys_json(server, token, size=25, sort="lifetime", page=2)
    assert first["matched"] == KEYS
    assert first["pages"] == KEYS // 25
    lifetimes = [row["lifetime_usage"] for row in first["keys"] + second["keys"]]
    assert lifetimes == sorted(lifetimes, reverse=True)

    # A bad parameter is named, before anything is fetched.
    status, _, body = _get(server, f"/openrouter/api/connections/{CONN_ID}/keys?sort=colour", token=token)
    assert status == 400
    assert json.loads(body)["detail"]["field"] == "sort"


@pytest.mark.parametrize(
    ("conn_id", "status", "says"),
    [
        (WRONG_KEY_CONN, 502, "OpenRouter refused the management key"),
        (DOWN_CONN, 503, "OpenRouter could not be reached"),
        (LIMITED_CONN, 429, "OpenRouter is rate limiting this account"),
        ("no_such_connection", 404, "There is no connection 'no_such_connection'"),
    ],
)
def test_a_failing_connection_answers_with_a_readable_problem(
    server: ApiServer, fake: LocalOpenRouter, conn_id: str, status: int, says: str
) -> None:
    token = _token(server, "ops")
    got, _, body = _get(server, f"/openrouter/api/connections/{conn_id}/keys", token=token)
    assert got == status, body
    detail = json.loads(body)["detail"]
    assert says in detail["title"] + detail["detail"]
    assert detail["hint"]
    got, _, html = _get(server, f"/openrouter/connections/{conn_id}", token=token)
    assert got == status
    assert "Traceback" not in html
    _assert_no_secret(fake, body + html, conn_id)


# ---------------------------------------------------------------------------------------- browser ---


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    from tests.ui_support import SCREENSHOTS

    return Screenshots(SCREENSHOTS / "keys_page")


def _signed_in(browser: Browser, server: ApiServer, user: str) -> BrowserContext:
    """A browser session of ``user``: the ``_token`` cookie the login page would have set."""
    context = browser.new_context(viewport=PAGE_VIEWPORT, base_url=server.url)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies([{"name": "_token", "value": _token(server, user), "url": server.url}])
    return context


@pytest.fixture
def ops_page(browser: Browser, server: ApiServer) -> Iterator[Page]:
    context = _signed_in(browser, server, "ops")
    try:
        yield context.new_page()
    finally:
        context.close()


def _frame(page: Page) -> FrameLocator:
    return page.frame_locator("iframe[title='OpenRouter keys']")


def _open_from_navigation(page: Page) -> FrameLocator:
    page.goto("/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="OpenRouter keys").click()
    # Airflow's UI may already have appended the frame's own path (after its redirect) when this wait starts.
    page.wait_for_url(re.compile(r"/plugin/openrouter-keys(/.*)?$"))
    frame = _frame(page)
    frame.locator("table tbody tr").first.wait_for()
    return frame


def test_browser_the_keys_page_in_airflow(
    ops_page: Page, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots
) -> None:
    frame = _open_from_navigation(ops_page)
    assert frame.locator("h1").inner_text() == "OpenRouter keys"
    assert frame.locator("select#conn").input_value() == CONN_ID
    rows = frame.locator("table tbody tr")
    assert rows.count() == 50
    assert "1–50 of 300 keys" in frame.locator(".pager").inner_text()
    cards = frame.locator(".cards").inner_text()
    assert "$25,000.00" in cards
    assert "300" in cards
    # Every row with a limit has a bar in its level's colour; keys without one have none.
    for level in ("ok", "watch", "near", "over"):
        assert (
            frame.locator(f"tr[data-level={level}] .bar").count()
            == frame.locator(f"tr[data-level={level}]").count()
        )
    assert frame.locator("tr[data-level=none] .bar").count() == 0
    colours = {
        level: frame.locator(f"tr[data-level={level}] .bar span").first.evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        for level in ("ok", "near", "over")
        if frame.locator(f"tr[data-level={level}]").count()
    }
    assert len(set(colours.values())) == len(colours), colours
    _assert_no_secret(fake, frame.locator("html").inner_html(), "the page")
    shots.take(ops_page, "OpenRouter keys page in the Airflow UI: every key of the account")


def test_browser_filter_search_sort_and_page(
    ops_page: Page, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots
) -> None:
    keys = _expected(fake)
    frame = _open_from_navigation(ops_page)

    frame.get_by_role("link", name=re.compile(r"^Near or over limit")).click()
    frame.locator(".chip.on").filter(has_text="Near or over limit").wait_for()
    near = [k for k in keys if k["used"] is not None and k["used"] >= 0.8]
    assert frame.locator("table tbody tr").count() == min(50, len(near))
    assert set(frame.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.level)")) <= {
        "near",
        "over",
    }
    frame.get_by_role("link", name=re.compile(r"^Usage in current window")).click()
    frame.locator("th.sorted", has_text="Usage in current window").wait_for()
    frame.get_by_role("link", name=re.compile(r"^Usage in current window ▼")).wait_for()
    shown = frame.locator(".usage .pct").all_inner_texts()
    percents = [int(text.split()[0]) for text in shown]
    assert percents == sorted(percents, reverse=True)
    shots.take(ops_page, "filter: keys near or over their limit, most used first")

    frame.get_by_role("link", name=re.compile(r"^All keys")).click()
    frame.locator(".chip.on").filter(has_text="All keys").wait_for()
    frame.get_by_role("searchbox", name="Search by name").fill("umbrella-batch")
    frame.get_by_role("button", name="Search").click()
    expected = sorted(k["name"] for k in keys if "umbrella-batch" in k["name"])
    frame.get_by_text(f"of {len(expected)} keys").wait_for()
    assert sorted(frame.locator("tbody .name").all_inner_texts()) == expected
    shots.take(ops_page, "search by name")

    frame.get_by_role("link", name=re.compile(r"^Disabled")).click()
    frame.locator(".chip.on").filter(has_text="Disabled").wait_for()
    # The search stays; the filter narrows it.
    expected_disabled = sorted(k["name"] for k in keys if "umbrella-batch" in k["name"] and k["disabled"])
    assert sorted(frame.locator("tbody .name").all_inner_texts()) == expected_disabled or (
        not expected_disabled and frame.locator(".empty").is_visible()
    )

    # Paging through all keys: page 2 follows page 1 in name order.
    ops_page.goto("/plugin/openrouter-keys")
    frame = _frame(ops_page)
    frame.locator("table tbody tr").first.wait_for()
    first = frame.locator("tbody .name").all_inner_texts()
    frame.get_by_role("link", name="Next ›").click()
    frame.get_by_text("Page 2 of 6").wait_for()
    second = frame.locator("tbody .name").all_inner_texts()
    names = sorted((k["name"] for k in keys), key=str.casefold)
    assert first + second == names[:100]
    _assert_no_secret(fake, frame.locator("html").inner_html(), "the page")


@pytest.mark.parametrize(
    ("conn_id", "title"),
    [
        (WRONG_KEY_CONN, "OpenRouter refused the management key"),
        (LIMITED_CONN, "OpenRouter is rate limiting this account"),
        (DOWN_CONN, "OpenRouter could not be reached"),
    ],
)
def test_browser_a_failing_connection_shows_what_to_do(
    ops_page: Page, fake: LocalOpenRouter, shots: Screenshots, conn_id: str, title: str
) -> None:
    _open_from_navigation(ops_page)
    frame = _frame(ops_page)
    frame.locator("select#conn").select_option(conn_id)
    alert = frame.get_by_role("alert")
    alert.wait_for()
    assert alert.locator("h2").inner_text() == title
    text = alert.inner_text()
    assert "Traceback" not in text
    assert conn_id in text  # the hint names the connection to fix
    _assert_no_secret(fake, frame.locator("html").inner_html(), "the error page")
    shots.take(ops_page, f"error state: {title}")


def test_browser_a_user_without_access_sees_no_keys(
    browser: Browser, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots
) -> None:
    context = _signed_in(browser, server, "viewer")
    try:
        page = context.new_page()
        page.goto("/plugin/openrouter-keys")
        frame = _frame(page)
        alert = frame.get_by_role("alert")
        alert.wait_for()
        assert "may read" in alert.inner_text()
        assert frame.locator("table").count() == 0
        html = frame.locator("html").inner_html()
        assert "acme" not in html
        _assert_no_secret(fake, html, "the viewer's page")
        shots.take(page, "a Viewer opens the page: no keys, and what to ask for")

        page.goto(f"/openrouter/connections/{CONN_ID}")
        assert page.locator("table").count() == 0
        assert "You may not see this page" in page.locator("h2").inner_text()
    finally:
        context.close()


def test_nothing_secret_in_the_api_server_log(server: ApiServer, fake: LocalOpenRouter) -> None:
    token = _token(server, "ops")
    for conn_id in (CONN_ID, WRONG_KEY_CONN, DOWN_CONN, LIMITED_CONN):
        _get(server, f"/openrouter/connections/{conn_id}?refresh=1", token=token)
    log = server.log_path.read_text(errors="replace")
    assert "/openrouter/" in log  # the requests above are in it
    _assert_no_secret(fake, log, "the API server's log")
    assert "Traceback" not in log
