"""Typed results of OpenRouter's guardrail endpoints, and the settings a guardrail takes.

A guardrail bundles a budget with its own window, model and provider allowlists, data-policy switches and
content filters; it enforces nothing until keys are assigned to it, and a key holds at most one. Like the key
models, every object is a frozen dataclass built by ``from_api`` with a JSON-safe ``to_dict`` for XCom;
collections are tuples, so the objects compare and hash by value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["ContentFilter", "ContentFilterBuiltin", "Guardrail", "GuardrailSettings", "KeyAssignment"]


class GuardrailSettings(TypedDict, total=False):
    """The settings :meth:`~airflow_provider_openrouter.hooks.openrouter.OpenRouterHook.create_guardrail`
    and ``update_guardrail`` take by keyword, each as OpenRouter names it.

    A create leaves a setting that is ``None`` or omitted unset; an update sends only the settings named, and
    ``None`` there clears one. Collections replace the whole set on an update: name every item wanted.
    """

    description: str | None
    limit_usd: float | None
    reset_interval: str | None
    include_byok_in_budgets: bool
    allowed_models: Sequence[str] | None
    ignored_models: Sequence[str] | None
    allowed_providers: Sequence[str] | None
    ignored_providers: Sequence[str] | None
    allowed_data_regions: Sequence[str] | None
    enforce_zdr_anthropic: bool | None
    enforce_zdr_openai: bool | None
    enforce_zdr_google: bool | None
    enforce_zdr_xai: bool | None
    enforce_zdr_other: bool | None
    enable_free_model_publication: bool | None
    enable_free_model_training: bool | None
    enable_paid_model_training: bool | None
    allow_safety_retention_google: bool | None
    allow_safety_retention_other: bool | None
    content_filter_builtins: Sequence[ContentFilterBuiltin | Mapping[str, Any]] | None
    content_filters: Sequence[ContentFilter | Mapping[str, Any]] | None


#: The names :class:`GuardrailSettings` declares, in its order.
SETTING_NAMES: Final[tuple[str, ...]] = tuple(GuardrailSettings.__annotations__)


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else str(value)


def _optional_bool(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    return None if value is None else bool(value)


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError(f"{name} is not a list")
    return tuple(str(item) for item in value)


def _objects(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TypeError(f"{name} is not a list of objects")
    return value


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-safe dict (tuples as lists), safe to push to XCom."""
        result: dict[str, Any] = _json(self)
        return result


@dataclass(frozen=True, slots=True)
class ContentFilterBuiltin(_JsonMixin):
    """One of OpenRouter's own filters (``email``, ``regex-prompt-injection``, …) and what it does on a match.

    ``label`` is assigned by OpenRouter (``[EMAIL]``) and ignored when sent; ``scan_scope`` applies to
    ``regex-prompt-injection`` only.
    """

    slug: str
    action: str
    scan_scope: str | None = None
    label: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ContentFilterBuiltin:
        return cls(
            slug=str(data["slug"]),
            action=str(data["action"]),
            scan_scope=_optional_str(data, "scan_scope"),
            label=_optional_str(data, "label"),
        )


@dataclass(frozen=True, slots=True)
class ContentFilter(_JsonMixin):
    """A custom regex filter (JavaScript flavour: no lookarounds, backreferences or nested quantifiers)."""

    pattern: str
    action: str
    label: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ContentFilter:
        return cls(
            pattern=str(data["pattern"]), action=str(data["action"]), label=_optional_str(data, "label")
        )


