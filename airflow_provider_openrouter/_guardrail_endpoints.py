"""The guardrail endpoints, free of I/O: what each request sends and how its answer is read.

Built like :mod:`airflow_provider_openrouter._endpoints`, whose
:class:`~airflow_provider_openrouter._endpoints.Call` they return; every argument is checked (by
:mod:`airflow_provider_openrouter._guardrail_validation`) when the call is built, before any request.

Paging: the lists take ``offset`` and ``limit`` (at most 100) and answer a ``total_count``. The order of their
items is not documented, so a walk that must not miss an item under concurrent writers re-reads: see
:class:`Pages`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

from airflow_provider_openrouter import _guardrail_validation as gv
from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._endpoints import Call, Malformed, delete_call
from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

T = TypeVar("T")

#: Items per list request: the most the API gives.
PAGE_LIMIT: Final = 100
#: Keys per assign or unassign request. OpenRouter documents no maximum; a bigger list goes in several
#: requests, each one of them safe to repeat.
ASSIGN_CHUNK: Final = 100


def _path(guardrail_id: Any, suffix: str = "") -> str:
    return "/guardrails/" + quote(gv.validate_guardrail_id(guardrail_id), safe="") + suffix


def _data_object(doc: Any) -> Any:
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise Malformed("the answer has no 'data' object")
    return data


def _parse_guardrail(doc: Any) -> Guardrail:
    return Guardrail.from_api(_data_object(doc))


def _page_parser(read: Callable[[Mapping[str, Any]], T]) -> Callable[[Any], tuple[list[T], int]]:
    def parse(doc: Any) -> tuple[list[T], int]:
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise Malformed("'data' is not a list of objects")
        total = doc.get("total_count")
        if isinstance(total, bool) or not isinstance(total, int):
            raise Malformed("the answer has no integer 'total_count'")
        return [read(item) for item in data], total

    return parse


def _count(name: str) -> Callable[[Any], int]:
    def parse(doc: Any) -> int:
        count = doc.get(name) if isinstance(doc, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise Malformed(f"the answer has no integer {name!r}")
        return count

    return parse


def _parse_deleted(doc: Any) -> bool:
    # The SDK lets the answer leave ``deleted`` out; present, it must be true.
    if not isinstance(doc, dict) or doc.get("deleted", True) is not True:
        raise Malformed("the answer does not say 'deleted': true")
    return True


def get_guardrail_call(guardrail_id: Any) -> Call[Guardrail]:
    return Call("GET", _path(guardrail_id), _parse_guardrail)


def create_guardrail_call(
    name: Any, settings: Mapping[str, Any], *, workspace_id: Any, default_workspace: str | None
) -> Call[Guardrail]:
    """``POST /guardrails``; the guardrail goes to ``default_workspace`` (the connection's) unless one is
    given. POST: not repeated once it may have reached OpenRouter, which has no idempotency key."""
    body = gv.guardrail_body(settings, name=name, workspace_id=workspace_id)
    if default_workspace and "workspace_id" not in body:
        body["workspace_id"] = default_workspace
    return Call("POST", "/guardrails", _parse_guardrail, body=body)


def update_guardrail_call(guardrail_id: Any, settings: Mapping[str, Any], *, name: Any) -> Call[Guardrail]:
    """``PATCH /guardrails/{id}`` with only the settings given."""
    path = _path(guardrail_id)
    body = gv.guardrail_body(settings, name=name, update=True)
    if not body:
        v.fail("settings", "name at least one setting to change (name or a guardrail setting)")
    return Call("PATCH", path, _parse_guardrail, body=body)


def delete_guardrail_call(guardrail_id: Any, *, missing_ok: Any) -> Call[bool]:
    return delete_call(_path(guardrail_id), missing_ok=missing_ok, parse=_parse_deleted)


def assign_keys_calls(guardrail_id: Any, key_hashes: Any) -> list[Call[int]]:
    """``POST /guardrails/{id}/assignments/keys``, :data:`ASSIGN_CHUNK` keys per request."""
    return _assignment_calls(_path(guardrail_id, "/assignments/keys"), key_hashes, "assigned_count")


def unassign_keys_calls(guardrail_id: Any, key_hashes: Any) -> list[Call[int]]:
    """``POST /guardrails/{id}/assignments/keys/remove``, :data:`ASSIGN_CHUNK` keys per request."""
    return _assignment_calls(_path(guardrail_id, "/assignments/keys/remove"), key_hashes, "unassigned_count")


def _assignment_calls(path: str, key_hashes: Any, counted: str) -> list[Call[int]]:
    hashes = gv.validate_key_hashes(key_hashes)
    return [
        Call(
            "POST",
            path,
            _count(counted),
            body={"key_hashes": hashes[i : i + ASSIGN_CHUNK]},
            repeatable=True,  # a key already on (or off) the guardrail stays so
        )
        for i in range(0, len(hashes), ASSIGN_CHUNK)
    ]


class Pages:
    """The pages of one offset-paged guardrail list; the arguments are validated on creation.

    OpenRouter does not document the lists' order, so nothing keeps an item in its place while others are
    created or deleted. The walk asks for ``offset += len(page)`` and stops at a page shorter than the
    limit (as the official SDK does) or once ``total_count`` items have been read; items are reported once
    by id. When the total changes between pages, items may have moved under the walk: it reads again from the
    start (up to :attr:`MAX_RESTARTS` times) and reports only the ids it has not reported yet.
    """

    MAX_RESTARTS: Final = 5

    def __init__(
        self,
        path: str,
        read: Callable[[Mapping[str, Any]], T],
        ident: Callable[[T], str],
        *,
        query: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._path = path
        self._parse = _page_parser(read)
        self._ident: Callable[[Any], str] = ident
        self._query = query
        self.offset = 0
        self.done = False
        self.restarts = 0
        self._total: int | None = None
        self._seen: set[str] = set()

    def next_call(self) -> Call[tuple[list[Any], int]]:
        query = (*self._query, ("offset", str(self.offset)), ("limit", str(PAGE_LIMIT)))
        return Call("GET", self._path, self._parse, query=query)

    def take(self, page: tuple[list[Any], int]) -> list[Any]:
        """The items of ``page`` not reported yet; sets :attr:`done` after the last page."""
        items, total = page
        fresh = []
        for item in items:
            ident = self._ident(item)
            if ident not in self._seen:
                self._seen.add(ident)
                fresh.append(item)
        moved = self._total is not None and total != self._total
        self._total = total
        self.offset += len(items)
        if moved and self.restarts < self.MAX_RESTARTS:
            self.restarts += 1
            self.offset = 0
        elif len(items) < PAGE_LIMIT or self.offset >= total:
            self.done = True
        return fresh


def guardrail_pages(*, workspace_id: Any, default_workspace: str | None) -> Pages:
    """``GET /guardrails`` of a workspace (the connection's default unless given)."""
    workspace = v.validate_workspace_id(workspace_id) or default_workspace
    query = (("workspace_id", workspace),) if workspace else ()
    return Pages("/guardrails", Guardrail.from_api, lambda g: g.id, query=query)


def key_assignment_pages(guardrail_id: Any = None) -> Pages:
    """``GET /guardrails/{id}/assignments/keys``, or every key assignment (``guardrail_id=None``)."""
    path = (
        "/guardrails/assignments/keys" if guardrail_id is None else _path(guardrail_id, "/assignments/keys")
    )
    return Pages(path, KeyAssignment.from_api, lambda a: a.key_hash)
