"""The provider in Airflow's own UI, driven in headless Chromium against a real API server.

One Airflow home for the module: the tenant-provisioning example DAG runs in it first (against a local
OpenRouter), then ``airflow api-server`` serves it and the browser walks through what a user does: pick the
OpenRouter connection type, fill and save the form, test the connection, and follow a task's extra link. Every
step leaves a screenshot in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_provider_openrouter.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL
from tests.airflow_runner import ROOT, make_airflow_instance
from tests.ui_support import ApiServer, Screenshots, chromium, extra_field_input

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Locator, Page, Route

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance

pytestmark = [pytest.mark.browser, pytest.mark.airflow_db]

# Creates a key per tenant (mapped) and delivers each plaintext to a Variable: what the extra link is for.
PROVISION = "example_openrouter_provision_tenants"
CONN_ID = "openrouter_ui"
WRONG_KEY_CONN_ID = "openrouter_wrong_key"
WRONG_KEY = "sk-or-v1-" + "0" * 64
# Tall enough that the whole add-connection dialog, extra fields open, fits in one screenshot; pages are shot
# at an ordinary size.
DIALOG_VIEWPORT = {"width": 1400, "height": 1900}
PAGE_VIEWPORT = {"width": 1400, "height": 1000}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def fake() -> Iterator[LocalOpenRouter]:
    from airflow_provider_openrouter.testing import LocalOpenRouter

    with LocalOpenRouter() as fake:
        yield fake


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory, fake: LocalOpenRouter) -> AirflowInstance:
    instance = make_airflow_instance(tmp_path_factory.mktemp("ui"), ROOT / "example_dags")
    # A run whose create tasks carry the extra link, in the same home the API server will serve.
    secret_store = tmp_path_factory.mktemp("secret-store")
    instance.dags_test(
        PROVISION, extra_env={**fake.airflow_env(), "OPENROUTER_EXAMPLE_SECRETS_DIR": str(secret_store)}
    )
    return instance


@pytest.fixture(scope="module")
def server(ui_home: AirflowInstance) -> Iterator[ApiServer]:
    server = ApiServer(ui_home)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    return Screenshots()


def _drop_port_zero(route: Route) -> None:
    """Airflow 3.3.2's Test button sends ``port: 0`` for a connection without a port, which the API server
    rejects (fixed upstream in apache/airflow#73298). Leave the port out, as the fixed UI does."""
    body = json.loads(route.request.post_data or "{}")
    if not body.get("port"):
        body.pop("port", None)
    route.continue_(post_data=json.dumps(body))


@pytest.fixture
def page(browser: Browser, server: ApiServer) -> Iterator[Page]:
    context = browser.new_context(viewport=DIALOG_VIEWPORT, base_url=server.url)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.route("**/api/v2/connections/test", _drop_port_zero)
    try:
        yield page
    finally:
        context.close()


def _open_add_connection(page: Page) -> Locator:
    page.goto("/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("OpenRouter")
    page.get_by_role("option", name="OpenRouter", exact=True).click()
    dialog.locator("[name=host]").wait_for()
    return dialog


def _rest_connection(server: ApiServer, conn_id: str) -> dict[str, Any]:
    status, body = server.api("GET", f"/api/v2/connections/{conn_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def _row(page: Page, conn_id: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))


def _toast(page: Page, title: str) -> Locator:
    toast = page.get_by_role("status").filter(has_text=title).first
    toast.wait_for()
    page.wait_for_timeout(400)  # let it finish sliding in before a screenshot
    return toast


def _shows(secret: str, text: str) -> bool:
    """Whether ``text`` holds ``secret``: a bool to assert on, so that a failure does not print the secret."""
    return secret in text


def _assert_no_plaintext(page: Page, fake: LocalOpenRouter) -> None:
    html = page.content()
    shown = [n for n, plaintext in enumerate(fake.issued_plaintexts) if _shows(plaintext, html)]
    assert not shown, f"plaintext keys number {shown} of the local OpenRouter are on {page.url}"


# ------------------------------------------------------------------------------------ the connection form ---


def test_connection_form_offers_the_openrouter_fields(page: Page, shots: Screenshots) -> None:
    dialog = _open_add_connection(page)

    # Standard fields: the key and the base URL, relabelled; nothing else a user could wrongly fill in.
    assert dialog.get_by_text("Management key", exact=True).is_visible()
    assert dialog.get_by_text("Base URL", exact=True).is_visible()
    assert dialog.locator("[name=password]").get_attribute("type") == "password"
    assert dialog.locator("[name=host]").get_attribute("placeholder") == DEFAULT_BASE_URL
    for hidden in ("login", "port", "schema"):
        assert dialog.locator(f"[name={hidden}]").count() == 0, f"{hidden} should be hidden"
    for label in ("Login", "Port", "Schema"):
        assert dialog.get_by_text(label, exact=True).count() == 0, f"{label} should be hidden"
    shots.take(dialog, "add connection: OpenRouter standard fields")

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    extra_field_input(dialog, "workspace_id").wait_for()
    for name, spec in CONN_FIELDS.items():
        assert dialog.get_by_text(spec["label"], exact=True).is_visible(), spec["label"]
        assert dialog.get_by_text(spec["description"], exact=True).is_visible(), spec["description"]
        default = spec["schema"].get("default")
        value = extra_field_input(dialog, name).input_value()
        assert value == ("" if default is None else str(default)), (name, value)
    # Numbers get number inputs with the schema's bounds, so the form itself refuses a negative retry count.
    retries = extra_field_input(dialog, "max_retries")
    assert retries.get_attribute("role") == "spinbutton"
    assert retries.get_attribute("aria-valuemin") == "0"
    assert retries.get_attribute("aria-valuemax") == "20"
    shots.take(dialog, "add connection: OpenRouter extra fields with descriptions and defaults")


def test_connection_saved_through_the_form_works_with_the_hook(
    page: Page, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialog = _open_add_connection(page)
    dialog.locator("[name=connection_id]").fill(CONN_ID)
    dialog.locator("[name=host]").fill(fake.base_url)
    dialog.locator("[name=password]").fill(fake.management_key)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    extra_field_input(dialog, "app_title").fill("Tenant provisioning (UI test)")
    extra_field_input(dialog, "app_categories").fill("cli-agent,programming-app")
    extra_field_input(dialog, "timeout").fill("12.5")
    extra_field_input(dialog, "max_retries").fill("2")
    dialog.get_by_role("button", name="Extra Fields JSON").click()
    dialog.get_by_text('"app_title"').wait_for()
    shots.take(dialog, "add connection: filled form, the extras as they will be stored")
    dialog.get_by_role("button", name="Save").click()
    page.set_viewport_size(PAGE_VIEWPORT)  # type: ignore[arg-type]
    _row(page, CONN_ID).wait_for()
    # Until it is gone, the closing dialog still holds what was typed into it.
    dialog.wait_for(state="detached")
    _assert_no_plaintext(page, fake)
    shots.take(page, "connection list with the saved OpenRouter connection")

    stored = _rest_connection(server, CONN_ID)
    assert stored["conn_type"] == "openrouter"
    assert stored["host"] == fake.base_url
    assert stored["password"] == "***"  # the API never returns it
    extra = json.loads(stored["extra"])
    assert extra["app_title"] == "Tenant provisioning (UI test)"
    assert extra["app_categories"] == "cli-agent,programming-app"
    assert extra["timeout"] == 12.5
    assert extra["max_retries"] == 2
    # Fields left alone are stored explicitly, as null or their default: the hook must read them as unset.
    assert extra["http_referer"] is None
    assert extra["workspace_id"] is None
    assert extra["max_retry_wait"] == 60

    # The connection exactly as stored (the password is the one typed into the form: the API masks it).
    as_stored = {
        "conn_type": stored["conn_type"],
        "host": stored["host"],
        "password": fake.management_key,
        "extra": stored["extra"],
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(as_stored))
    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

    hook = OpenRouterHook(openrouter_conn_id=CONN_ID)
    config = OpenRouterConnectionConfig.from_connection(hook.get_connection(CONN_ID))
    assert config.base_url == fake.base_url
    assert config.app_title == "Tenant provisioning (UI test)"
    assert config.timeout == 12.5
    assert config.max_retries == 2
    assert config.max_retry_wait == 60
    assert config.http_referer is None
    assert config.workspace_id is None

    fake.clear_requests()
    current = hook.get_current_key()
    assert current.is_management_key
    [request] = fake.requests
    assert request.path.endswith("/key")
    assert request.headers.get("X-OpenRouter-Title") == "Tenant provisioning (UI test)"
    assert request.headers.get("X-OpenRouter-Categories") == "cli-agent,programming-app"
    assert "HTTP-Referer" not in request.headers


def test_connection_test_reports_success_and_a_readable_failure(
    page: Page, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots
) -> None:
    status, body = server.api(
        "POST",
        "/api/v2/connections",
        {
            "connection_id": WRONG_KEY_CONN_ID,
            "conn_type": "openrouter",
            "host": fake.base_url,
            "password": WRONG_KEY,
        },
    )
    assert status == 201, body

    page.set_viewport_size(PAGE_VIEWPORT)  # type: ignore[arg-type]
    page.goto("/connections")
    _row(page, CONN_ID).get_by_role("button", name="Test Connection").click()
    success = _toast(page, "Test Connection Successful")
    assert "Connected to OpenRouter with management key" in success.inner_text()
    shots.take(page, "connection test succeeds against the local OpenRouter")

    page.goto("/connections")
    _row(page, WRONG_KEY_CONN_ID).get_by_role("button", name="Test Connection").click()
    failure = _toast(page, "Test Connection Failed")
    text = failure.inner_text()
    assert "refused its key (401" in text
    assert "Put a valid management key in its password field" in text
    assert not _shows(WRONG_KEY, text)
    shots.take(page, "connection test with a wrong key fails readably")

    # The same through the REST API, the way the UI calls it once fixed (no port).
    for conn_id, expected in ((CONN_ID, True), (WRONG_KEY_CONN_ID, False)):
        stored = _rest_connection(server, conn_id)
        status, result = server.api(
            "POST",
            "/api/v2/connections/test",
            {"connection_id": conn_id, "conn_type": "openrouter", "host": stored["host"], "password": "***"},
        )
        assert status == 200, result
        assert result["status"] is expected, result
        assert not _shows(fake.management_key, result["message"])
        assert not _shows(WRONG_KEY, result["message"])

    regular = fake.add_key("a regular key")
    status, result = server.api(
        "POST",
        "/api/v2/connections/test",
        {
            "connection_id": "openrouter_regular_key",
            "conn_type": "openrouter",
            "host": fake.base_url,
            "password": regular.plaintext,
        },
    )
    assert status == 200, result
    assert result["status"] is False
    assert "management key" in result["message"]
    assert not _shows(regular.plaintext, result["message"])


# ----------------------------------------------------------------------------------------- the extra link ---


def test_created_key_task_shows_the_openrouter_link(
    page: Page, server: ApiServer, fake: LocalOpenRouter, shots: Screenshots
) -> None:
    from airflow_provider_openrouter.links import key_url

    status, runs = server.api("GET", f"/api/v2/dags/{PROVISION}/dagRuns")
    assert status == 200, runs
    [run] = runs["dag_runs"]
    assert run["state"] == "success"
    run_path = f"/dags/{PROVISION}/runs/{quote(run['dag_run_id'], safe='')}"
    status, xcom = server.api(
        "GET",
        f"/api/v2{run_path.replace('/runs/', '/dagRuns/')}/taskInstances/create_tenant_key/xcomEntries/"
        "return_value?map_index=0&deserialize=true",
    )
    assert status == 200, xcom
    created = xcom["value"]
    if isinstance(created, str):
        created = json.loads(created)
    page.set_viewport_size(PAGE_VIEWPORT)  # type: ignore[arg-type]

    page.goto(run_path)
    page.get_by_text("create_tenant_key").first.wait_for()
    _assert_no_plaintext(page, fake)
    shots.take(page, "the provisioning DAG run: one key per tenant")

    page.goto(f"{run_path}/tasks/create_tenant_key/mapped/0/details")
    page.get_by_text("Extra Links").wait_for()
    link = page.locator("a", has_text="OpenRouter key")
    link.wait_for()
    assert link.get_attribute("href") == key_url(created["hash"])
    shots.take(page, "task details: the OpenRouter key extra link of a created key")

    # What the task rendered names the Variable the plaintext went to, never the plaintext.
    page.goto(f"{run_path}/tasks/create_tenant_key/mapped/0/rendered_templates")
    page.get_by_text(created["plaintext_delivered_to"][0].removeprefix("Variable ")).first.wait_for()
    _assert_no_plaintext(page, fake)
    shots.take(page, "task rendered templates: the Variable's name, not the key")


def test_the_ui_session_left_no_plaintext_behind(ui_home: AirflowInstance, fake: LocalOpenRouter) -> None:
    """Keys typed into the form or tested through the API server are stored encrypted, and logged nowhere."""
    from tests.secret_audit import audit

    report = audit([*fake.issued_plaintexts, WRONG_KEY], ui_home.home, {})
    assert not report.hits, "plaintext keys found:\n" + "\n".join(map(str, report.hits))
    [(password, is_encrypted)] = ui_home.query(
        "SELECT password, is_encrypted FROM connection WHERE conn_id = ?", (CONN_ID,)
    )
    assert is_encrypted
    assert password
