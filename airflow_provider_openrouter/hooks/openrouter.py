"""``OpenRouterHook``: OpenRouter's key-management API, one typed method per endpoint, sync and async.

The hook holds no per-call state: one hook may serve many calls (and threads making sync calls share its
connection pool). Each method builds its request with :mod:`airflow_provider_openrouter._endpoints` and runs
it through a transport (:mod:`airflow_provider_openrouter._transport`) whose retries
:mod:`airflow_provider_openrouter._retry` decides, the same way for both paths. An async method shares its
sync twin's signature (``_async_twin_of``) and body: both hand the same ``Call`` to their transport.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._sentinel import UNSET, Unset
from airflow_provider_openrouter.hooks._guardrails import GuardrailMethods

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter._endpoints import Call
    from airflow_provider_openrouter._retry import RateGate
    from airflow_provider_openrouter._transport import AsyncTransport, SyncTransport
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey, Credits, CurrentKey


T = TypeVar("T")
P = ParamSpec("P")
H = TypeVar("H")


def _async_twin_of(
    sync: Callable[Concatenate[H, P], T],
) -> Callable[[Callable[..., Coroutine[Any, Any, T]]], Callable[Concatenate[H, P], Coroutine[Any, Any, T]]]:
    """Give an async method taking ``**fields`` the signature of its sync twin, for type checkers and docs.

    The arguments are declared once, on the sync method; the async one passes them on as they came, and the
    request builder checks them (an unknown one is a ``TypeError``, as a call to the sync method would be).
    """

    def decorate(
        method: Callable[..., Coroutine[Any, Any, T]],
    ) -> Callable[Concatenate[H, P], Coroutine[Any, Any, T]]:
        method.__signature__ = inspect.signature(sync)  # type: ignore[attr-defined]
        method.__doc__ = method.__doc__ or f":meth:`{sync.__name__}` for an event loop."
        return method

    return decorate


class OpenRouterHook(GuardrailMethods, BaseHook):
    """Manage OpenRouter API keys with a management key.

    :param openrouter_conn_id: an ``openrouter`` connection: the management key as password, optionally the
        base URL as host, and extras for app attribution, timeout, retries and the default workspace.
    :param retry_jitter: replaces the function that spreads retry waits (``delay -> seconds``); for tests
        that need exact waits.

    Each method for one endpoint has an ``async`` twin for an event loop (a trigger's ``run``), with the
    same arguments, answers, errors and retries: ``aget_current_key``, ``aget_credits``, ``aget_key``,
    ``alist_keys`` (an async iterator), ``acreate_key``, ``aupdate_key`` and ``adelete_key``.
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
        self._gate = _new_gate()

    @classmethod
    def from_config(
        cls,
        config: OpenRouterConnectionConfig,
        *,
        retry_jitter: Callable[[float], float] | None = None,
    ) -> OpenRouterHook:
        """A hook on a connection already read and validated, which it never looks up again: for code that
        holds the connection already, or that tightens its settings first (``dataclasses.replace``), as the
        keys page does with the retry budget. ``openrouter_conn_id`` is ``config.conn_id``.

        A copy or an unpickled hook carries no configuration (it holds the key): it looks the connection up
        by that id, like any hook.
        """
        hook = cls(config.conn_id, retry_jitter=retry_jitter)
        hook._config = config
        return hook

    def __repr__(self) -> str:
        return f"{type(self).__name__}(openrouter_conn_id={self.openrouter_conn_id!r})"

    @property
    def rate_limit_pauses(self) -> int:
        """How many times the calls made through this hook (every thread and coroutine together) paused for
        a 429 so far."""
        return self._gate.pauses

    def __getstate__(self) -> dict[str, Any]:
        # Connection pools (sockets, locks) neither copy nor pickle, and the parsed connection holds the key:
        # a copy looks the connection up and opens its own pool on first use.
        state = self.__dict__.copy()
        state.update(_config=None, _sync=None, _async=None, _log=None, _gate=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._gate = _new_gate()

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
            # How Airflow's own providers run the sync getter from a trigger.
            from asgiref.sync import sync_to_async

            conn = await sync_to_async(self.get_connection)(self.openrouter_conn_id)
        return self._parse_config(conn)

    def _run(self, call: Call[T]) -> T:
        if self._sync is None:
            from airflow_provider_openrouter._retry import policy_for
            from airflow_provider_openrouter._transport import SyncTransport

            config = self._get_config()
            self._sync = SyncTransport(config, policy_for(config, self._retry_jitter), self._gate)
        return self._sync.call(call)

    async def _arun(self, call: Call[T]) -> T:
        if self._async is None:
            from airflow_provider_openrouter._retry import policy_for
            from airflow_provider_openrouter._transport import AsyncTransport

            config = await self._aget_config()
            self._async = AsyncTransport(config, policy_for(config, self._retry_jitter), self._gate)
        return await self._async.call(call)

    def close(self) -> None:
        """Close the sync methods' connection pool now; a later call opens a new one. (The async methods use
        their event loop's shared pool, which closes with the loop.)"""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -------------------------------------------------------------------------------------- reads ---

    def get_current_key(self) -> CurrentKey:
        """What OpenRouter says about the connection's own key (``GET /key``)."""
        from airflow_provider_openrouter._endpoints import get_current_key_call

        return self._run(get_current_key_call())

    async def aget_current_key(self) -> CurrentKey:
        """:meth:`get_current_key` for an event loop."""
        from airflow_provider_openrouter._endpoints import get_current_key_call

        return await self._arun(get_current_key_call())

    def get_credits(self) -> Credits:
        """The account's credits and total usage (``GET /credits``)."""
        from airflow_provider_openrouter._endpoints import get_credits_call

        return self._run(get_credits_call())

    async def aget_credits(self) -> Credits:
        """:meth:`get_credits` for an event loop."""
        from airflow_provider_openrouter._endpoints import get_credits_call

        return await self._arun(get_credits_call())

    def get_key(self, key_hash: str) -> ApiKey:
        """One key by its hash (``GET /keys/{hash}``); :class:`NotFoundError` if there is none."""
        from airflow_provider_openrouter._endpoints import get_key_call

        return self._run(get_key_call(key_hash))

    async def aget_key(self, key_hash: str) -> ApiKey:
        """:meth:`get_key` for an event loop."""
        from airflow_provider_openrouter._endpoints import get_key_call

        return await self._arun(get_key_call(key_hash))

    def list_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> Iterator[ApiKey]:
        """Every key of a workspace (the connection's default unless given), fetched 100 at a time as the
        caller iterates.

        The arguments are validated now; requests start with the iteration. Every key that exists for the
        whole walk is yielded exactly once, even while other writers create and delete keys (the walk notices
        the pages shifting and makes up for it); a key created or deleted during the walk may or may not be.

        A long walk keeps several pages in flight, never more than the connection's ``pages_in_flight``.
        The first two pages are asked for one at a time, as the caller wants more keys: a caller that stops
        within them (a check after a claim) sends nothing it does not read. From the third page on, the next
        pages are asked for while the caller works through the current one: one at first, then twice as many
        each time the walk has read as many pages as it had in flight, up to the bound. Memory holds those
        pages and the hashes reported. The list's length shows only in its last, short page, so past the end
        a long walk asks for at most ``pages_in_flight - 1`` empty pages; a caller that stops early waits for
        the pages in flight to come back, and sends none of those not yet sent.

        Every request passes the hook's rate gate: a 429 to any of them pauses every page in flight (and the
        hook's other calls) until the pause is over, then one request goes first and the others follow once
        it is not refused. The walk then goes on where it was, or fails with ``RateLimitedError`` as a single
        call would, when the pause outlasts the connection's ``max_retry_wait`` or ``max_retries``.
        """
        from airflow_provider_openrouter._endpoints import Listing

        listing = Listing(
            include_disabled=include_disabled, include_expired=include_expired, workspace_id=workspace_id
        )

        def walk() -> Iterator[ApiKey]:
            from collections import deque
            from concurrent.futures import Future, ThreadPoolExecutor

            config = self._get_config()
            listing.start(config.workspace_id, config.pages_in_flight)
            asked: deque[tuple[int, Future[list[ApiKey]]]] = deque()  # by offset, the next page first
            # Created once the walk proves long; from then on every page goes through it, so that requests
            # for pages a shift made useless still count against the bound until they end.
            pool: ThreadPoolExecutor | None = None
            try:
                while not listing.done:
                    if asked:
                        page = asked.popleft()[1].result()
                    elif pool is None:
                        page = self._run(listing.next_call())
                    else:
                        page = pool.submit(self._run, listing.next_call()).result()
                    fresh = listing.take(page)
                    del page
                    if not (listing.done or listing.expects([offset for offset, _ in asked])):
                        for _, future in asked:
                            future.cancel()
                        asked.clear()
                    wanted = listing.ahead()
                    if wanted:
                        pool = pool or ThreadPoolExecutor(
                            config.pages_in_flight, thread_name_prefix="openrouter-list"
                        )
                        for offset in wanted[len(asked) :]:
                            asked.append((offset, pool.submit(self._run, listing.call_at(offset))))
                    yield from fresh
            finally:
                if pool is not None:
                    # Past the end of the list, the pages asked for are let go out whatever the timing, so
                    # that walking a list sends the same requests every time; a caller that stops early
                    # sends none of those still waiting for a thread.
                    pool.shutdown(wait=True, cancel_futures=not listing.done)

        return walk()

    async def alist_keys(
        self,
        *,
        include_disabled: bool = False,
        include_expired: bool = False,
        workspace_id: str | None = None,
    ) -> AsyncIterator[ApiKey]:
        """:meth:`list_keys` for an event loop: ``async for key in hook.alist_keys(): ...``, with the same
        pages in flight, each a task of the loop."""
        import asyncio

        from airflow_provider_openrouter._endpoints import Listing

        listing = Listing(
            include_disabled=include_disabled, include_expired=include_expired, workspace_id=workspace_id
        )
        config = await self._aget_config()
        listing.start(config.workspace_id, config.pages_in_flight)
        # Cancelled tasks end at their next await; until then they hold their place in the bound.
        bound = asyncio.Semaphore(config.pages_in_flight)

        async def fetch(offset: int) -> list[ApiKey]:
            async with bound:
                return await self._arun(listing.call_at(offset))

        asked: list[tuple[int, asyncio.Task[list[ApiKey]]]] = []
        try:
            while not listing.done:
                if asked:
                    page = await asked.pop(0)[1]
                else:
                    page = await fetch(listing.offset)
                fresh = listing.take(page)
                del page
                if not listing.expects([offset for offset, _ in asked]):
                    for _, task in asked:
                        task.cancel()
                    await asyncio.gather(*(task for _, task in asked), return_exceptions=True)
                    asked.clear()
                for offset in listing.ahead()[len(asked) :]:
                    asked.append((offset, asyncio.ensure_future(fetch(offset))))
                for key in fresh:
                    yield key
        finally:
            for _, task in asked:
                task.cancel()
            await asyncio.gather(*(task for _, task in asked), return_exceptions=True)

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
        mask: bool = True,
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

        ``mask=False`` leaves masking to the caller, which must mask the plaintext before it can reach a log:
        a caller creating keys by the thousand masks them in one batch
        (:class:`~airflow_provider_openrouter.operators.sync.SyncApiKeysOperator` does), since each mask
        registration costs a round trip to the task supervisor.
        """
        given = _given(
            {
                "name": name,
                "limit": limit,
                "limit_reset": limit_reset,
                "include_byok_in_limit": include_byok_in_limit,
                "expires_at": expires_at,
                "workspace_id": workspace_id,
                "creator_user_id": creator_user_id,
            }
        )
        from airflow_provider_openrouter._endpoints import create_key_call

        created = self._run(create_key_call(given, self._get_config().workspace_id))
        if mask:
            from airflow.sdk.log import mask_secret

            mask_secret(created.plaintext)
        return created

    @_async_twin_of(create_key)
    async def acreate_key(self, name: str, **fields: Any) -> CreatedApiKey:
        """:meth:`create_key` for an event loop."""
        from airflow_provider_openrouter._endpoints import create_key_call

        mask = fields.pop("mask", True)

        call = create_key_call(_given({"name": name, **fields}), (await self._aget_config()).workspace_id)
        created = await self._arun(call)
        if not mask:
            return created
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
        given = _given(
            {
                "name": name,
                "disabled": disabled,
                "limit": limit,
                "limit_reset": limit_reset,
                "include_byok_in_limit": include_byok_in_limit,
                "workspace_id": workspace_id,
            }
        )
        from airflow_provider_openrouter._endpoints import update_key_call

        return self._run(update_key_call(key_hash, given))

    @_async_twin_of(update_key)
    async def aupdate_key(self, key_hash: str, **fields: Any) -> ApiKey:
        """:meth:`update_key` for an event loop."""
        from airflow_provider_openrouter._endpoints import update_key_call

        return await self._arun(update_key_call(key_hash, _given(fields)))

    def delete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        """Delete a key (``DELETE /keys/{hash}``): ``True`` if deleted, ``False`` if it was already gone and
        ``missing_ok`` (else :class:`NotFoundError`). A retry that finds the key gone after an attempt whose
        answer was lost counts as deleted."""
        from airflow_provider_openrouter._endpoints import delete_key_call

        return self._run(delete_key_call(key_hash, missing_ok=missing_ok))

    async def adelete_key(self, key_hash: str, *, missing_ok: bool = False) -> bool:
        """:meth:`delete_key` for an event loop."""
        from airflow_provider_openrouter._endpoints import delete_key_call

        return await self._arun(delete_key_call(key_hash, missing_ok=missing_ok))

    # ---------------------------------------------------------------------------- test connection ---

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with one ``GET /key`` (no retries) and say, in one line, what is wrong and how
        to fix it: an unusable field, a server that does not answer, a key OpenRouter refuses, or a key that
        is not a management key. Never raises."""
        from airflow_provider_openrouter._endpoints import get_current_key_call
        from airflow_provider_openrouter._redaction import redact
        from airflow_provider_openrouter._retry import RetryPolicy
        from airflow_provider_openrouter._transport import SyncTransport
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


def _new_gate() -> RateGate:
    """The hook's rate limit, shared by its sync and async calls: every thread and coroutine using the hook
    waits out a 429 that any of them got (see :class:`~airflow_provider_openrouter._retry.RateGate`)."""
    from airflow_provider_openrouter._retry import RateGate

    return RateGate()


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    """A write method's key fields as given, each of them one declared on
    :class:`~airflow_provider_openrouter.models.ApiKey` (the async twins take them as keywords).

    The methods' signatures are the typed surface of those fields (a test holds them to it); what a field may
    hold and where it goes is decided from that declaration.
    """
    from airflow_provider_openrouter.models import KEY_FIELDS

    fields = dict(arguments)
    unknown = sorted(set(fields) - set(KEY_FIELDS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    return fields
