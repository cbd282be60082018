"""The FastAPI app behind the "OpenRouter keys" page, mounted by the API server under ``/openrouter``.

Routes (relative to the mount):

- ``GET /``: picks a connection the user may read (``?conn=`` to choose) and redirects to its page;
- ``GET /connections/{connection_id}``: the page, rendered on the server (search, filter, sort, page
  through URL parameters ``q``, ``show``, ``guardrail``, ``sort``, ``order``, ``page``, ``size``;
  ``refresh=1`` refetches);
- ``GET /api/connections/{connection_id}/keys``: the same page of keys as JSON.

FastAPI apps added by plugins get no authentication from Airflow: every route here resolves the user with the
API server's own ``get_user`` (the JWT in the ``Authorization`` header or the UI's ``_token`` cookie) and
asks the auth manager whether that user may read the connection (Airflow's ``requires_access_connection``,
the check behind ``GET /api/v2/connections/{id}``). Anonymous requests get 401 (the page redirects to the
login page), users without the permission 403. Nothing leaves the server but key metadata: OpenRouter's
masked label, never a plaintext, and never the connection's management key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import jinja2
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
from airflow.api_fastapi.core_api.security import get_user, requires_access_connection
from fastapi import Depends, FastAPI, Request
from fastapi import Query as Param
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from airflow_provider_openrouter._usage import money
from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.plugins import PAGE_NAME
from airflow_provider_openrouter.plugins._keys_view import (
    CACHE_SECONDS,
    FILTERS,
    NEAR_LIMIT,
    PAGE_SIZES,
    SORTS,
    ConnectionNotUsable,
    Problem,
    Query,
    Snapshot,
    SnapshotCache,
    describe_problem,
    select,
)

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment

log = logging.getLogger(__name__)

CONN_TYPE = "openrouter"
DEFAULT_CONN_ID = OpenRouterHook.default_conn_name
# A person is waiting: at most one quick retry, whatever the connection allows a task.
PAGE_MAX_RETRIES = 1
PAGE_MAX_RETRY_WAIT = 2.0
PAGE_TIMEOUT = 15.0
# Guardrails held by keys but missing from the workspace's list (older than workspaces) are fetched one by
# one; past this many, the rest show by id only, so that one page load stays a few requests.
MAX_UNLISTED_GUARDRAILS = 10

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _page_hook(conn: Any) -> OpenRouterHook:
    """The hook on a connection already looked up, with the page's short retry budget."""
    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig

    config = OpenRouterConnectionConfig.from_connection(conn)
    return OpenRouterHook.from_config(
        dataclasses.replace(
            config,
            max_retries=min(config.max_retries, PAGE_MAX_RETRIES),
            max_retry_wait=min(config.max_retry_wait, PAGE_MAX_RETRY_WAIT),
            timeout=min(config.timeout, PAGE_TIMEOUT),
        )
    )


def _lookup(conn_id: str) -> Any:
    """The connection from wherever Airflow keeps it (metadata database, environment, secrets backend)."""
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined] # re-exported on 3.2+
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise ConnectionNotUsable(
            f"There is no connection {conn_id!r}.",
            hint="Create an OpenRouter connection under Admin → Connections, or pick another one.",
            status=404,
        ) from None
    if conn.conn_type != CONN_TYPE:
        raise ConnectionNotUsable(
            f"Connection {conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}.",
            hint="This page shows the keys of OpenRouter connections only: pick one of those.",
            status=400,
        )
    return conn


@dataclasses.dataclass(frozen=True, slots=True)
class _Guardrails:
    guardrails: list[Guardrail]
    assignments: list[KeyAssignment]
    problem: str | None = None


def _load_guardrails(hook: OpenRouterHook) -> _Guardrails:
    """One walk of the workspace's guardrails and one of the account's key assignments, whatever the number
    of keys; a guardrail some key holds but the list lacks is fetched by id. A refusal leaves the keys
    shown without guardrails, and says why."""
    from airflow_provider_openrouter.exceptions import (
        NotFoundError,
        OpenRouterAPIError,
        OpenRouterTransportError,
    )

    try:
        guardrails = list(hook.list_guardrails())
        assignments = list(hook.list_key_assignments())
        listed = {guardrail.id.lower() for guardrail in guardrails}
        unlisted = sorted({a.guardrail_id for a in assignments if a.guardrail_id.lower() not in listed})
        for guardrail_id in unlisted[:MAX_UNLISTED_GUARDRAILS]:
            # One deleted since the assignments were read is shown by id.
            with contextlib.suppress(NotFoundError):
                guardrails.append(hook.get_guardrail(guardrail_id))
    except OpenRouterAPIError as exc:
        return _Guardrails([], [], f"OpenRouter would not show the guardrails ({exc.status}: {exc.message})")
    except OpenRouterTransportError as exc:
        return _Guardrails([], [], f"The guardrails could not be read ({exc.detail})")
    return _Guardrails(guardrails, assignments)


