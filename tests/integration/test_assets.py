"""Asset events of key changes: the URI scheme the provider registers, and the events the key operators and
the tenant sync add through their asset alias, run against the local OpenRouter with the task runner's own
outlet accessors (``airflow dags test`` runs are in ``test_example_dags_operators.py``'s way, below)."""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_openrouter.assets import (
    DEFAULT_ASSET_ALIAS,
    KEY_URI_SCHEME,
    key_asset,
    key_uri,
    normalize_key_uri,
)
from airflow_provider_openrouter.get_provider_info import get_provider_info
from airflow_provider_openrouter.operators.api_key import (
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)
from airflow_provider_openrouter.operators.sync import SyncApiKeysOperator

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_openrouter.models import CreatedApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.airflow_runner import AirflowInstance


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter) -> LocalOpenRouter:
    return openrouter_conn_env


class Run:
    """One task's context, with the outlet accessors Airflow's task runner gives it."""

    def __init__(self) -> None:
        self.outlet_events = OutletEventAccessors()
        self.context: Any = {"outlet_events": self.outlet_events}

    def events(self, alias: str = DEFAULT_ASSET_ALIAS) -> list[tuple[str, dict[str, Any]]]:
        """``(asset URI, extra)`` of each event added through the alias, in order."""
        accessor = self.outlet_events[AssetAlias(alias)]
        return [(event.dest_asset_key.uri, event.extra) for event in accessor.asset_alias_events]


def keep(created: CreatedApiKey, context: Any) -> None:
    kept.append(created.plaintext)


kept: list[str] = []


def assert_no_plaintext(fake: LocalOpenRouter, run: Run) -> None:
    text = json.dumps(run.events())
    for plaintext in [*fake.issued_plaintexts, *kept]:
        assert plaintext not in text


# ------------------------------------------------------------------------------------ the URI scheme ---


def test_the_provider_registers_the_scheme_with_its_normaliser_and_factory() -> None:
    [entry] = get_provider_info()["asset-uris"]
    assert entry == {
        "schemes": [KEY_URI_SCHEME],
        "handler": "airflow_provider_openrouter.assets.normalize_key_uri",
        "factory": "airflow_provider_openrouter.assets.key_asset",
    }


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("openrouter://openrouter_default/keys/tenant-a", "openrouter://openrouter_default/keys/tenant-a"),
        ("OpenRouter://openrouter_default/keys/tenant a/", "openrouter://openrouter_default/keys/tenant%20a"),
        ("openrouter://openrouter_default/keys/team/a#x", "openrouter://openrouter_default/keys/team%2Fa"),
        ("openrouter://openrouter_default/keys/t%C3%A9", "openrouter://openrouter_default/keys/t%C3%A9"),
        ("openrouter://prod.or/keys/a?b=1", "openrouter://prod.or/keys/a"),
    ],
)
def test_every_way_of_writing_a_key_uri_is_one_asset(written: str, normal: str) -> None:
    # Asset() runs Airflow's sanitizer, which calls the registered normaliser.
    assert Asset(written).uri == normal
    assert normalize_key_uri(urllib.parse.urlsplit(normal)) == urllib.parse.urlsplit(normal)


def test_key_uri_quotes_any_name() -> None:
    assert key_uri("tenant a/b?#") == "openrouter://openrouter_default/keys/tenant%20a%2Fb%3F%23"
    assert Asset(key_uri("tenant a/b?#", "other")).uri == key_uri("tenant a/b?#", "other")
    assert key_asset("té").uri == key_asset("té").name == "openrouter://openrouter_default/keys/t%C3%A9"


@pytest.mark.parametrize(
    "uri",
    ["openrouter:///keys/a", "openrouter://c/keys", "openrouter://c/keys/", "openrouter://c/guardrails/a"],
)
def test_a_uri_naming_no_key_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="openrouter://"):
        Asset(uri)


# ----------------------------------------------------------------------------- the key operators ---


def test_each_operator_declares_the_alias_as_outlet() -> None:
    create = CreateApiKeyOperator(
        task_id="c", name="t", deliver_to_callable=keep, outlets=[Asset("s3://b/k")]
    )
    assert create.outlets == [Asset("s3://b/k"), AssetAlias(DEFAULT_ASSET_ALIAS)]
    assert UpdateApiKeyOperator(task_id="u", key_name="t", limit=1, asset_alias="mine").outlets == [
        AssetAlias("mine")
    ]
    assert DeleteApiKeyOperator(task_id="d", key_name="t", asset_alias=None).outlets == []
    sync = SyncApiKeysOperator(task_id="s", tenants=[], name_prefix="t-")
    assert sync.outlets == [AssetAlias(DEFAULT_ASSET_ALIAS)]


