"""The local OpenRouter's guardrails are faithful: the official SDK's guardrail calls pass against it, and a
Prism proxy built from OpenRouter's spec (``openapi-guardrails.yaml``) finds no violation in what the hook,
the SDK and the fake send each other.

Prism runs on Node.js; it is installed once, pinned, into a cache directory (``OPENROUTER_PRISM_CACHE``,
default ``~/.cache/airflow-provider-openrouter``). Without Node.js and npm the Prism test fails and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from openrouter import OpenRouter, components, errors
from openrouter.utils.retries import BackoffStrategy, RetryConfig

from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_openrouter.testing import LocalOpenRouter

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "openrouter" / "openapi-guardrails.yaml"
PRISM_VERSION = "5.16.0"
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)
OTHER_WORKSPACE = "6f1f2d7e-3b9a-4c1e-9a53-0c5b1e2d3f40"
MISSING_ID = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
def fake(local_openrouter: LocalOpenRouter) -> LocalOpenRouter:
    return local_openrouter


def sdk_for(fake: LocalOpenRouter, server_url: str | None = None, key: str | None = None) -> OpenRouter:
    return OpenRouter(
        api_key=key or fake.management_key, server_url=server_url or fake.base_url, retry_config=NO_RETRIES
    )


def expect_sdk_error(kind: type[Exception], call: Callable[[], object]) -> None:
    with pytest.raises(kind):
        call()


# -- the official SDK ----------------------------------------------------------------------------------------


def sdk_guardrail_calls(fake: LocalOpenRouter, client: OpenRouter) -> None:
    """Every guardrail call of the SDK (create, get, list, update, bulk assign, both assignment lists, bulk
    unassign, delete), checking what each one read back, and its typed errors."""
    keys = [fake.add_key(f"tenant-{i}").hash for i in range(3)]
    api = client.guardrails
    created = api.create(
        name="tier-silver",
        description="Silver tenants",
        limit_usd=1.0,
        reset_interval="daily",
        allowed_models=["openai/gpt-4o-mini"],
        ignored_providers=["azure"],
        enforce_zdr_anthropic=True,
        content_filter_builtins=[components.ContentFilterBuiltinEntryInput(slug="email", action="redact")],
        content_filters=[
            components.ContentFilterEntry(pattern=r"\bACME-[0-9]{6}\b", action="block", label="[ACME]")
        ],
    ).data
    assert (created.name, created.limit_usd, created.reset_interval) == ("tier-silver", 1.0, "daily")
    assert created.workspace_id == fake.default_workspace_id
    assert isinstance(created.content_filter_builtins, list)
    assert created.content_filter_builtins[0].label == "[EMAIL]"
    gid = created.id

    fetched = api.get(id=gid).data
    assert fetched.allowed_models == ["openai/gpt-4o-mini"]
    assert fetched.updated_at is None

    listed = api.list()
    assert listed is not None
    assert [g.id for g in listed.result.data] == [gid]
    assert listed.result.total_count == 1

    updated = api.update(id=gid, name="tier-silver-2", allowed_models=["anthropic/claude-sonnet-4"]).data
    assert updated.name == "tier-silver-2"
    assert updated.allowed_models == ["anthropic/claude-sonnet-4"]
    assert updated.ignored_providers == ["azure"]
    assert updated.updated_at is not None

    assert api.bulk_assign_keys(id=gid, key_hashes=keys).assigned_count == 3
    mine = api.list_guardrail_key_assignments(id=gid)
    assert mine is not None
    assert {a.key_hash for a in mine.result.data} == set(keys)
    assert mine.result.total_count == 3
    everyone = api.list_key_assignments()
    assert everyone is not None
    assert {(a.key_hash, a.guardrail_id) for a in everyone.result.data} == {(k, gid) for k in keys}

    assert api.bulk_unassign_keys(id=gid, key_hashes=keys[:2]).unassigned_count == 2
    remaining = api.list_key_assignments()
    assert remaining is not None
    assert [a.key_hash for a in remaining.result.data] == keys[2:]

    assert api.delete(id=gid).DELETED is True
    emptied = api.list_key_assignments()
    assert emptied is not None
    assert emptied.result.data == []

    expect_sdk_error(errors.NotFoundResponseError, lambda: api.get(id=gid))
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.update(id=gid, name="x"))
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.delete(id=gid))
    expect_sdk_error(errors.NotFoundResponseError, lambda: api.bulk_assign_keys(id=gid, key_hashes=keys))
    expect_sdk_error(errors.BadRequestResponseError, lambda: api.create(name="half", limit_usd=5.0))


def test_sdk_guardrail_calls_pass(fake: LocalOpenRouter) -> None:
    with sdk_for(fake) as client:
        sdk_guardrail_calls(fake, client)
    # The SDK sends offset and limit on every list; the fake read them.
    lists = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/guardrails")]
    assert lists[0].query == {"offset": "0", "limit": "50"}


def test_sdk_pages_through_guardrails(fake: LocalOpenRouter) -> None:
    with sdk_for(fake) as client:
        made = [client.guardrails.create(name=f"g-{i:03d}").data.id for i in range(120)]
        page = client.guardrails.list(limit=50)
        seen: list[str] = []
        while page is not None:
            assert page.result.total_count == 120
            seen += [g.id for g in page.result.data]
            page = page.next()
    assert seen == made


def test_sdk_reads_errors_of_a_regular_key(fake: LocalOpenRouter) -> None:
    regular = fake.add_key("tenant")
    with sdk_for(fake, key=regular.plaintext) as client:
        expect_sdk_error(errors.ForbiddenResponseError, lambda: client.guardrails.create(name="nope"))
    with sdk_for(fake, key="sk-or-v1-" + "9" * 64) as client:
        expect_sdk_error(errors.UnauthorizedResponseError, client.guardrails.list)


# -- Prism ---------------------------------------------------------------------------------------------------


def prism_executable() -> Path:
    """Prism, installed into the cache on first use with npm; a clear failure when Node.js is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "The Prism contract test needs Node.js (18 or later) and npm on PATH to install "
            f"@stoplight/prism-cli@{PRISM_VERSION}; neither skip nor pass without it. Install Node.js "
            "(https://nodejs.org or the distribution's nodejs and npm packages) and run the test again."
        )
    base = Path(
        os.environ.get("OPENROUTER_PRISM_CACHE") or Path.home() / ".cache" / "airflow-provider-openrouter"
    )
    prefix = base / f"prism-{PRISM_VERSION}"
    executable = prefix / "node_modules" / ".bin" / "prism"
    if not executable.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--save-exact",
                f"@stoplight/prism-cli@{PRISM_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0 or not executable.exists():
            pytest.fail(f"npm could not install Prism {PRISM_VERSION} into {prefix}:\n{done.stderr[-3000:]}")
    return executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def prism(fake: LocalOpenRouter, tmp_path: Path) -> Iterator[str]:
    """A Prism proxy in front of the fake, validating every request and answer against the spec; its URL.

    Prism matches paths without the spec's server path (``/api/v1``), so its URL is a bare root.
    """
    if not SPEC.is_file():
        pytest.skip(f"the OpenAPI spec beside the clone is missing ({SPEC}); the contract test needs it")
    executable = prism_executable()
    port = _free_port()
    log = (tmp_path / "prism.log").open("w")
    process = subprocess.Popen(
        [
            str(executable),
            "proxy",
            str(SPEC),
            fake.base_url,
            "--errors",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/guardrails", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"Prism did not start:\n{(tmp_path / 'prism.log').read_text()[-3000:]}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Checked:
    """Raw requests through Prism: each answer must have the expected status and carry no violation."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.problems: list[str] = []

    def __call__(self, method: str, path: str, expect: int, body: Any = None, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = self.session.request(method, self.url + path, json=body, headers=headers, timeout=30)
        violations = answer.headers.get("sl-violations")
        if answer.status_code != expect or violations:
            self.problems.append(
                f"{method} {path}: {answer.status_code} (expected {expect}) {violations or answer.text[:500]}"
            )
        return answer.json() if answer.content else None


def test_prism_finds_no_violation(fake: LocalOpenRouter, prism: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook through Prism: with --errors, a request or an answer off the spec comes back as Prism's own
    # 422 or 500, which fails the call.
    connection = {"conn_type": "openrouter", "host": prism + "/", "password": fake.management_key}
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps({**connection, "extra": {"max_retries": 0}})
    )
    hook = OpenRouterHook()
    keys = [fake.add_key(f"tenant-{i}").hash for i in range(3)]
    tier = hook.create_guardrail(
        "tier",
        limit_usd=2,
        reset_interval="weekly",
        allowed_models=["openai/gpt-4o"],
        allowed_data_regions=["europe"],
        content_filter_builtins=[
            {"slug": "regex-prompt-injection", "action": "flag", "scan_scope": "user_only"}
        ],
    )
    hook.update_guardrail(
        tier.id, description="two windows", allowed_providers=["openai"], limit_usd=None, reset_interval=None
    )
    assert [g.id for g in hook.list_guardrails()] == [tier.id]
    assert hook.assign_keys_to_guardrail(tier.id, keys) == 3
    assert len(list(hook.list_guardrail_key_assignments(tier.id))) == 3
    assert len(list(hook.list_key_assignments())) == 3
    assert hook.unassign_keys_from_guardrail(tier.id, keys) == 3
    assert hook.delete_guardrail(tier.id) is True
    assert hook.delete_guardrail(tier.id, missing_ok=True) is False
    hook.close()

    # The official SDK through Prism.
    with sdk_for(fake, server_url=prism) as client:
        sdk_guardrail_calls(fake, client)

    # Every documented error status the fake gives, checked for its shape; each answer carries no violation.
    call = Checked(prism, fake.management_key)
    regular = fake.add_key("regular").plaintext
    key = fake.add_key("tenant").hash
    elsewhere = fake.add_key("elsewhere", workspace_id=OTHER_WORKSPACE).hash
    gid = call("POST", "/guardrails", 201, {"name": "g", "limit_usd": 1, "reset_interval": "monthly"})[
        "data"
    ]["id"]
    call("GET", "/guardrails?offset=0&limit=100", 200)
    call("GET", f"/guardrails?workspace_id={OTHER_WORKSPACE}", 200)
    call("POST", "/guardrails", 400, {"name": "half", "limit_usd": 1})
    call("POST", "/guardrails", 403, {"name": "nope"}, key=regular)
    call("POST", "/guardrails", 401, {"name": "nope"}, key="sk-or-v1-" + "9" * 64)
    call("GET", "/guardrails", 401, key="sk-or-v1-" + "9" * 64)
    call("PATCH", f"/guardrails/{gid}", 400, {"reset_interval": None})
    call("PATCH", f"/guardrails/{gid}", 400, {"workspace_id": OTHER_WORKSPACE})
    call("PATCH", f"/guardrails/{MISSING_ID}", 404, {"name": "x"})
    call("GET", f"/guardrails/{MISSING_ID}", 404)
    call("DELETE", f"/guardrails/{MISSING_ID}", 404)
    call("POST", f"/guardrails/{gid}/assignments/keys", 400, {"key_hashes": [elsewhere]})
    call("POST", f"/guardrails/{MISSING_ID}/assignments/keys", 404, {"key_hashes": [key]})
    call("POST", f"/guardrails/{gid}/assignments/keys", 200, {"key_hashes": [key]})
    call("GET", f"/guardrails/{gid}/assignments/keys?offset=0&limit=1", 200)
    call("GET", f"/guardrails/{MISSING_ID}/assignments/keys", 404)
    call("GET", "/guardrails/assignments/keys?limit=1", 200)
    call("POST", f"/guardrails/{MISSING_ID}/assignments/keys/remove", 404, {"key_hashes": [key]})
    call("POST", f"/guardrails/{gid}/assignments/keys/remove", 200, {"key_hashes": [key]})
    call("DELETE", f"/guardrails/{gid}", 200)
    assert call.problems == []
    # Everything reached the fake: Prism answered nothing itself.
    assert any(r.path.endswith("/assignments/keys/remove") for r in fake.requests)