def load_snapshot(conn_id: str) -> Snapshot:
    """Walk the account of ``conn_id``: its credits, then every key, disabled and expired ones included,
    while a second thread walks the guardrails and their key assignments."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_openrouter.exceptions import ForbiddenError

    started = time.perf_counter()
    hook = _page_hook(_lookup(conn_id))
    try:
        credits, credits_problem = None, None
        try:
            credits = hook.get_credits()
        except ForbiddenError as exc:  # keys can still be listed; say why the credits are missing
            credits_problem = f"OpenRouter would not show the credits ({exc.status}: {exc.message})"
        # Started after the first request, which sets up the hook's connection pool for both threads; beside
        # the key walk, so that the page waits for the longer walk rather than for both.
        with ThreadPoolExecutor(1, thread_name_prefix="openrouter-page-guardrails") as pool:
            pending = pool.submit(_load_guardrails, hook)
            keys = list(hook.list_keys(include_disabled=True, include_expired=True))
            held = pending.result()
        return Snapshot.of(
            conn_id,
            keys,
            credits,
            credits_problem=credits_problem,
            fetch_seconds=time.perf_counter() - started,
            guardrails=held.guardrails,
            assignments=held.assignments,
            guardrails_problem=held.problem,
        )
    finally:
        hook.close()


def _readable_conn_ids(user: BaseUser) -> list[str]:
    """``openrouter`` connections (in the metadata database, plus the default one wherever it is kept) that
    ``user`` may read."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select as sql_select

    with create_session() as session:
        conn_ids = set(
            session.scalars(sql_select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE))
        )
    if DEFAULT_CONN_ID not in conn_ids:
        try:
            _lookup(DEFAULT_CONN_ID)
            conn_ids.add(DEFAULT_CONN_ID)
        except ConnectionNotUsable:
            pass
    return [conn_id for conn_id in sorted(conn_ids) if _may_read(user, conn_id)]


def _may_read(user: BaseUser, conn_id: str) -> bool:
    return get_auth_manager().is_authorized_connection(
        method="GET", details=ConnectionDetails(conn_id=conn_id), user=user
    )


# ------------------------------------------------------------------------------------------- rendering ---


