"""``OpenRouterHook``: OpenRouter's key-management API, one typed method per endpoint, sync and async.

The hook holds no per-call state: one hook may serve many calls (and threads making sync calls share its
connection pool). Requests, answers, errors and retries are decided in
:mod:`airflow_provider_openrouter._transport`, the same way for both paths.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._sentinel import UNSET, Unset

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator, Callable, Iterator

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter._transport import AsyncTransport, Call, SyncTransport
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey, Credits, CurrentKey


T = TypeVar("T")


class OpenRouterHook(BaseHook):
    """Manage OpenRouter API keys with a management key.

    :param openrouter_conn_id: an ``openrouter`` connection: the management key as password, optionally the
        base URL as host, and extras for app attribution, timeout, retries and the default workspace.
    :param retry_jitter: replaces the function that spreads retry waits (``delay -> seconds``); for tests
        that need exact waits.
    """

    conn_name_attr = "openrouter_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "openrouter"
    hook_name = "OpenRouter"

    def __init__(
        self,
        openrouter_conn_id: str = default_conn_name,
        *,
        retry_jitter: Callable[[float], float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.openrouter_conn_id = openrouter_conn_id
        self._retry_jitter = retry_jitter
        self._config: OpenRouterConnectionConfig | None = None
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(openrouter_conn_id={self.openrouter_conn_id!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Connection pools (sockets, locks) neither copy nor pickle, and the parsed connection holds the key:
        # a copy looks the connection up and opens its own pool on first use.
        state = self.__dict__.copy()
        state.update(_config=None, _sync=None, _async=None, _log=None)
        return state

    # ------------------------------------------------------------------------------ connection form ---

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form for Airflow 3.1 (3.2 and later read ``conn-fields``)."""
        from airflow_provider_openrouter._connection import connection_form_widgets

        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden and relabelled standard fields, from the same declaration as the provider info."""
        from airflow_provider_openrouter._connection import ui_field_behaviour

        return ui_field_behaviour()

    # ----------------------------------------------------------------------------------- plumbing ---

    def _parse_config(self, conn: Any) -> OpenRouterConnectionConfig:
        from airflow_provider_openrouter._connection import OpenRouterConnectionConfig

        self._config = OpenRouterConnectionConfig.from_connection(conn)
        return self._config

    def _get_config(self) -> OpenRouterConnectionConfig:
        """The validated connection, looked up once per hook."""
        return self._config or self._parse_config(self.get_connection(self.openrouter_conn_id))

    async def _aget_config(self) -> OpenRouterConnectionConfig:
        """:meth:`_get_config` without blocking the event loop."""
        if self._config is not None:
            return self._config
        getter = getattr(BaseHook, "aget_connection", None)
        if getter is not None:  # the SDK's async getter, where this Airflow has one
            conn = await getter(self.openrouter_conn_id)
        else:
            conn = await asyncio.to_thread(self.get_connection, self.openrouter_conn_id)
        return self._parse_config(conn)

    def _run(self, call: Call[T]) -> T:
        if self._sync is None:
            from airflow_provider_openrouter._transport import SyncTransport, policy_for

            config = self._get_config()
            self._sync = SyncTransport(config, policy_for(config, self._retry_jitter))
        return self._sync.call(call)

    async def _arun(self, call: Call[T]) -> T:
        if self._async is None:
            from airflow_provider_openrouter._transport import AsyncTransport, policy_for

            config = await self._aget_config()
            self._async = AsyncTransport(config, policy_for(config, self._retry_jitter))
        return await self._async.call(call)

    def _close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -------------------------------------------------------------------------------------- reads ---

    def get_current_key(self) -> CurrentKey:
        """What OpenRouter says about the connection's own key (``GET /key``)."""
        from airflow_provider_openrouter._transport import get_current_key_call

        return self._run(get_current_key_call())

    async def aget_current_key(self) -> CurrentKey:
        """:meth:`get_current_key` for an event loop."""
        from airflow_provider_openrouter._transport import get_current_key_call

        return await self._arun(get_current_key_call())

    def get_credits(self) -> Credits:
        """The account's credits and total usage (``GET /credits``)."""
        from airflow_provider_openrouter._transport import get_credits_call

        return self._run(get_credits_call())

    async def aget_credits(self) -> Credits:
        """:meth:`get_credits` for an event loop."""
        from airflow_provider_openrouter._transport import get_credits_call

        return await self._arun(get_credits_call())

    def get_key(self, key_hash: str) -> ApiKey:
        """One key by its hash (``GET /keys/{hash}``); :class:`NotFoundError` if there is none."""
        from airflow_provider_openrouter._transport import get_key_call

        return self._run(get_key_call(key_hash))

    async def aget_key(self, key_hash: str) -> ApiKey:
        """:meth:`get_key` for an event loop."""
        from airflow_provider_openrouter._transport import get_key_call

        return await self._arun(get_key_call(key_hash))

    def list_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> Iterator[ApiKey]:
        """Every key of a workspace (the connection's default unless given), fetched 100 at a time as the
        caller iterates: memory holds one page, however many keys there are.

        The arguments are validated now; requests start with the iteration. Every key that exists for the
        whole walk is yielded exactly once, even while other writers create and delete keys (the walk notices
        the pages shifting and makes up for it); a key created or deleted during the walk may or may not be.
        """
        from airflow_provider_openrouter._transport import Listing

        listing = Listing(
            include_disabled=include_disabled, include_expired=include_expired, workspace_id=workspace_id
        )

        def walk() -> Iterator[ApiKey]:
            listing.start(self._get_config().workspace_id)
            while not listing.done:
                yield from listing.take(self._run(listing.next_call()))

        return walk()

    async def alist_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> AsyncIterator[ApiKey]:
        """:meth:`list_keys` for an event loop: ``async for key in hook.alist_keys(): ...``."""
        from airflow_provider_openrouter._transport import Listing

        listing = Listing(
            include_disabled=include_disabled, include_expired=include_expired, workspace_id=workspace_id
        )
        listing.start((await self._aget_config()).workspace_id)
        while not listing.done:
            for key in listing.take(await self._arun(listing.next_call())):
                yield key

    def find_key_by_name(self, name: str, *, workspace_id: str | None = None) -> ApiKey | None:
        """The key named exactly ``name`` (disabled and expired keys included), or ``None``.

        Raises :class:`KeyNameNotUniqueError` when several keys carry the name: act on a hash then.
        """
        from airflow_provider_openrouter._validation import validate_name
        from airflow_provider_openrouter.exceptions import KeyNameNotUniqueError

        validate_name(name)
        keys = self.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace_id)
        matches = [key for key in keys if key.name == name]
        if len(matches) > 1:
            raise KeyNameNotUniqueError(name, [key.hash for key in matches])
        return matches[0] if matches else None

    # ------------------------------------------------------------------------------------- writes ---

    def create_key(
        self,
        name: str,
        *,
        limit: float | None = None,
        limit_reset: str | None = None,
        include_byok_in_limit: bool | None = None,
        expires_at: dt.datetime | str | None = None,
        workspace_id: str | None = None,
        creator_user_id: str | None = None,
    ) -> CreatedApiKey:
        """Create a key (``POST /keys``). Its plaintext is in the result this once, masked in Airflow's logs.

        ``name``: not blank, at most 255 characters, no control characters, not shaped like an API key.
        ``limit``: 0 to 1,000,000,000 USD, or ``None``. ``limit_reset``: ``"daily"``, ``"weekly"``,
        ``"monthly"`` or ``None``. ``expires_at`` (an aware datetime or ISO string, in the future) is sent as
        UTC with whole seconds; ``workspace_id`` (a UUID in any spelling, sent canonical) defaults to the
        connection's. ``""`` is refused everywhere: ``None`` means "not set". Every argument is checked
        before the request, with
        :class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError` naming it. Not retried once
        the request may have reached OpenRouter: a lost answer could otherwise mean two keys.
        """
        from airflow.sdk.log import mask_secret

        from airflow_provider_openrouter._transport import create_key_body, create_key_call

        body = create_key_body(
            name=name,
            limit=limit,
            limit_reset=limit_reset,
            include_byok_in_limit=include_byok_in_limit,
            expires_at=expires_at,
            workspace_id=workspace_id,
            creator_user_id=creator_user_id,
        )
        created = self._run(create_key_call(body, self._get_config().workspace_id))
        mask_secret(created.plaintext)
        return created

    async def acreate_key(
        self,
        name: str,
        *,
        limit: float | None = None,
        limit_reset: str | None = None,
        include_byok_in_limit: bool | None = None,
        expires_at: dt.datetime | str | None = None,
        workspace_id: str | None = None,
        creator_user_id: str | None = None,
    ) -> CreatedApiKey:
        """:meth:`create_key` for an event loop."""
        from airflow_provider_openrouter._transport import create_key_body, create_key_call

        body = create_key_body(
            name=name,
            limit=limit,
            limit_reset=limit_reset,
            include_byok_in_limit=include_byok_in_limit,
            expires_at=expires_at,
            workspace_id=workspace_id,
            creator_user_id=creator_user_id,
        )
        created = await self._arun(create_key_call(body, (await self._aget_config()).workspace_id))
        try:
            from airflow.sdk.log import amask_secret
        except ImportError:  # older Airflow (3.1) has only the sync one
            from airflow.sdk.log import mask_secret

            mask_secret(created.plaintext)
        else:
            await amask_secret(created.plaintext)
        return created

    def update_key(
        self,
        key_hash: str,
        *,
        name: str | Unset = UNSET,
        disabled: bool | Unset = UNSET,
        limit: float | Unset | None = UNSET,
        limit_reset: str | Unset | None = UNSET,
        include_byok_in_limit: bool | Unset = UNSET,
        workspace_id: str | Unset = UNSET,
    ) -> ApiKey:
        """Change a key (``PATCH /keys/{hash}``), sending only the fields named here.

        ``limit=None`` removes the limit, ``limit_reset=None`` stops resets; an omitted field is left alone,
        and ``""`` is refused. The values follow :meth:`create_key`'s rules; ``workspace_id`` (a UUID) moves
        the key to that workspace.
        """
        from airflow_provider_openrouter._transport import update_key_call

        changes = {
            "name": name,
            "disabled": disabled,
            "limit": limit,
            "limit_reset": limit_reset,
            "include_byok_in_limit": include_byok_in_limit,
            "workspace_id": workspace_id,
        }
        return self._run(update_key_call(key_hash, changes))

    async def aupdate_key(
        self,
        key_hash: str,
        *,
        name: str | Unset = UNSET,
        disabled: bool | Unset = UNSET,
        limit: float | Unset | None = UNSET,
        limit_reset: str | Unset | None = UNSET,
        include_byok_in_limit: bool | Unset = UNSET,
        workspace_id: str | Unset = UNSET,
    ) -> ApiKey:
        """:meth:`update_key` for an event loop."""
        from airflow_provider_openrouter._transport import update_key_call

        changes = {
            "name": name,
            "disabled": disabled,
            "limit": limit,
            "limit_reset": limit_reset,
            "include_byok_in_limit": include_byok_in_limit,
            "workspace_id": workspace_id,
        }
        return await self._arun(update_key_call(key_hash, changes))

    def delete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        """Delete a key (``DELETE /keys/{hash}``): ``True`` if deleted, ``False`` if it was already gone and
        ``missing_ok`` (else :class:`NotFoundError`). A retry that finds the key gone after an attempt whose
        answer was lost counts as deleted."""
        from airflow_provider_openrouter._transport import delete_key_call

        return self._run(delete_key_call(key_hash, missing_ok=missing_ok))

    async def adelete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        """:meth:`delete_key` for an event loop."""
        from airflow_provider_openrouter._transport import delete_key_call

        return await self._arun(delete_key_call(key_hash, missing_ok=missing_ok))

    # ---------------------------------------------------------------------------- test connection ---

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with one ``GET /key`` (no retries) and say, in one line, what is wrong and how
        to fix it: an unusable field, a server that does not answer, a key OpenRouter refuses, or a key that
        is not a management key. Never raises."""
        from airflow_provider_openrouter._redaction import redact
        from airflow_provider_openrouter._transport import RetryPolicy, SyncTransport, get_current_key_call
        from airflow_provider_openrouter.exceptions import (
            AuthenticationError,
            OpenRouterAPIError,
            OpenRouterConnectionConfigError,
            OpenRouterTransportError,
        )

        conn_id = self.openrouter_conn_id
        try:
            config = self._get_config()
        except OpenRouterConnectionConfigError as exc:
            return False, f"{exc}. Fix that field of the connection."
        except Exception as exc:
            return False, f"Connection {conn_id!r} cannot be read: {type(exc).__name__}: {redact(str(exc))}"
        # One attempt: a connection test reports what it sees rather than waiting out the retry policy.
        transport = SyncTransport(config, RetryPolicy(max_retries=0))
        try:
            current = transport.call(get_current_key_call())
        except OpenRouterTransportError as exc:
            return False, (
                f"Connection {conn_id!r} cannot work: nothing usable answers at {config.base_url} "
                f"({exc.detail}). Fix its Base URL (host; empty means https://openrouter.ai/api/v1) or start "
                "the server there."
            )
        except AuthenticationError as exc:
            return False, (
                f"Connection {conn_id!r} cannot work: OpenRouter at {config.base_url} refused its key "
                f"(401: {exc.message}). Put a valid management key in its password field."
            )
        except OpenRouterAPIError as exc:
            return False, (
                f"Connection {conn_id!r} cannot work: {config.base_url} answered {exc.status} "
                f"({exc.message}). Check that its Base URL points at OpenRouter's API (it ends in /api/v1)."
            )
        except Exception as exc:
            return False, f"Connection {conn_id!r} failed: {type(exc).__name__}: {redact(str(exc))}"
        finally:
            transport.close()
        if not current.is_management_key:
            return False, (
                f"Connection {conn_id!r} cannot manage keys: its key ({current.label}) is a regular API key. "
                "Create a management key at https://openrouter.ai/settings/management-keys and put it in the "
                "password field."
            )
        return True, f"Connected to OpenRouter with management key {current.label}."
