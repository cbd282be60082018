"""``LocalOpenRouter``: the fake started in this process, with its test helpers."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter.models import ApiKey, CreatedApiKey
from airflow_provider_openrouter.testing._backend import Backend, RecordedRequest, RequestLog
from airflow_provider_openrouter.testing._server import serve
from airflow_provider_openrouter.testing._state import DEFAULT_CREATOR, DEFAULT_WORKSPACE_ID, OpenRouterState
from airflow_provider_openrouter.testing.faults import API_PREFIX, Fault, FaultPlan, FaultRule

if TYPE_CHECKING:
    import re
    from types import TracebackType

    from typing_extensions import Self

    from airflow_provider_openrouter.testing._http import HttpServer
    from airflow_provider_openrouter.testing.realism import Realism


class _Addressed(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def management_key(self) -> str: ...


class ServedFake:
    """What a fake started in this process and one started in a child process share: the ``with`` block that
    starts and stops it, and the Airflow connection to it in each form Airflow reads."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def connection_json(self: _Addressed, **extras: Any) -> str:
        """``AIRFLOW_CONN_...`` JSON for this fake; ``extras`` go to the connection's ``extra``."""
        return json.dumps(
            {
                "conn_type": "openrouter",
                "host": self.base_url,
                "password": self.management_key,
                "extra": extras,
            }
        )

    def connection_uri(self: _Addressed, *, conn_type: str = "openrouter", **extras: Any) -> str:
        """``AIRFLOW_CONN_...`` URI for this fake, in the form Airflow's ``Connection.get_uri`` produces.

        Airflow splits ``<conn_type>://<scheme>://...`` into the host's scheme and the rest; the rest (host,
        port and path) is percent-encoded as one host so that it comes back whole as ``Connection.host``.
        """
        scheme, _, rest = self.base_url.partition("://")
        uri = f"{conn_type}://{scheme}://:{quote(self.management_key, safe='')}@{quote(rest, safe='')}"
        if extras:
            uri += "/?" + urlencode({"__extra__": json.dumps(extras)})
        return uri

    def airflow_env(self: _Addressed, conn_id: str = DEFAULT_CONN_ID, **extras: Any) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": <connection JSON>}``, ready for ``os.environ`` or a subprocess."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": ServedFake.connection_json(self, **extras)}


