"""The ``openrouter`` connection type: its forms (URI, JSON), its validation, its UI declaration, and
``test_connection``. Connections come from ``AIRFLOW_CONN_*``: no Airflow database."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_provider_openrouter._connection import OpenRouterConnectionConfig, base_url_from
from airflow_provider_openrouter.exceptions import OpenRouterConnectionConfigError
from airflow_provider_openrouter.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL, get_provider_info
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter

CONN_ENV = "AIRFLOW_CONN_OPENROUTER_DEFAULT"
WORKSPACE = "7d7e2f0c-5b1a-4c39-9a53-2f0a3c1e9b11"


def conn_json(host: str | None = None, password: str | None = "sk-or-v1-test", **extra: Any) -> str:
    return json.dumps({"conn_type": "openrouter", "host": host, "password": password, "extra": extra})


def config_from_env(monkeypatch: pytest.MonkeyPatch, value: str) -> OpenRouterConnectionConfig:
    monkeypatch.setenv(CONN_ENV, value)
    return OpenRouterHook()._get_config()


# ------------------------------------------------------------------------------------------- the forms ---


def test_json_form_with_every_extra(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        CONN_ENV,
        local_openrouter.connection_json(
            http_referer="https://tenants.example.com",
            app_title="Tenant Provisioning",
            app_categories=" billing , ops ,",
            timeout=12.5,
            max_retries=5,
            max_retry_wait=7,
            workspace_id=WORKSPACE,
        ),
    )
    hook = OpenRouterHook()
    config = hook._get_config()
    assert config == OpenRouterConnectionConfig(
        conn_id="openrouter_default",
        api_key=local_openrouter.management_key,
        base_url=local_openrouter.base_url,
        http_referer="https://tenants.example.com",
        app_title="Tenant Provisioning",
        app_categories="billing,ops",
        timeout=12.5,
        max_retries=5,
        max_retry_wait=7.0,
        workspace_id=WORKSPACE,
    )
    hook.get_current_key()
    headers = local_openrouter.requests[-1].headers
    assert headers["HTTP-Referer"] == "https://tenants.example.com"
    assert headers["X-OpenRouter-Title"] == "Tenant Provisioning"
    assert headers["X-OpenRouter-Categories"] == "billing,ops"


def test_uri_form_as_airflow_writes_it(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV, local_openrouter.connection_uri(app_title="From URI", max_retries=1))
    hook = OpenRouterHook()
    config = hook._get_config()
    assert config.base_url == local_openrouter.base_url
    assert config.api_key == local_openrouter.management_key
    assert (config.app_title, config.max_retries) == ("From URI", 1)
    assert hook.get_current_key().is_management_key


def test_uri_form_with_a_bare_host_and_query_extras(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hand-written URI: the host without a scheme, the path as "schema", extras as plain query parameters
    # (which arrive as strings).
    uri = (
        f"openrouter://:{quote(local_openrouter.management_key, safe='')}@127.0.0.1:{local_openrouter.port}"
        "/api%2Fv1?timeout=5&max_retries=2&max_retry_wait=0.5&app_title=Hand+written"
    )
    config = config_from_env(monkeypatch, uri)
    assert config.base_url == local_openrouter.base_url  # loopback: http
    assert (config.timeout, config.max_retries, config.max_retry_wait) == (5.0, 2, 0.5)
    assert config.app_title == "Hand written"
    assert OpenRouterHook().get_current_key().is_management_key


def test_round_trip_through_get_uri(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The UI's "Test" button hands the hook a connection that went through Connection.get_uri().
    from airflow.sdk import Connection

    original = Connection(
        conn_id="openrouter_default",
        conn_type="openrouter",
        host=local_openrouter.base_url,
        password=local_openrouter.management_key,
        extra=json.dumps({"timeout": 9, "app_categories": "a,b", "workspace_id": None}),
    )
    config = config_from_env(monkeypatch, original.get_uri())
    assert (config.base_url, config.timeout, config.app_categories) == (local_openrouter.base_url, 9.0, "a,b")


def test_empty_host_means_openrouter(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_env(monkeypatch, conn_json(host=None))
    assert config.base_url == DEFAULT_BASE_URL == "https://openrouter.ai/api/v1"
    assert (config.timeout, config.max_retries, config.max_retry_wait) == (30.0, 3, 60.0)
    assert (config.http_referer, config.app_title, config.app_categories, config.workspace_id) == (None,) * 4


def test_untouched_form_fields_fall_back_to_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the UI saves for fields left alone: null, or an empty string.
    extras = dict.fromkeys(CONN_FIELDS) | {"app_title": "", "timeout": ""}
    config = config_from_env(monkeypatch, conn_json(**extras))
    assert config == OpenRouterConnectionConfig(conn_id="openrouter_default", api_key="sk-or-v1-test")


def test_prefixed_extras_of_older_forms_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_env(monkeypatch, conn_json(extra__openrouter__timeout="4"))
    assert config.timeout == 4.0


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        pytest.param("", None, None, DEFAULT_BASE_URL, id="empty"),
        pytest.param("openrouter.ai", None, None, "https://openrouter.ai/api/v1", id="bare-host"),
        pytest.param("https://openrouter.ai/api/v1/", None, None, "https://openrouter.ai/api/v1", id="slash"),
        pytest.param(
            "https://proxy.example.com/or/api/v1",
            None,
            None,
            "https://proxy.example.com/or/api/v1",
            id="path",
        ),
        pytest.param("https://openrouter.ai/", None, None, "https://openrouter.ai", id="explicit-root"),
        pytest.param("localhost:8080", None, None, "http://localhost:8080/api/v1", id="localhost"),
        pytest.param("127.0.0.1", 9000, "api/v1", "http://127.0.0.1:9000/api/v1", id="uri-parts"),
        pytest.param("[::1]:9000", None, None, "http://[::1]:9000/api/v1", id="ipv6-loopback"),
        pytest.param(
            "https://or.example.com", 8443, None, "https://or.example.com:8443/api/v1", id="port-field"
        ),
        pytest.param(
            "http://or.internal:80/api/v1", 9999, None, "http://or.internal:80/api/v1", id="port-in-host"
        ),
        pytest.param("  openrouter.ai  ", None, None, "https://openrouter.ai/api/v1", id="whitespace"),
    ],
)
def test_base_url(host: str, port: int | None, schema: str | None, expected: str) -> None:
    assert base_url_from("c", host, port=port, path=schema) == expected


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("ftp://openrouter.ai", id="scheme"),
        pytest.param("https://user:secret@openrouter.ai", id="credentials"),
        pytest.param("https://openrouter.ai/api/v1?x=1", id="query"),
        pytest.param("https://", id="no-host"),
        pytest.param("https://openrouter.ai:99999", id="bad-port"),
    ],
)
def test_bad_host(host: str) -> None:
    with pytest.raises(OpenRouterConnectionConfigError) as exc:
        base_url_from("c", host)
    assert exc.value.field == "host"
    assert "secret" not in str(exc.value)


# ------------------------------------------------------------------------------------ bad connections ---

BAD: list[Any] = [
    pytest.param(conn_json(password=None), "password", id="no-key"),
    pytest.param(conn_json(password="   "), "password", id="blank-key"),
    pytest.param(conn_json(password="sk-or-v1-a b"), "password", id="key-with-space"),
    pytest.param(conn_json(password="sk-or-v1-a\nX-Evil: 1"), "password", id="key-with-newline"),
    pytest.param(conn_json(host="ftp://x"), "host", id="host-scheme"),
    pytest.param(conn_json(timeout=0), "timeout", id="timeout-zero"),
    pytest.param(conn_json(timeout=-5), "timeout", id="timeout-negative"),
    pytest.param(conn_json(timeout="soon"), "timeout", id="timeout-text"),
    pytest.param(conn_json(timeout=True), "timeout", id="timeout-bool"),
    pytest.param(conn_json(timeout="nan"), "timeout", id="timeout-nan"),
    pytest.param(conn_json(max_retries=-1), "max_retries", id="max_retries-negative"),
    pytest.param(conn_json(max_retries=1.5), "max_retries", id="max_retries-fraction"),
    pytest.param(conn_json(max_retries="many"), "max_retries", id="max_retries-text"),
    pytest.param(conn_json(max_retries=21), "max_retries", id="max_retries-above-maximum"),
    pytest.param(conn_json(max_retries=False), "max_retries", id="max_retries-bool"),
    pytest.param(conn_json(max_retry_wait=-0.1), "max_retry_wait", id="max_retry_wait-negative"),
    pytest.param(conn_json(max_retry_wait="inf"), "max_retry_wait", id="max_retry_wait-infinite"),
    pytest.param(conn_json(workspace_id="default"), "workspace_id", id="workspace-not-uuid"),
    pytest.param(conn_json(workspace_id=7), "workspace_id", id="workspace-number"),
    pytest.param(conn_json(app_title="two\nlines"), "app_title", id="title-newline"),
    pytest.param(conn_json(app_title="Ünïcode ✓"), "app_title", id="title-not-latin-1"),
    pytest.param(conn_json(http_referer=["https://x"]), "http_referer", id="referer-list"),
    pytest.param(conn_json(app_categories=[1, 2]), "app_categories", id="categories-not-strings"),
]


@pytest.mark.parametrize(("value", "field"), BAD)
def test_bad_connection_names_the_field(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, value: str, field: str
) -> None:
    monkeypatch.setenv(CONN_ENV, value.replace('"host": null', f'"host": "{local_openrouter.base_url}"'))
    hook = OpenRouterHook()
    with pytest.raises(OpenRouterConnectionConfigError) as exc:
        hook.get_key("a" * 64)
    assert exc.value.field == field
    assert exc.value.conn_id == "openrouter_default"
    assert f"field {field!r}" in str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "sk-or-v1-a" not in str(exc.value)
    assert local_openrouter.requests == []
    ok, message = hook.test_connection()
    assert not ok
    assert field in message


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("[1, 2]", id="list"),
        pytest.param('"x"', id="str"),
    ],
)
def test_extra_that_is_not_a_json_object(extra: str) -> None:
    # Some Airflow versions refuse such a connection before a hook sees it; a secrets backend may not.
    from airflow.sdk import Connection

    conn = Connection(conn_id="c", conn_type="openrouter", password="sk-or-v1-k", extra=extra)
    with pytest.raises(OpenRouterConnectionConfigError) as exc:
        OpenRouterConnectionConfig.from_connection(conn)
    assert exc.value.field == "extra"


def test_categories_may_be_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_env(monkeypatch, conn_json(app_categories=["a", " b "])).app_categories == "a,b"


def test_typo_in_extra_is_warned(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = config_from_env(monkeypatch, conn_json(max_retry=1, something_else=True))
    assert config.max_retries == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'max_retry'" in w and "'max_retries'" in w for w in warnings)
    assert not any("something_else" in w for w in warnings)


def test_connection_is_looked_up_once(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV, local_openrouter.connection_json())
    hook = OpenRouterHook()
    hook.get_current_key()
    monkeypatch.setenv(CONN_ENV, conn_json(password=None))  # would fail if read again
    assert hook.get_current_key().is_management_key


def test_hook_init_does_no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONN_ENV, raising=False)
    hook = OpenRouterHook("does_not_exist")
    assert hook.openrouter_conn_id == "does_not_exist"


def test_other_conn_id(local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in local_openrouter.airflow_env("tenant_admin").items():
        monkeypatch.setenv(name, value)
    assert OpenRouterHook(openrouter_conn_id="tenant_admin").get_current_key().is_management_key


def test_key_is_not_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_env(monkeypatch, conn_json(password="sk-or-v1-very-secret-value"))
    assert "very-secret" not in repr(config)
    assert "very-secret" not in str(config)
    assert "very-secret" not in repr(OpenRouterHook())


# -------------------------------------------------------------------------------------- test_connection ---


def test_test_connection_with_management_key(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV, local_openrouter.connection_json())
    ok, message = OpenRouterHook().test_connection()
    assert ok is True
    assert "management key" in message
    assert local_openrouter.management_key not in message
    assert [(r.method, r.path) for r in local_openrouter.requests] == [("GET", "/api/v1/key")]


def test_test_connection_with_regular_key(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    regular = local_openrouter.add_key("app-key")
    monkeypatch.setenv(CONN_ENV, conn_json(host=local_openrouter.base_url, password=regular.plaintext))
    ok, message = OpenRouterHook().test_connection()
    assert ok is False
    assert "regular API key" in message
    assert "Create a management key" in message
    assert regular.plaintext not in message


def test_test_connection_with_wrong_key(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-or-v1-" + "0" * 64
    monkeypatch.setenv(CONN_ENV, conn_json(host=local_openrouter.base_url, password=wrong))
    ok, message = OpenRouterHook().test_connection()
    assert ok is False
    assert "401" in message
    assert wrong not in message


def test_test_connection_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.test_hook_retries import free_port

    monkeypatch.setenv(CONN_ENV, conn_json(host=f"http://127.0.0.1:{free_port()}/api/v1", max_retries=0))
    ok, message = OpenRouterHook().test_connection()
    assert ok is False
    assert "ConnectionRefusedError" in message


def test_test_connection_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONN_ENV, raising=False)
    ok, message = OpenRouterHook("no_such_connection").test_connection()
    assert ok is False
    assert "no_such_connection" in message


# ----------------------------------------------------------------------------------------- the UI form ---


def test_ui_field_behaviour_matches_provider_info() -> None:
    [conn_type] = get_provider_info()["connection-types"]
    declared = conn_type["ui-field-behaviour"]
    behaviour = OpenRouterHook.get_ui_field_behaviour()
    assert behaviour == {
        "hidden_fields": declared["hidden-fields"],
        "relabeling": declared["relabeling"],
        "placeholders": declared["placeholders"],
    }
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"]["password"] == "Management key"
    assert conn_type["hook-class-name"] == f"{OpenRouterHook.__module__}.{OpenRouterHook.__qualname__}"
    assert conn_type["connection-type"] == OpenRouterHook.conn_type


def test_form_widgets_come_from_conn_fields() -> None:
    # Airflow calls this only where the web UI's packages are installed; elsewhere it expects ImportError
    # naming wtforms or flask_appbuilder, and carries on without widgets.
    try:
        import wtforms
    except ImportError:
        with pytest.raises(ImportError) as exc:
            OpenRouterHook.get_connection_form_widgets()
        assert exc.value.name == "wtforms"
        return
    widgets = OpenRouterHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    allowed = (wtforms.IntegerField, wtforms.StringField, wtforms.PasswordField, wtforms.BooleanField)
    assert all(widget.field_class in allowed for widget in widgets.values())
    assert widgets["max_retries"].field_class is wtforms.IntegerField


def test_every_conn_field_is_understood(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "http_referer": "https://x.example",
        "app_title": "t",
        "app_categories": "c",
        "timeout": 1,
        "max_retries": 0,
        "max_retry_wait": 0,
        "workspace_id": WORKSPACE,
        "pages_in_flight": 3,
    }
    assert set(values) == set(CONN_FIELDS)  # a new field needs parsing (and this test) too
    config = config_from_env(monkeypatch, conn_json(**values))
    for name, value in values.items():
        assert getattr(config, name) == value


def test_the_ui_shows_the_form() -> None:
    """What Airflow's UI API serves for the connection type: from provider info on 3.2+, from the hook's
    methods on 3.1. In a child process: the UI code mocks wtforms into ``sys.modules`` when it is absent."""
    import subprocess
    import sys

    script = (
        "import json\n"
        "from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService\n"
        "[meta] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == 'openrouter']\n"
        "print(json.dumps({'name': meta.hook_name, 'extras': sorted(meta.extra_fields),\n"
        "    'password': meta.standard_fields.password.title, 'host': meta.standard_fields.host.title,\n"
        "    'hidden': [f for f in ('url_schema', 'port', 'login')\n"
        "               if getattr(meta.standard_fields, f).hidden]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert shown == {
        "name": "OpenRouter",
        "extras": sorted(CONN_FIELDS),
        "password": "Management key",
        "host": "Base URL",
        "hidden": ["url_schema", "port", "login"],
    }