def test_create_rotate_update_disable_delete_emit_and_reuse_does_not(fake: LocalOpenRouter) -> None:
    run = Run()
    created = CreateApiKeyOperator(task_id="c", name="tenant-a", deliver_to_callable=keep)
    first = created.execute(run.context)
    reuse = CreateApiKeyOperator(task_id="c", name="tenant-a", deliver_to_callable=keep, if_exists="reuse")
    assert reuse.execute(run.context)["action"] == "reused"
    replace = CreateApiKeyOperator(
        task_id="c", name="tenant-a", deliver_to_callable=keep, if_exists="replace"
    )
    second = replace.execute(run.context)
    UpdateApiKeyOperator(task_id="u", key_name="tenant-a", limit=4).execute(run.context)
    UpdateApiKeyOperator(task_id="u", key_name="tenant-a", limit=4).execute(run.context)  # nothing to change
    UpdateApiKeyOperator(task_id="u", key_name="tenant-a", disabled=True).execute(run.context)
    UpdateApiKeyOperator(task_id="u", key_name="tenant-a", disabled=False).execute(run.context)
    DeleteApiKeyOperator(task_id="d", key_name="tenant-a").execute(run.context)
    uri = key_uri("tenant-a")
    events = run.events()
    assert [(u, e["action"], e["key_hash"]) for u, e in events] == [
        (uri, "created", first["hash"]),
        (uri, "rotated", second["hash"]),
        (uri, "updated", second["hash"]),
        (uri, "disabled", second["hash"]),
        (uri, "enabled", second["hash"]),
        (uri, "deleted", second["hash"]),
    ]
    workspace = first["workspace_id"]
    for _, extra in events:
        assert extra["key_name"] == "tenant-a"
        assert extra["workspace_id"] == workspace
        assert extra["openrouter_conn_id"] == "openrouter_default"
    assert events[0][1]["plaintext_delivered_to"] == ["callable keep"]
    assert events[1][1]["replaced_key_hashes"] == [first["hash"]]
    assert events[2][1]["changed_fields"] == ["limit"]
    assert_no_plaintext(fake, run)


def test_a_rename_tells_both_names_assets(fake: LocalOpenRouter) -> None:
    key = fake.add_key(name="tenant-old")
    run = Run()
    UpdateApiKeyOperator(task_id="u", key_hash=key.hash, name="tenant-new").execute(run.context)
    assert [(uri, extra["key_name"], extra.get("renamed_to")) for uri, extra in run.events()] == [
        (key_uri("tenant-new"), "tenant-new", None),
        (key_uri("tenant-old"), "tenant-old", "tenant-new"),
    ]


def test_the_alias_and_connection_are_the_tasks(fake: LocalOpenRouter) -> None:
    key = fake.add_key(name="tenant-b")
    run = Run()
    DeleteApiKeyOperator(task_id="d", key_hash=key.hash, asset_alias="tenant_keys").execute(run.context)
    assert [uri for uri, _ in run.events("tenant_keys")] == [key_uri("tenant-b")]
    assert run.events() == []
    silent = Run()
    other = fake.add_key(name="tenant-c")
    DeleteApiKeyOperator(task_id="d", key_hash=other.hash, asset_alias=None).execute(silent.context)
    assert list(silent.outlet_events) == []


def test_execute_without_outlets_still_works(fake: LocalOpenRouter) -> None:
    result = CreateApiKeyOperator(task_id="c", name="tenant-d", deliver_to_callable=keep).execute({})
    assert result["action"] == "created"


# -------------------------------------------------------------------------------------- the sync ---


