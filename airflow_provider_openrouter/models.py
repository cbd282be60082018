"""Typed results of the OpenRouter key-management API.

Every object is a frozen dataclass built by ``from_api`` from the ``data`` object of a response, and offers a
JSON-safe ``to_dict`` for XCom. None of them carries a plaintext key in its repr or ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

# Re-exported: the sentinel has a module of its own so that importing the hook does not import the models.
from airflow_provider_openrouter._sentinel import UNSET, Unset

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Mapping
    from types import ModuleType


__all__ = ["UNSET", "ApiKey", "CreatedApiKey", "Credits", "CurrentKey", "Unset"]

_T = TypeVar("_T")


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-safe dict (safe to push to XCom)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


class Checking(NamedTuple):
    """What a field's check is told besides the value."""

    field: str
    #: Booleans may come as the text a template renders them to (``"True"``).
    text: bool = False
    #: The moment "in the future" is measured from (``None``: now).
    now: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyField:
    """A key field that can be written: how a given value is checked, and by which requests.

    ``create``: ``POST /keys`` takes it (``required``: always; else only when not ``None``). ``update``:
    ``PATCH /keys/{hash}`` takes it, and ``clears``: ``None`` there removes the setting. ``synced``: the
    tenant sync manages it, as a column of its tenants table. ``check`` returns the value as sent, or raises
    :class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError` naming the field.
    """

    name: str
    check: Callable[[Any, Checking], Any]
    create: bool = True
    update: bool = True
    clears: bool = False
    required: bool = False
    synced: bool = True

    def validate(self, value: Any, *, text: bool = False, now: dt.datetime | None = None) -> Any:
        return self.check(value, Checking(self.name, text, now))


def _writes(
    check: Callable[[Any, Checking], Any],
    *,
    create: bool = True,
    update: bool = True,
    clears: bool = False,
    required: bool = False,
    synced: bool = True,
) -> dict[str, KeyField]:
    """A writable field's metadata; its name is filled in from the dataclass (:data:`KEY_FIELDS`)."""
    return {_WRITABLE: KeyField("", check, create, update, clears, required, synced)}


_WRITABLE: Final = "openrouter_writable"


def _v() -> ModuleType:
    # The checks import Airflow (through the exceptions); the models are imported by the local OpenRouter,
    # which must not.
    from airflow_provider_openrouter import _validation

    return _validation


def _flag(value: Any, c: Checking) -> bool:
    return bool(_v().validate_bool(value, field=c.field, text=c.text))


@dataclass(frozen=True, slots=True)
class ApiKey(_JsonMixin):
    """An API key's metadata as OpenRouter reports it (never its plaintext).

    This class is the one declaration of a key's fields: each field's type says how it is read from the API
    (required when it has no default; a number or flag missing from the answer reads as ``0.0``/``False``),
    and a writable field's metadata (a ``KeyField``) says how a given value is checked and which requests
    take it. The hook, the operators and the request bodies are all built from it.
    """

    hash: str
    name: str = field(
        metadata=_writes(lambda value, c: _v().validate_name(value, field=c.field), required=True)
    )
    label: str
    disabled: bool = field(metadata=_writes(_flag, create=False))
    limit: float | None = field(
        metadata=_writes(lambda value, c: _v().validate_limit(value, field=c.field), clears=True)
    )
    limit_remaining: float | None
    limit_reset: str | None = field(
        metadata=_writes(lambda value, c: _v().validate_limit_reset(value, field=c.field), clears=True)
    )
    include_byok_in_limit: bool = field(metadata=_writes(_flag))
    usage: float
    usage_daily: float
    usage_weekly: float
    usage_monthly: float
    byok_usage: float
    byok_usage_daily: float
    byok_usage_weekly: float
    byok_usage_monthly: float
    created_at: str
    updated_at: str | None = None
    creator_user_id: str | None = field(
        default=None,
        # Who made a key is no setting of a tenant's: the sync leaves it to the connection's user.
        metadata=_writes(
            lambda value, c: _v().validate_creator_user_id(value, field=c.field), update=False, synced=False
        ),
    )
    workspace_id: str | None = field(
        default=None,
        metadata=_writes(lambda value, c: _v().validate_workspace_id(value, field=c.field, optional=False)),
    )
    expires_at: str | None = field(
        default=None,
        metadata=_writes(
            lambda value, c: _v().validate_expires_at(value, field=c.field, now=c.now), update=False
        ),
    )
    external_user: str | None = None
    last_used_at: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ApiKey:
        """Build from a Key object of the API (``KeyError`` / ``TypeError`` / ``ValueError`` if malformed)."""
        return _from_api(cls, data)


