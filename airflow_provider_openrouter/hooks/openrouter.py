"""``OpenRouterHook``: OpenRouter's key-management API, one typed method per endpoint, sync and async.

The hook holds no per-call state: one hook may serve many calls (and threads making sync calls share its
connection pool). Requests, answers, errors and retries are decided in
:mod:`airflow_provider_openrouter._transport`, the same way for both paths.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_openrouter._sentinel import UNSET, Unset

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator, Callable, Iterator

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter._transport import AsyncTransport, Call, SyncTransport
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey, Credits, CurrentKey


class OpenRouterHook(BaseHook):
    """Manage OpenRouter API keys with a management key.

    :param openrouter_conn_id: an ``openrouter`` connection: the management key as password, optionally the
        base URL as host, and extras for app attribution, timeout, retries and the default workspace.
    :param retry_jitter: replaces the function that spreads retry waits (``delay -> seconds``); for tests
        that need exact waits.
    """

    conn_name_attr = "openrouter_conn_id"
    default_conn_name = "openrouter_default"
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

    # ------------------------------------------------------------------------------ connection form ---

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form for Airflow < 3.2 (later versions read ``conn-fields``)."""
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
        if getter is not None:  # Airflow >= 3.3
            conn = await getter(self.openrouter_conn_id)
        else:
            conn = await asyncio.to_thread(self.get_connection, self.openrouter_conn_id)
        return self._parse_config(conn)

    def _run(self, call: Call[Any]) -> Any:
        if self._sync is None:
            from airflow_provider_openrouter._transport import SyncTransport, policy_for

            config = self._get_config()
            self._sync = SyncTransport(config, policy_for(config, self._retry_jitter))
        return self._sync.call(call)

    async def _arun(self, call: Call[Any]) -> Any:
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
        from airflow_provider_openrouter import _transport

        return self._run(_transport.get_current_key_call())  # type: ignore[no-any-return]

    async def aget_current_key(self) -> CurrentKey:
        from airflow_provider_openrouter import _transport

        return await self._arun(_transport.get_current_key_call())  # type: ignore[no-any-return]

    def get_credits(self) -> Credits:
        """The account's credits and total usage (``GET /credits``)."""
        from airflow_provider_openrouter import _transport

        return self._run(_transport.get_credits_call())  # type: ignore[no-any-return]

    async def aget_credits(self) -> Credits:
        from airflow_provider_openrouter import _transport

        return await self._arun(_transport.get_credits_call())  # type: ignore[no-any-return]

    def get_key(self, key_hash: str) -> ApiKey:
        """One key by its hash (``GET /keys/{hash}``); :class:`NotFoundError` if there is none."""
        from airflow_provider_openrouter import _transport
        from airflow_provider_openrouter._validation import validate_key_hash

        return self._run(_transport.get_key_call(validate_key_hash(key_hash)))  # type: ignore[no-any-return]

    async def aget_key(self, key_hash: str) -> ApiKey:
        from airflow_provider_openrouter import _transport
        from airflow_provider_openrouter._validation import validate_key_hash

        return await self._arun(_transport.get_key_call(validate_key_hash(key_hash)))  # type: ignore[no-any-return]

    def _pages(
        self, include_disabled: bool, include_expired: bool, workspace_id: str | None
    ) -> Callable[[int], Call[list[ApiKey]]]:
        """Validate the listing's arguments (before any request) and return the page builder."""
        from airflow_provider_openrouter import _transport
        from airflow_provider_openrouter._validation import validate_bool, validate_workspace_id

        validate_bool(include_disabled, field="include_disabled")
        validate_bool(include_expired, field="include_expired")
        validate_workspace_id(workspace_id)

        def page(offset: int) -> Call[list[ApiKey]]:
            return _transport.list_page_call(
                offset,
                include_disabled=include_disabled,
                include_expired=include_expired,
                workspace_id=workspace_id or self._get_config().workspace_id,
            )

        return page

    def list_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> Iterator[ApiKey]:
        """Every key of a workspace, fetched a page (100 keys) at a time as the caller iterates.

        The arguments are validated now; requests start with the iteration. Keys created or deleted while the
        pages are walked may be missed or seen twice, as with any offset-paged listing.
        """
        from airflow_provider_openrouter._transport import PAGE_SIZE

        page_call = self._pages(include_disabled, include_expired, workspace_id)

        def walk() -> Iterator[ApiKey]:
            offset = 0
            while True:
                page: list[ApiKey] = self._run(page_call(offset))
                yield from page
                if len(page) < PAGE_SIZE:
                    return
                offset += PAGE_SIZE

        return walk()

    async def alist_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> AsyncIterator[ApiKey]:
        """:meth:`list_keys` for an event loop (``async for key in hook.alist_keys()``)."""
        from airflow_provider_openrouter._transport import PAGE_SIZE

        page_call = self._pages(include_disabled, include_expired, workspace_id)
        await self._aget_config()
        offset = 0
        while True:
            page: list[ApiKey] = await self._arun(page_call(offset))
            for key in page:
                yield key
            if len(page) < PAGE_SIZE:
                return
            offset += PAGE_SIZE

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

    def _create_body(
        self,
        *,
        name: str,
        limit: float | None,
        limit_reset: str | None,
        include_byok_in_limit: bool | None,
        expires_at: dt.datetime | str | None,
        workspace_id: str | None,
        creator_user_id: str | None,
    ) -> dict[str, Any]:
        from airflow_provider_openrouter import _validation as v
        from airflow_provider_openrouter.exceptions import OpenRouterValidationError

        body: dict[str, Any] = {"name": v.validate_name(name)}
        optional = {
            "limit": v.validate_limit(limit),
            "limit_reset": v.validate_limit_reset(limit_reset),
            "include_byok_in_limit": (
                None
                if include_byok_in_limit is None
                else v.validate_bool(include_byok_in_limit, field="include_byok_in_limit")
            ),
            "expires_at": v.validate_expires_at(expires_at),
            "workspace_id": v.validate_workspace_id(workspace_id),
        }
        if creator_user_id is not None and (
            not isinstance(creator_user_id, str) or not creator_user_id.strip()
        ):
            raise OpenRouterValidationError(
                "creator_user_id", f"must be a non-empty string (got {creator_user_id!r})"
            )
        optional["creator_user_id"] = creator_user_id
        body.update({field: value for field, value in optional.items() if value is not None})
        if "workspace_id" not in body and self._get_config().workspace_id:
            body["workspace_id"] = self._get_config().workspace_id
        return body

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

        Not retried once the request may have reached OpenRouter (a lost answer could mean two keys).
        """
        from airflow.sdk.log import mask_secret

        from airflow_provider_openrouter import _transport

        body = self._create_body(
            name=name,
            limit=limit,
            limit_reset=limit_reset,
            include_byok_in_limit=include_byok_in_limit,
            expires_at=expires_at,
            workspace_id=workspace_id,
            creator_user_id=creator_user_id,
        )
        created: CreatedApiKey = self._run(_transport.create_key_call(body))
        mask_secret(created.plaintext)
        return created

    def _update_body(self, fields: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_openrouter import _validation as v
        from airflow_provider_openrouter.exceptions import OpenRouterValidationError

        checks: dict[str, Callable[[Any], Any]] = {
            "name": v.validate_name,
            "disabled": lambda value: v.validate_bool(value, field="disabled"),
            "limit": v.validate_limit,
            "limit_reset": v.validate_limit_reset,
            "include_byok_in_limit": lambda value: v.validate_bool(value, field="include_byok_in_limit"),
            "workspace_id": self._moved_to,
        }
        body = {field: checks[field](value) for field, value in fields.items() if value is not UNSET}
        if not body:
            raise OpenRouterValidationError(
                "fields", f"name at least one field to change ({', '.join(checks)})"
            )
        return body

    @staticmethod
    def _moved_to(workspace_id: Any) -> str:
        from airflow_provider_openrouter._validation import validate_workspace_id
        from airflow_provider_openrouter.exceptions import OpenRouterValidationError

        if workspace_id is None:
            raise OpenRouterValidationError(
                "workspace_id", "must be a workspace UUID to move the key to (got None)"
            )
        return validate_workspace_id(workspace_id)  # type: ignore[return-value]

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

        ``limit=None`` removes the limit, ``limit_reset=None`` stops resets; an omitted field is left alone.
        """
        from airflow_provider_openrouter import _transport
        from airflow_provider_openrouter._validation import validate_key_hash

        validate_key_hash(key_hash)
        body = self._update_body(
            {
                "name": name,
                "disabled": disabled,
                "limit": limit,
                "limit_reset": limit_reset,
                "include_byok_in_limit": include_byok_in_limit,
                "workspace_id": workspace_id,
            }
        )
        return self._run(_transport.update_key_call(key_hash, body))  # type: ignore[no-any-return]

    def delete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        """Delete a key (``DELETE /keys/{hash}``). ``True`` if deleted; ``False`` if it was already gone and
        ``missing_ok`` (else :class:`NotFoundError`)."""
        from airflow_provider_openrouter import _transport
        from airflow_provider_openrouter._validation import validate_bool, validate_key_hash

        validate_key_hash(key_hash)
        validate_bool(missing_ok, field="missing_ok")
        return self._run(_transport.delete_key_call(key_hash, missing_ok=missing_ok))  # type: ignore[no-any-return]

    # ---------------------------------------------------------------------------- test connection ---

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with ``GET /key``. Never raises."""
        try:
            current = self.get_current_key()
        except Exception as exc:
            return False, f"OpenRouter connection failed: {exc}"
        finally:
            self._close()
        if not current.is_management_key:
            return False, (
                f"Connected, but the key ({current.label}) is a regular API key. Managing keys needs a "
                "management key: create one at https://openrouter.ai/settings/management-keys and put it in "
                "the password field."
            )
        return True, f"Connected to OpenRouter with management key {current.label}."