def test_the_sync_emits_one_event_per_key_it_changes(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-same", limit=5)
    drift = fake.add_key(name="t-drift", limit=5)
    gone = fake.add_key(name="t-gone")
    off = fake.add_key(name="t-off")
    rot = fake.add_key(name="t-rot")
    fake.add_key(name="other-untouched")
    tenants = [
        {"name": "t-new", "limit": 3},
        {"name": "t-same", "limit": 5},
        {"name": "t-drift", "limit": 7},
        {"name": "t-off", "disabled": True},
        {"name": "t-rot", "rotate": True},
    ]
    run = Run()
    op = SyncApiKeysOperator(
        task_id="s",
        tenants=tenants,
        name_prefix="t-",
        prune="delete",
        deliver_to_callable=keep,
        max_workers=4,
    )
    op.execute(run.context)
    keys = {k["name"]: k for k in fake.keys()}  # noqa: SIM118
    by_uri = dict(run.events())
    assert len(run.events()) == len(by_uri) == 5
    assert {uri: extra["action"] for uri, extra in by_uri.items()} == {
        key_uri("t-new"): "created",
        key_uri("t-drift"): "updated",
        key_uri("t-off"): "disabled",
        key_uri("t-gone"): "deleted",
        key_uri("t-rot"): "rotated",
    }
    assert by_uri[key_uri("t-new")]["key_hash"] == keys["t-new"]["hash"]
    assert by_uri[key_uri("t-drift")]["key_hash"] == drift.hash
    assert by_uri[key_uri("t-drift")]["changed_fields"] == ["limit"]
    assert by_uri[key_uri("t-off")]["key_hash"] == off.hash
    assert by_uri[key_uri("t-gone")]["key_hash"] == gone.hash
    assert by_uri[key_uri("t-rot")]["key_hash"] == keys["t-rot"]["hash"]
    assert by_uri[key_uri("t-rot")]["replaced_key_hashes"] == [rot.hash]
    assert_no_plaintext(fake, run)


def test_a_retired_keys_events_go_to_its_tenants_asset(fake: LocalOpenRouter) -> None:
    old = fake.add_key(name="t-r")
    SyncApiKeysOperator(
        task_id="s", tenants=[{"name": "t-r", "rotate": True}], name_prefix="t-", deliver_to_callable=keep
    ).execute(Run().context)
    run = Run()
    SyncApiKeysOperator(
        task_id="s", tenants=[{"name": "t-r"}], name_prefix="t-", rotation_overlap=0, rotation_grace=0
    ).execute(run.context)
    [(uri, extra)] = run.events()
    assert uri == key_uri("t-r")
    assert extra["key_hash"] == old.hash
    assert extra["action"] in ("disabled", "deleted")
    assert extra["retired"] is True
    assert extra["key_name"].startswith("t-r [retired ")


def test_a_plan_only_sync_emits_nothing(fake: LocalOpenRouter) -> None:
    fake.add_key(name="t-x")
    run = Run()
    SyncApiKeysOperator(task_id="s", tenants=[], name_prefix="t-", prune="delete", dry_run=True).execute(
        run.context
    )
    assert run.events() == []


# ------------------------------------------------------------------------------- in a real Airflow ---


@pytest.mark.airflow_db
def test_a_dag_run_records_an_event_per_new_key(airflow_instance: AirflowInstance, tmp_path: Path) -> None:
    """``airflow dags test`` of the provisioning example: Airflow records each task's events on its assets."""
    from airflow_provider_openrouter.testing import LocalOpenRouter

    dag_id = "example_openrouter_provision_tenants"
    with LocalOpenRouter() as fake:
        env = {**fake.airflow_env(), "OPENROUTER_EXAMPLE_SECRETS_DIR": str(tmp_path)}
        proc = airflow_instance.dags_test(dag_id, extra_env=env, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        keys = {key["hash"]: key for key in fake.keys(include_management=False)}
        plaintexts = list(fake.issued_plaintexts)
    [(run_id,)] = airflow_instance.query(
        "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
    )
    rows = airflow_instance.query(
        "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE e.source_dag_id = ? AND e.source_run_id = ?",
        (dag_id, run_id),
    )
    events = {json.loads(str(extra))["key_hash"]: (uri, json.loads(str(extra))) for uri, extra in rows}
    assert keys
    assert set(events) == set(keys)
    for key_hash, (uri, extra) in events.items():
        assert uri == key_uri(keys[key_hash]["name"])
        assert extra["action"] == "created"
        assert extra["workspace_id"] == keys[key_hash]["workspace_id"]
    aliases = airflow_instance.query("SELECT name FROM asset_alias")
    assert (DEFAULT_ASSET_ALIAS,) in aliases
    text = json.dumps(rows)
    assert not any(plaintext in text for plaintext in plaintexts)