def _read_str(data: Mapping[str, Any], name: str) -> str:
    return str(data[name])


def _read_optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else str(value)


def _read_optional_float(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    return None if value is None else float(value)


def _read_float(data: Mapping[str, Any], name: str) -> float:
    # A usage figure the answer leaves out (older deployments lack the BYOK ones) is no usage.
    value = data.get(name)
    return 0.0 if value is None else float(value)


def _read_bool(data: Mapping[str, Any], name: str) -> bool:
    return bool(data.get(name, False))


_READERS: Final[dict[str, Callable[[Mapping[str, Any], str], Any]]] = {
    "str": _read_str,
    "str | None": _read_optional_str,
    "float | None": _read_optional_float,
    "float": _read_float,
    "bool": _read_bool,
}


def _from_api(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """An instance of ``cls`` read from an API object, each field by the reader its declared type names.

    A field with a default is optional in the answer, whatever its type says.
    """
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = str(f.type)
        if kind == "str" and f.default is not dataclasses.MISSING:
            kind = "str | None"
        values[f.name] = _READERS[kind](data, f.name)
    return cls(**values)


#: The writable key fields, in :class:`ApiKey`'s order.
KEY_FIELDS: Final[dict[str, KeyField]] = {
    f.name: dataclasses.replace(f.metadata[_WRITABLE], name=f.name)
    for f in dataclasses.fields(ApiKey)
    if _WRITABLE in f.metadata
}
CREATE_FIELDS: Final = tuple(f for f in KEY_FIELDS.values() if f.create)
UPDATE_FIELDS: Final = tuple(f for f in KEY_FIELDS.values() if f.update)


def same_setting(current: Any, wanted: Any) -> bool:
    """Whether a key's setting already has the wanted value: the one comparison behind every "nothing to
    change". Amounts compare to a billionth, since a limit comes back as the float OpenRouter stored."""
    if isinstance(current, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(float(current), float(wanted), rel_tol=0.0, abs_tol=1e-9)
    return bool(current == wanted)


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A key just created: its metadata and, this one time, its plaintext.

    The plaintext is kept out of ``repr`` and ``to_dict``: reading ``.plaintext`` is the explicit way to get
    it.
    """

    api_key: ApiKey
    plaintext: str = field(repr=False)

    @property
    def hash(self) -> str:
        return self.api_key.hash

    @property
    def name(self) -> str:
        return self.api_key.name

    def to_dict(self) -> dict[str, Any]:
        """The key's metadata only (JSON-safe, no plaintext)."""
        return self.api_key.to_dict()


@dataclass(frozen=True, slots=True)
class CurrentKey(_JsonMixin):
    """What ``GET /key`` says about the key making the request."""

    label: str
    is_management_key: bool
    is_free_tier: bool
    limit: float | None
    limit_remaining: float | None
    limit_reset: str | None
    include_byok_in_limit: bool
    usage: float
    usage_daily: float
    usage_weekly: float
    usage_monthly: float
    byok_usage: float
    byok_usage_daily: float
    byok_usage_weekly: float
    byok_usage_monthly: float
    creator_user_id: str | None = None
    expires_at: str | None = None
    workspace_id: str | None = None
    organization_id: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> CurrentKey:
        if "is_management_key" not in data:
            # The deprecated name still answers on older deployments.
            data = {**data, "is_management_key": data.get("is_provisioning_key", False)}
        return _from_api(cls, data)


@dataclass(frozen=True, slots=True)
class Credits(_JsonMixin):
    """The account's purchased credits and total usage, in USD."""

    total_credits: float
    total_usage: float

    @property
    def remaining(self) -> float:
        return self.total_credits - self.total_usage

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Credits:
        return cls(total_credits=float(data["total_credits"]), total_usage=float(data["total_usage"]))