class StateHelpers:
    """Keys put straight into a fake's state, and faults armed in it, whether the fake runs in this process or
    is driven over HTTP."""

    def inject(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Arm ``fault`` for the next ``times`` requests (``None``: all) matching ``method`` and ``path``.

        ``path`` is the API path with or without ``/api/v1``: exact (``"/keys"``), a prefix ending in ``*``
        (``"/keys/*"``) or a compiled regular expression matching the whole path.
        """
        self._arm(FaultRule(fault=fault, method=method, path=path, times=times))

    def _arm(self, rule: FaultRule) -> None:
        raise NotImplementedError

    def add_key(
        self,
        name: str,
        *,
        limit: float | None = None,
        limit_reset: str | None = None,
        include_byok_in_limit: bool = False,
        expires_at: dt.datetime | None = None,
        workspace_id: str | None = None,
        creator_user_id: str | None = DEFAULT_CREATOR,
        external_user: str | None = None,
        disabled: bool = False,
        management: bool = False,
    ) -> CreatedApiKey:
        """Insert a key directly (no API request, none logged, no API validation): e.g. an expired one."""
        options = {
            "name": name,
            "limit": limit,
            "limit_reset": limit_reset,
            "include_byok_in_limit": include_byok_in_limit,
            "expires_at": expires_at,
            "workspace_id": workspace_id,
            "creator_user_id": creator_user_id,
            "external_user": external_user,
            "disabled": disabled,
            "management": management,
        }
        data, plaintext = self._insert_key(options)
        return CreatedApiKey(api_key=ApiKey.from_api(data), plaintext=plaintext)

    def _insert_key(self, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Insert the key :meth:`add_key` describes: its API object and its plaintext."""
        raise NotImplementedError

    def seed_keys(self, count: int, *, prefix: str = "filler-") -> int:
        """Insert ``count`` filler keys named ``<prefix><index>`` (zero-padded, from 0), listed at once and
        stamped a microsecond apart just before now: an account of many pages, in one call. Returns ``count``.
        """
        raise NotImplementedError

    @property
    def realism(self) -> Realism:
        """The realism knobs in force."""
        raise NotImplementedError

    def set_realism(self, realism: Realism) -> None:
        """Change the realism knobs from now on (writes already on their way to the list keep their lag)."""
        raise NotImplementedError


class LocalOpenRouter(ServedFake, StateHelpers):
    """A stateful fake of OpenRouter's key-management API, served over real HTTP on loopback.

    ::

        with LocalOpenRouter() as fake:
            fake.base_url          # http://127.0.0.1:PORT/api/v1
            fake.management_key    # a management key it accepts

    ``port=0`` picks a free port. ``spend_per_second`` makes every usable regular key spend that many USD per
    (wall-clock) second, up to its limit, so that usage moves on its own as it does for a live account.
    ``realism`` makes it harder (list order and lag, commit gap, name limit): see
    :class:`~airflow_provider_openrouter.testing.Realism` and ``HARD``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        management_key: str | None = None,
        spend_per_second: float = 0.0,
        total_credits: float = 100.0,
        request_log_size: int = 100_000,
        realism: Realism | None = None,
    ) -> None:
        self._state = OpenRouterState(
            management_key=management_key,
            total_credits=total_credits,
            spend_per_second=spend_per_second,
            realism=realism,
        )
        self._faults = FaultPlan()
        self._log = RequestLog(request_log_size)
        self._backend = Backend(self._state, self._faults, self._log)
        self._host = host
        self._port = port
        self._server: HttpServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LocalOpenRouter:
        """Start serving on the host and port given (a free port for ``0``); does nothing if serving."""
        if self._server is None:
            self._server = serve(self._backend, self._host, self._port)
            self._backend.base_url = self.base_url
            self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; the state stays readable."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __repr__(self) -> str:
        where = self.root_url if self._server is not None else "not started"
        return f"LocalOpenRouter({where})"

    # -- addresses and Airflow connections -----------------------------------------------------------------

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (the control endpoints live under ``/_local``)."""
        if self._server is None:
            raise RuntimeError("LocalOpenRouter is not started")
        host, port = self._server.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API's base URL, ``http://HOST:PORT/api/v1``: what a connection's host holds."""
        return self.root_url + API_PREFIX

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalOpenRouter is not started")
        return self._server.address[1]

    @property
    def management_key(self) -> str:
        return self._state.management_key

    @property
    def default_workspace_id(self) -> str:
        return DEFAULT_WORKSPACE_ID

    # -- state helpers -------------------------------------------------------------------------------------

    def _insert_key(self, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return self._state.add_key(**options)

    def seed_keys(self, count: int, *, prefix: str = "filler-") -> int:
        return self._state.seed_keys(count, prefix)

    @property
    def realism(self) -> Realism:
        return self._state.realism

    def set_realism(self, realism: Realism) -> None:
        self._state.set_realism(realism)

    def add_usage(self, key_hash: str, usd: float, *, byok: bool = False) -> dict[str, Any]:
        """Record spend on a key: lifetime usage and the current day, week and month all grow by ``usd``."""
        return self._state.add_usage(key_hash, usd, byok=byok)

    def set_usage(self, key_hash: str, **values: float | dt.datetime | str | None) -> dict[str, Any]:
        """Set usage counters: ``usage``, ``usage_daily``/``_weekly``/``_monthly`` and ``byok_*``; and
        ``last_used_at`` (a datetime, an ISO instant, or ``None`` for a key never used)."""
        return self._state.set_usage(key_hash, values)

    def set_spend_per_second(self, usd: float) -> None:
        """Start (or stop, with 0) the simulated spend of every usable regular key."""
        self._state.set_spend_per_second(usd)

    @property
    def total_credits(self) -> float:
        return self._state.total_credits

    @total_credits.setter
    def total_credits(self, value: float) -> None:
        with self._state.lock:
            self._state.total_credits = float(value)

    # -- clock ---------------------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        """The fake's clock (UTC): real time shifted by :meth:`advance_clock` / :meth:`set_clock`."""
        return self._state.now()

    def advance_clock(self, delta: dt.timedelta | float) -> dt.datetime:
        """Move the clock forward (seconds or a timedelta): usage windows reset, keys expire."""
        if not isinstance(delta, dt.timedelta):
            delta = dt.timedelta(seconds=delta)
        return self._state.advance_clock(delta)

    def set_clock(self, moment: dt.datetime, *, frozen: bool = False) -> dt.datetime:
        """Set the clock; it keeps running from there unless ``frozen``."""
        return self._state.set_clock(moment, frozen=frozen)

    # -- inspection ----------------------------------------------------------------------------------------

    def keys(self, *, include_management: bool = False) -> list[dict[str, Any]]:
        """Every key held (disabled and expired too) as the API's Key object + ``management``."""
        return self._state.all_keys(include_management=include_management)

    def get_key_state(self, key_hash: str) -> dict[str, Any]:
        """One key as the API's Key object + ``management``; ``KeyError`` if there is none."""
        return self._state.key_state(key_hash)

    @property
    def awaiting_commit(self) -> int:
        """How many creates have arrived (and been stamped) but not committed yet: see ``commit_gap``."""
        return self._state.awaiting_commit

    def listed_hashes(self) -> list[str]:
        """The hashes ``GET /keys`` would show now, across workspaces, disabled and expired ones too: the keys
        whose create, and not yet whose delete, has reached the list."""
        return self._state.listed_hashes()

    def has_key(self, key_hash: str) -> bool:
        try:
            self._state.key_state(key_hash)
        except KeyError:
            return False
        return True

    @property
    def requests(self) -> list[RecordedRequest]:
        """The API requests served so far, oldest first (control endpoints are not recorded)."""
        return self._log.items()

    def clear_requests(self) -> None:
        self._log.clear()

    @property
    def issued_plaintexts(self) -> list[str]:
        """Every plaintext key the fake ever issued, the management key first: for leak audits."""
        return self._state.issued_plaintexts

    # -- faults --------------------------------------------------------------------------------------------

    def _arm(self, rule: FaultRule) -> None:
        self._faults.add(rule)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[FaultRule]:
        """The rules still armed."""
        return self._faults.rules()
