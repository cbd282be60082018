"""The API's endpoints, free of I/O: what each request sends and how its answer is read.

Each endpoint is a function returning a :class:`Call`: the validated request (method, path, query, body) and
the parser of its answer. The request bodies of the key writes are built from the key fields declared on
:class:`~airflow_provider_openrouter.models.ApiKey`. Running a call (attempts, retries, I/O) is for
:mod:`~airflow_provider_openrouter._retry` and :mod:`~airflow_provider_openrouter._transport`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._sentinel import UNSET
from airflow_provider_openrouter.exceptions import NotFoundError, OpenRouterAPIError, OpenRouterError
from airflow_provider_openrouter.models import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    ApiKey,
    CreatedApiKey,
    Credits,
    CurrentKey,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Mapping

T = TypeVar("T")

log = logging.getLogger("airflow_provider_openrouter.transport")

PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One endpoint call, described without I/O: what to send and how to read the answer.

    ``parse`` receives the decoded JSON document of a 2xx answer. ``recover``, when set, may turn an error
    answer into a result; it gets the error and whether an earlier attempt may have reached the server, and
    re-raises the error when it cannot. ``repeatable`` marks a ``POST`` whose repeat finds its work done (an
    assignment), so that it is retried after a 5xx or a lost answer as a ``PATCH`` is.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    query: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None
    recover: Callable[[OpenRouterAPIError, bool], T] | None = None
    repeatable: bool = False

    def target(self, base_url: str) -> str:
        url = base_url + self.path
        return f"{url}?{urlencode(self.query)}" if self.query else url

    def payload(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()


def _wire_bool(value: bool) -> str:
    return "true" if value else "false"


def _key_path(key_hash: str) -> str:
    return "/keys/" + quote(key_hash, safe="")


class Malformed(ValueError):
    """A 2xx answer whose JSON does not have the documented shape."""


def _data(doc: Any) -> Any:
    if not isinstance(doc, dict) or "data" not in doc:
        raise Malformed("the answer has no 'data' object")
    return doc["data"]


def _parse_key(doc: Any) -> ApiKey:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not a key object")
    return ApiKey.from_api(data)


def _parse_page(doc: Any) -> list[ApiKey]:
    data = _data(doc)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise Malformed("'data' is not a list of key objects")
    return [ApiKey.from_api(item) for item in data]


def _parse_created(doc: Any) -> CreatedApiKey:
    plaintext = doc.get("key") if isinstance(doc, dict) else None
    if not isinstance(plaintext, str) or not plaintext:
        raise Malformed("the answer has no plaintext 'key'")
    return CreatedApiKey(api_key=_parse_key(doc), plaintext=plaintext)


def _parse_current(doc: Any) -> CurrentKey:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not an object")
    return CurrentKey.from_api(data)


def _parse_credits(doc: Any) -> Credits:
    data = _data(doc)
    if not isinstance(data, dict):
        raise Malformed("'data' is not an object")
    return Credits.from_api(data)


def _parse_deleted(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("deleted") is not True:
        raise Malformed("the answer does not say 'deleted': true")
    return True


def get_current_key_call() -> Call[CurrentKey]:
    return Call("GET", "/key", _parse_current)


def get_credits_call() -> Call[Credits]:
    return Call("GET", "/credits", _parse_credits)


def get_key_call(key_hash: Any) -> Call[ApiKey]:
    return Call("GET", _key_path(v.validate_key_hash(key_hash)), _parse_key)


class Listing:
    """The pages of one ``GET /keys`` walk; the arguments are validated on creation, before any request.

    The API lists newest first and pages by offset, so a key created during a walk pushes every older key one
    place down and a key deleted pulls them up: a plain walk would report a key twice or skip one. Each page
    is therefore asked for so that it starts with the last key of the page before (the anchor). Found where
    expected, nothing moved; found further down, keys were created and the ones before it were seen already;
    not found, keys were deleted: the walk steps one page back to find the anchor again, and failing that
    starts over. Keys already reported are never reported again, so every key that existed for the whole
    walk is reported exactly once; keys created or deleted during it may or may not be.

    A walk may have pages asked for before it reads them (:meth:`ahead`): at the offsets that a list that
    does not shift implies. They are taken in order and each is checked for its anchor like any page, so the
    order in which they were answered does not matter. Once a shift sends the walk to another offset, the
    pages asked for beyond it no longer start where the walk goes on (:meth:`expects` says which are still
    of use).

    How many pages ahead grows as the walk proves long, as TCP's slow start does: none while the caller reads
    the first :attr:`SHORT` pages (a check that stops within them asks for nothing it does not read), then
    one, doubling each time the walk has read as many pages as it had ahead, up to the bound given to
    :meth:`start`. Past the end of the list, a walk asks for at most that bound less one pages in vain.
    """

    __slots__ = (
        "_anchor",
        "_backed_off",
        "_bound",
        "_default_workspace",
        "_read_at_width",
        "_reported",
        "_taken",
        "_width",
        "done",
        "include_disabled",
        "include_expired",
        "offset",
        "restarts",
        "workspace_id",
    )

    #: Restarts after which a walk gives up: the keys change faster than they can be read.
    MAX_RESTARTS = 20
    #: Pages a walk reads one request at a time, each asked for when the caller wants more keys.
    SHORT = 2

    def __init__(self, *, include_disabled: Any, include_expired: Any, workspace_id: Any) -> None:
        self.include_disabled = v.validate_bool(include_disabled, field="include_disabled")
        self.include_expired = v.validate_bool(include_expired, field="include_expired")
        self.workspace_id = v.validate_workspace_id(workspace_id)
        self.offset = 0
        self.done = False
        self.restarts = 0
        self._anchor: str | None = None
        self._backed_off = False
        self._reported: set[str] = set()
        self._default_workspace: str | None = None
        self._bound = 1
        self._taken = 0
        self._width = 0
        self._read_at_width = 0

    def start(self, default_workspace: str | None, pages_in_flight: int = 1) -> Listing:
        """Set what the connection decides: the workspace listed when none was given, and the most pages
        :meth:`ahead` may ask for at once."""
        self._default_workspace = default_workspace
        self._bound = max(1, pages_in_flight)
        return self

    def page(self, offset: int, default_workspace: str | None) -> Call[list[ApiKey]]:
        query = [("offset", str(offset))] if offset else []
        query.append(("include_disabled", _wire_bool(self.include_disabled)))
        query.append(("include_expired", _wire_bool(self.include_expired)))
        workspace = self.workspace_id or default_workspace
        if workspace:
            query.append(("workspace_id", workspace))
        return Call("GET", "/keys", _parse_page, query=tuple(query))

    def next_call(self) -> Call[list[ApiKey]]:
        """The page the walk reads next, at :attr:`offset`."""
        return self.page(self.offset, self._default_workspace)

    def call_at(self, offset: int) -> Call[list[ApiKey]]:
        """The page at ``offset``, one of :meth:`ahead`'s."""
        return self.page(offset, self._default_workspace)

    def ahead(self) -> list[int]:
        """The offsets of the pages to have asked for while the caller reads the page just taken, the next
        one first: none while the walk is short (or done), then as many as its width."""
        if self.done:
            return []
        step = PAGE_SIZE - 1
        return [self.offset + i * step for i in range(self._width)]

    def expects(self, offsets: list[int]) -> bool:
        """Whether pages asked for at ``offsets`` (in order, from :meth:`ahead`) still start where the walk
        goes on: false once a shift has moved it, and the pages are of no use."""
        return not offsets or offsets[0] == self.offset

    def take(self, page: list[ApiKey]) -> list[ApiKey]:
        """The keys of ``page`` (the one at :attr:`offset`) not reported yet; sets :attr:`done` after the last
        page."""
        self._widen()
        if self._anchor is None:
            fresh = page
        else:
            at = next((i for i, key in enumerate(page) if key.hash == self._anchor), None)
            if at is None:
                self._lost_anchor()
                return []
            fresh = page[at + 1 :]
        self._backed_off = False
        if len(page) < PAGE_SIZE:
            # No total and no "has more" in the API: a page shorter than the page size is the last one.
            self.done = True
        else:
            self._anchor = page[-1].hash
            self.offset += len(page) - 1
        reported = self._reported
        # Keys keep their order, so only a walk that started over meets keys it reported already.
        kept = [key for key in fresh if key.hash not in reported]
        reported.update(key.hash for key in kept)
        return kept

    def _widen(self) -> None:
        self._taken += 1
        if self._taken <= self.SHORT:
            return
        if self._width == 0:
            self._width = 1
        elif self._read_at_width >= self._width:
            self._width = min(2 * self._width, self._bound)
            self._read_at_width = 0
        self._read_at_width += 1

    def _lost_anchor(self) -> None:
        if self.offset > 0 and not self._backed_off:
            self._backed_off = True
            self.offset = max(0, self.offset - (PAGE_SIZE - 1))
            return
        self.restarts += 1
        if self.restarts > self.MAX_RESTARTS:
            raise OpenRouterError(
                f"Listing keys: the list changed under every one of {self.MAX_RESTARTS} walks (keys are "
                "being created or deleted faster than they can be read); try again later."
            )
        log.info("GET /keys: the list shifted during the walk; walking again (restart %d)", self.restarts)
        self._anchor = None
        self._backed_off = False
        self.offset = 0

    @staticmethod
    def is_last(page: list[ApiKey]) -> bool:
        return len(page) < PAGE_SIZE