def _when(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "never"
    days = (moment - now).total_seconds() / 86400
    if abs(days) < 1:
        hours = round(abs(days) * 24)
        span = f"{hours} h" if hours else "minutes"
    else:
        span = f"{round(abs(days))} d"
    return f"in {span}" if days >= 0 else f"{span} ago"


def _percent(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio * 100:.0f} %"


def _bar_width(ratio: float | None) -> str:
    return "0" if ratio is None else f"{max(0.0, min(1.0, ratio)) * 100:.1f}"


_TEMPLATES.filters.update(money=money, percent=_percent, bar_width=_bar_width)


def _page_url(request: Request, conn_id: str, params: dict[str, str]) -> str:
    url = str(request.url_for("keys_page", connection_id=conn_id).path)
    return f"{url}?{urlencode(params)}" if params else url


def _render(
    request: Request,
    *,
    conn_id: str,
    conn_ids: list[str],
    query: Query,
    snapshot: Snapshot | None = None,
    problem: Problem | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    now = dt.datetime.now(dt.timezone.utc)
    selection = select(snapshot, query) if snapshot is not None else None

    def url(**changes: Any) -> str:
        return _page_url(request, conn_id, query.to_params(**changes))

    def sort_url(column: str) -> str:
        order = SORTS[column]
        if query.sort == column:
            order = "desc" if query.order == "asc" else "asc"
        return url(sort=column, order=order, page=1)

    html = _TEMPLATES.get_template("keys_page.html").render(
        title=PAGE_NAME,
        conn_id=conn_id,
        conn_ids=conn_ids if conn_id in conn_ids else [conn_id, *conn_ids],
        home=str(request.url_for("home").path),
        query=query,
        snapshot=snapshot,
        selection=selection,
        problem=problem,
        filters=FILTERS,
        page_sizes=PAGE_SIZES,
        near_limit=NEAR_LIMIT,
        cache_seconds=int(CACHE_SECONDS),
        url=url,
        sort_url=sort_url,
        when=lambda moment: _when(moment, now),
        now=now,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------------------------- app ---

_READ_CONNECTION = Depends(requires_access_connection("GET"))


def _query(  # noqa: PLR0917 (FastAPI reads each query parameter from its own argument)
    q: Annotated[str | None, Param()] = None,
    show: Annotated[str | None, Param()] = None,
    sort: Annotated[str | None, Param()] = None,
    order: Annotated[str | None, Param()] = None,
    page: Annotated[str | None, Param()] = None,
    size: Annotated[str | None, Param()] = None,
    guardrail: Annotated[str | None, Param()] = None,
) -> Query | OpenRouterValidationError:
    try:
        return Query.parse(
            search=q, show=show, sort=sort, order=order, page=page, size=size, guardrail=guardrail
        )
    except OpenRouterValidationError as exc:
        return exc


def create_app(cache: SnapshotCache | None = None) -> FastAPI:
    """The app; ``cache`` (by default a fresh one over :func:`load_snapshot`) holds each account's walk."""
    cache = cache or SnapshotCache(load_snapshot)
    app = FastAPI(title=PAGE_NAME, docs_url=None, redoc_url=None, openapi_url=None)
    api = FastAPI(title=f"{PAGE_NAME} API", docs_url=None, redoc_url=None, openapi_url=None)

    def snapshot_or_problem(conn_id: str, refresh: bool) -> Snapshot | Problem:
        try:
            return cache.get(conn_id, refresh=refresh)
        except Exception as exc:
            problem = describe_problem(exc, conn_id)
            if problem.status == 500:  # unexpected: the traceback is for whoever runs the server
                log.exception("Loading the keys of connection %r failed", conn_id)
            else:
                log.warning("Loading the keys of connection %r failed: %s", conn_id, problem.detail)
            return problem

    @app.exception_handler(HTTPException)
    async def page_auth_errors(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401:
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303)
        if exc.status_code == 403:
            problem = Problem(
                "You may not see this page",
                "Your Airflow account may not read this connection.",
                "Ask an Airflow admin for read access to the connection (on the simple auth manager: the Op "
                "or Admin role).",
                403,
            )
            conn_id = str(request.path_params.get("connection_id", ""))
            return _render(
                request, conn_id=conn_id, conn_ids=[], query=Query(), problem=problem, status_code=403
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/", name="home")
    def home(request: Request, user: Annotated[Any, Depends(get_user)], conn: str | None = None) -> Response:
        conn_ids = _readable_conn_ids(user)
        if conn:
            target = conn
        elif conn_ids:
            target = DEFAULT_CONN_ID if DEFAULT_CONN_ID in conn_ids else conn_ids[0]
        else:
            # Someone who may read connections in general is told there are none; anyone else, that they
            # may not, without learning whether any exist.
            may_read_any = get_auth_manager().is_authorized_connection(method="GET", user=user)
            problem = Problem(
                "No OpenRouter connection to show",
                "There is no OpenRouter connection that your Airflow account may read.",
                "Create one under Admin → Connections (type OpenRouter)."
                if may_read_any
                else "Ask an Airflow admin for read access to an OpenRouter connection (on the simple auth "
                "manager: the Op or Admin role).",
                404 if may_read_any else 403,
            )
            return _render(
                request, conn_id="", conn_ids=[], query=Query(), problem=problem, status_code=problem.status
            )
        return RedirectResponse(str(request.url_for("keys_page", connection_id=target).path), 303)

    @app.get("/connections/{connection_id}", name="keys_page", dependencies=[_READ_CONNECTION])
    def keys_page(
        request: Request,
        connection_id: str,
        user: Annotated[Any, Depends(get_user)],
        query: Annotated[Query | OpenRouterValidationError, Depends(_query)],
        refresh: bool = False,
    ) -> Response:
        conn_ids = _readable_conn_ids(user)
        if isinstance(query, OpenRouterValidationError):
            problem = Problem("This page address is not valid", str(query), "Start again from All keys.", 400)
            return _render(
                request,
                conn_id=connection_id,
                conn_ids=conn_ids,
                query=Query(),
                problem=problem,
                status_code=400,
            )
        found = snapshot_or_problem(connection_id, refresh)
        if isinstance(found, Problem):
            return _render(
                request,
                conn_id=connection_id,
                conn_ids=conn_ids,
                query=query,
                problem=found,
                status_code=found.status,
            )
        return _render(request, conn_id=connection_id, conn_ids=conn_ids, query=query, snapshot=found)

    @api.get("/connections/{connection_id}/keys", dependencies=[_READ_CONNECTION])
    def keys_json(
        connection_id: str,
        query: Annotated[Query | OpenRouterValidationError, Depends(_query)],
        refresh: bool = False,
    ) -> JSONResponse:
        if isinstance(query, OpenRouterValidationError):
            return JSONResponse({"detail": {"field": query.field, "message": str(query)}}, status_code=400)
        found = snapshot_or_problem(connection_id, refresh)
        if isinstance(found, Problem):
            return JSONResponse({"detail": found.to_dict()}, status_code=found.status)
        selection = select(found, query)
        credits = found.credits
        return JSONResponse(
            {
                "connection_id": connection_id,
                "fetched_at": found.fetched_at.isoformat().replace("+00:00", "Z"),
                "credits": None if credits is None else {**credits.to_dict(), "remaining": credits.remaining},
                "credits_problem": found.credits_problem,
                "guardrails_problem": found.guardrails_problem,
                "counts": found.counts,
                "guardrail_counts": found.guardrail_counts,
                "matched": selection.matched,
                "page": selection.page,
                "pages": selection.pages,
                "size": query.size,
                "keys": [row.to_dict() for row in selection.rows],
            },
            headers={"Cache-Control": "no-store"},
        )

    app.mount("/api", api)
    return app