@dataclass(frozen=True, slots=True)
class Guardrail(_JsonMixin):
    """A guardrail as OpenRouter reports it. ``None`` means the setting is not set (it inherits).

    ``workspace_id`` is ``None`` for a guardrail older than workspaces (not the default workspace). Model
    slugs come back canonical, so they may read differently from the ones sent.
    """

    id: str
    name: str
    include_byok_in_budgets: bool
    created_at: str
    workspace_id: str | None
    description: str | None = None
    limit_usd: float | None = None
    reset_interval: str | None = None
    allowed_models: tuple[str, ...] | None = None
    ignored_models: tuple[str, ...] | None = None
    allowed_providers: tuple[str, ...] | None = None
    ignored_providers: tuple[str, ...] | None = None
    allowed_data_regions: tuple[str, ...] | None = None
    enforce_zdr_anthropic: bool | None = None
    enforce_zdr_openai: bool | None = None
    enforce_zdr_google: bool | None = None
    enforce_zdr_xai: bool | None = None
    enforce_zdr_other: bool | None = None
    enable_free_model_publication: bool | None = None
    enable_free_model_training: bool | None = None
    enable_paid_model_training: bool | None = None
    allow_safety_retention_google: bool | None = None
    allow_safety_retention_other: bool | None = None
    content_filter_builtins: tuple[ContentFilterBuiltin, ...] | None = None
    content_filters: tuple[ContentFilter, ...] | None = None
    updated_at: str | None = None

    @property
    def has_budget(self) -> bool:
        return self.limit_usd is not None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Guardrail:
        """Build from a Guardrail object of the API (``KeyError`` / ``TypeError`` / ``ValueError`` if
        malformed)."""
        limit = data.get("limit_usd")
        builtins = _objects(data, "content_filter_builtins")
        filters = _objects(data, "content_filters")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            include_byok_in_budgets=bool(data["include_byok_in_budgets"]),
            created_at=str(data["created_at"]),
            workspace_id=_optional_str(data, "workspace_id"),
            description=_optional_str(data, "description"),
            limit_usd=None if limit is None else float(limit),
            reset_interval=_optional_str(data, "reset_interval"),
            allowed_models=_strings(data, "allowed_models"),
            ignored_models=_strings(data, "ignored_models"),
            allowed_providers=_strings(data, "allowed_providers"),
            ignored_providers=_strings(data, "ignored_providers"),
            allowed_data_regions=_strings(data, "allowed_data_regions"),
            enforce_zdr_anthropic=_optional_bool(data, "enforce_zdr_anthropic"),
            enforce_zdr_openai=_optional_bool(data, "enforce_zdr_openai"),
            enforce_zdr_google=_optional_bool(data, "enforce_zdr_google"),
            enforce_zdr_xai=_optional_bool(data, "enforce_zdr_xai"),
            enforce_zdr_other=_optional_bool(data, "enforce_zdr_other"),
            enable_free_model_publication=_optional_bool(data, "enable_free_model_publication"),
            enable_free_model_training=_optional_bool(data, "enable_free_model_training"),
            enable_paid_model_training=_optional_bool(data, "enable_paid_model_training"),
            allow_safety_retention_google=_optional_bool(data, "allow_safety_retention_google"),
            allow_safety_retention_other=_optional_bool(data, "allow_safety_retention_other"),
            content_filter_builtins=None
            if builtins is None
            else tuple(ContentFilterBuiltin.from_api(item) for item in builtins),
            content_filters=None
            if filters is None
            else tuple(ContentFilter.from_api(item) for item in filters),
            updated_at=_optional_str(data, "updated_at"),
        )


@dataclass(frozen=True, slots=True)
class KeyAssignment(_JsonMixin):
    """A key's assignment to a guardrail. ``key_label`` is the masked key, never its plaintext."""

    id: str
    key_hash: str
    guardrail_id: str
    key_name: str
    key_label: str
    assigned_by: str | None
    created_at: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> KeyAssignment:
        return cls(
            id=str(data["id"]),
            key_hash=str(data["key_hash"]),
            guardrail_id=str(data["guardrail_id"]),
            key_name=str(data["key_name"]),
            key_label=str(data["key_label"]),
            assigned_by=_optional_str(data, "assigned_by"),
            created_at=str(data["created_at"]),
        )