def create_key_body(
    values: Mapping[str, Any], *, text: bool = False, now: dt.datetime | None = None, partial: bool = False
) -> dict[str, Any]:
    """The validated body of ``POST /keys`` from ``values`` (by field name): the name and whichever optional
    fields are not ``None``. ``partial``: check only the fields present (a DAG file's literal arguments)."""
    body: dict[str, Any] = {}
    for key_field in CREATE_FIELDS:
        value = values.get(key_field.name)
        if value is not None or (key_field.required and not (partial and key_field.name not in values)):
            body[key_field.name] = key_field.validate(value, text=text, now=now)
    return body


def create_key_call(values: Mapping[str, Any], default_workspace: str | None) -> Call[CreatedApiKey]:
    """``POST /keys``; the key goes to ``default_workspace`` (the connection's) unless one is given."""
    body = create_key_body(values)
    if default_workspace and "workspace_id" not in body:
        body["workspace_id"] = default_workspace
    return Call("POST", "/keys", _parse_created, body=body)


def update_key_body(changes: Mapping[str, Any], *, text: bool = False) -> dict[str, Any]:
    """The validated body of ``PATCH /keys/{hash}``: the updatable fields in ``changes`` (``UNSET`` ones left
    out; ``None`` clears where the field allows it)."""
    return {
        key_field.name: key_field.validate(changes[key_field.name], text=text)
        for key_field in UPDATE_FIELDS
        if changes.get(key_field.name, UNSET) is not UNSET
    }


