"""Typed results of the OpenRouter key-management API.

Every object is a frozen dataclass built by ``from_api`` from the ``data`` object of a response, and offers a
JSON-safe ``to_dict`` for XCom. None of them carries a plaintext key in its repr or ``to_dict``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

# Re-exported: the sentinel has a module of its own so that importing the hook does not import the models.
from airflow_provider_openrouter._sentinel import UNSET, Unset

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


__all__ = ["UNSET", "ApiKey", "CreatedApiKey", "Credits", "CurrentKey", "Unset"]

_T = TypeVar("_T")


def _num(data: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    value = data.get(name)
    return default if value is None else float(value)


def _opt_num(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    return None if value is None else float(value)


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else str(value)


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-safe dict (safe to push to XCom)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ApiKey(_JsonMixin):
    """An API key's metadata as OpenRouter reports it (never its plaintext)."""

    hash: str
    name: str
    label: str
    disabled: bool
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
    created_at: str
    updated_at: str | None = None
    creator_user_id: str | None = None
    workspace_id: str | None = None
    expires_at: str | None = None
    external_user: str | None = None
    last_used_at: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ApiKey:
        """Build from a Key object of the API (``KeyError`` / ``TypeError`` / ``ValueError`` if malformed)."""
        get = data.get
        return _build_api_key(
            cls,
            (
                str(data["hash"]),
                str(data["name"]),
                str(data["label"]),
                bool(get("disabled", False)),
                None if (v := get("limit")) is None else float(v),
                None if (v := get("limit_remaining")) is None else float(v),
                None if (v := get("limit_reset")) is None else str(v),
                bool(get("include_byok_in_limit", False)),
                0.0 if (v := get("usage")) is None else float(v),
                0.0 if (v := get("usage_daily")) is None else float(v),
                0.0 if (v := get("usage_weekly")) is None else float(v),
                0.0 if (v := get("usage_monthly")) is None else float(v),
                0.0 if (v := get("byok_usage")) is None else float(v),
                0.0 if (v := get("byok_usage_daily")) is None else float(v),
                0.0 if (v := get("byok_usage_weekly")) is None else float(v),
                0.0 if (v := get("byok_usage_monthly")) is None else float(v),
                str(data["created_at"]),
                None if (v := get("updated_at")) is None else str(v),
                None if (v := get("creator_user_id")) is None else str(v),
                None if (v := get("workspace_id")) is None else str(v),
                None if (v := get("expires_at")) is None else str(v),
                None if (v := get("external_user")) is None else str(v),
                None if (v := get("last_used_at")) is None else str(v),
            ),
        )


def _slot_builder(cls: type[_T]) -> Callable[[type[_T], tuple[Any, ...]], _T]:
    """A constructor for a frozen slotted dataclass taking every field's value, in field order.

    It fills the slots directly. The generated ``__init__`` of a frozen dataclass goes through
    ``object.__setattr__`` once per field, which makes it about ten times slower than a plain class's: for
    the 10,000 keys of a long listing, that was the largest client-side cost after JSON decoding.
    """
    setters = [getattr(cls, f.name).__set__ for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    new = object.__new__

    def build(target: type[_T], values: tuple[Any, ...]) -> _T:
        obj = new(target)
        for setter, value in zip(setters, values, strict=True):
            setter(obj, value)
        return obj

    return build


_build_api_key = _slot_builder(ApiKey)


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
        return cls(
            label=str(data["label"]),
            # The deprecated name still answers on older deployments.
            is_management_key=bool(data.get("is_management_key", data.get("is_provisioning_key", False))),
            is_free_tier=bool(data.get("is_free_tier", False)),
            limit=_opt_num(data, "limit"),
            limit_remaining=_opt_num(data, "limit_remaining"),
            limit_reset=_opt_str(data, "limit_reset"),
            include_byok_in_limit=bool(data.get("include_byok_in_limit", False)),
            usage=_num(data, "usage"),
            usage_daily=_num(data, "usage_daily"),
            usage_weekly=_num(data, "usage_weekly"),
            usage_monthly=_num(data, "usage_monthly"),
            byok_usage=_num(data, "byok_usage"),
            byok_usage_daily=_num(data, "byok_usage_daily"),
            byok_usage_weekly=_num(data, "byok_usage_weekly"),
            byok_usage_monthly=_num(data, "byok_usage_monthly"),
            creator_user_id=_opt_str(data, "creator_user_id"),
            expires_at=_opt_str(data, "expires_at"),
            workspace_id=_opt_str(data, "workspace_id"),
            organization_id=_opt_str(data, "organization_id"),
        )


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
