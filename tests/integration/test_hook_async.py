"""The hook's async methods (what triggers use): same answers, errors and validation as the sync ones, one
shared ``aiohttp`` session per event loop, closed cleanly when the loop ends."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import warnings
from typing import TYPE_CHECKING

import pytest

from airflow_provider_openrouter import _transport
from airflow_provider_openrouter.exceptions import NotFoundError, OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.models import ApiKey, CreatedApiKey, Credits, CurrentKey

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing import LocalOpenRouter
    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    return openrouter_connection(max_retries=1, max_retry_wait=0, app_title="Async")


# Public API: users call these from their own triggers, so each is kept in step with its sync twin.
ASYNC_TWINS = [
    ("get_current_key", "aget_current_key"),
    ("get_credits", "aget_credits"),
    ("get_key", "aget_key"),
    ("list_keys", "alist_keys"),
    ("create_key", "acreate_key"),
    ("update_key", "aupdate_key"),
    ("delete_key", "adelete_key"),
]


@pytest.mark.parametrize(("sync_name", "async_name"), ASYNC_TWINS, ids=[pair[1] for pair in ASYNC_TWINS])
def test_each_async_twin_takes_its_sync_twins_arguments_and_is_documented(
    sync_name: str, async_name: str
) -> None:
    sync, twin = getattr(OpenRouterHook, sync_name), getattr(OpenRouterHook, async_name)
    assert list(inspect.signature(twin).parameters.values()) == list(
        inspect.signature(sync).parameters.values()
    )
    assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin)
    assert f"``{async_name}``" in (OpenRouterHook.__doc__ or "")


async def test_async_reads(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    key = fake.add_key("tenant", limit=3)
    current = await hook.aget_current_key()
    assert isinstance(current, CurrentKey)
    assert current.is_management_key
    credits = await hook.aget_credits()
    assert isinstance(credits, Credits)
    got = await hook.aget_key(key.hash)
    assert isinstance(got, ApiKey)
    assert (got.name, got.limit) == ("tenant", 3.0)
    request = fake.requests[-1]
    assert request.headers["User-Agent"].startswith("airflow-provider-openrouter/")
    assert request.headers["X-OpenRouter-Title"] == "Async"


async def test_async_list_walks_every_page(fake: LocalOpenRouter) -> None:
    made = {fake.add_key(f"tenant-{i:03d}").hash for i in range(250)}
    seen = [key.hash async for key in OpenRouterHook().alist_keys()]
    assert set(seen) == made
    assert len(seen) == 250
    assert [r.query.get("offset", "0") for r in fake.requests] == ["0", "99", "198"]


async def test_async_writes(fake: LocalOpenRouter) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    hook = OpenRouterHook()
    created = await hook.acreate_key("async-made", limit=2, limit_reset="weekly")
    assert isinstance(created, CreatedApiKey)
    assert fake.requests[-1].body == {"name": "async-made", "limit": 2.0, "limit_reset": "weekly"}
    assert created.plaintext not in str(redact(created.plaintext))
    updated = await hook.aupdate_key(created.hash, limit=None)
    assert fake.requests[-1].body == {"limit": None}
    assert updated.limit is None
    assert await hook.adelete_key(created.hash) is True
    assert await hook.adelete_key(created.hash, missing_ok=True) is False
    with pytest.raises(NotFoundError) as exc:
        await hook.aget_key(created.hash)
    assert (exc.value.status, exc.value.method, exc.value.path) == (404, "GET", f"/keys/{created.hash}")


async def test_async_validation_comes_first(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    with pytest.raises(OpenRouterValidationError) as exc:
        await hook.aget_key("nope")
    assert exc.value.field == "key_hash"
    with pytest.raises(OpenRouterValidationError) as exc:
        await hook.acreate_key("x", limit=-1)
    assert exc.value.field == "limit"
    with pytest.raises(OpenRouterValidationError) as exc:
        await hook.aupdate_key("a" * 64)
    assert exc.value.field == "fields"
    with pytest.raises(OpenRouterValidationError) as exc:
        async for _ in hook.alist_keys(workspace_id="nope"):
            pass
    assert exc.value.field == "workspace_id"
    assert fake.requests == []


async def test_many_hooks_in_one_loop_share_one_session(fake: LocalOpenRouter) -> None:
    key = fake.add_key("shared")
    hooks = [OpenRouterHook() for _ in range(200)]
    names = await asyncio.gather(*(hook.aget_key(key.hash) for hook in hooks))
    assert {k.name for k in names} == {"shared"}
    sessions = _transport._SHARED[asyncio.get_running_loop()]
    assert len(sessions) == 1  # one pool for every hook talking to this base URL


async def test_async_connection_lookup_does_not_block(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocking_lookup(conn_id: str) -> None:
        raise AssertionError("the sync connection getter must not run inside the event loop")

    monkeypatch.setattr(
        OpenRouterHook, "get_connection", classmethod(lambda cls, conn_id: blocking_lookup(conn_id))
    )
    assert (await OpenRouterHook().aget_current_key()).is_management_key


async def test_async_lookup_without_aget_connection(
    fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 3.1 has no async getter: the sync one then runs in a worker thread.
    from airflow.sdk import BaseHook

    monkeypatch.delattr(BaseHook, "aget_connection")
    assert (await OpenRouterHook().aget_current_key()).is_management_key


def test_session_is_closed_when_the_loop_ends(
    fake: LocalOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    sessions = []

    async def run() -> None:
        await asyncio.gather(*(OpenRouterHook().aget_current_key() for _ in range(5)))
        loop = asyncio.get_running_loop()
        sessions.extend(entry.session for entry in _transport._SHARED[loop].values())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(run())
        asyncio.run(run())  # a new loop gets a new session
        gc.collect()
    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]
    assert all(session.closed for session in sessions)
    assert not [w for w in caught if "Unclosed" in str(w.message)]
    assert "Unclosed" not in caplog.text


async def test_sessions_can_be_closed_explicitly(fake: LocalOpenRouter) -> None:
    await OpenRouterHook().aget_current_key()
    loop = asyncio.get_running_loop()
    [entry] = _transport._SHARED[loop].values()
    await _transport.aclose_shared_sessions()
    assert entry.session.closed
    assert loop not in _transport._SHARED
    assert (await OpenRouterHook().aget_current_key()).is_management_key  # a fresh one is made on demand