def update_key_call(key_hash: Any, changes: Mapping[str, Any]) -> Call[ApiKey]:
    """``PATCH /keys/{hash}`` with only the fields given."""
    path = _key_path(v.validate_key_hash(key_hash))
    body = update_key_body(changes)
    if not body:
        names = ", ".join(key_field.name for key_field in UPDATE_FIELDS)
        v.fail("fields", f"name at least one field to change ({names})")
    return Call("PATCH", path, _parse_key, body=body)


def delete_call(path: str, *, missing_ok: Any, parse: Callable[[Any], bool] = _parse_deleted) -> Call[bool]:
    """``DELETE path`` as "ensure absent": a 404 after an attempt that may have deleted is success (``True``),
    and with ``missing_ok`` a 404 otherwise is ``False`` rather than an error."""
    v.validate_bool(missing_ok, field="missing_ok")

    def recover(error: OpenRouterAPIError, maybe_done_earlier: bool) -> bool:
        if isinstance(error, NotFoundError):
            # An earlier attempt whose answer got lost may well have done the deleting.
            if maybe_done_earlier:
                return True
            if missing_ok:
                return False
        raise error

    return Call("DELETE", path, parse, recover=recover)


def delete_key_call(key_hash: Any, *, missing_ok: Any) -> Call[bool]:
    return delete_call(_key_path(v.validate_key_hash(key_hash)), missing_ok=missing_ok)
