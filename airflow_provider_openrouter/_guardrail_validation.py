"""The input checks of the guardrail methods, on the rules of :mod:`airflow_provider_openrouter._validation`.

Each validator takes the raw value and ``field=``, returns the value as it is sent and otherwise raises
:class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError` naming the field and the problem.
Nothing here does I/O, so every check runs before any request; ``""`` never means "none" here either.

What OpenRouter documents and is checked here: a name of 1 to 200 characters, a description of at most 1,000,
a budget (``limit_usd``) only together with its window (``reset_interval``) on a create, allowlists of at
least one item (``None`` clears one; ``[]`` is refused by the API), the closed sets of data regions, filter
slugs and actions, and custom filter patterns without lookarounds, backreferences or nested quantifiers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._redaction import quoted
from airflow_provider_openrouter._sentinel import UNSET
from airflow_provider_openrouter.guardrails import SETTING_NAMES, ContentFilter, ContentFilterBuiltin

GUARDRAIL_NAME_MAX: Final = 200
DESCRIPTION_MAX: Final = 1000
#: Longest model slug or provider id accepted: far above any OpenRouter has, so a longer one is a mistake.
ITEM_MAX: Final = 255
PATTERN_MAX: Final = 100_000
FILTER_LABEL_MAX: Final = 100
DATA_REGIONS: Final = ("global", "europe", "us")
FILTER_ACTIONS: Final = ("redact", "block", "flag")
BUILTIN_SLUGS: Final = (
    "email",
    "phone",
    "ssn",
    "credit-card",
    "ip-address",
    "person-name",
    "address",
    "regex-prompt-injection",
    "secrets",
)
SCAN_SCOPES: Final = ("user_only", "all_messages")
_LOOKAROUND: Final = re.compile(r"\(\?<?[=!]")
_BACKREFERENCE: Final = re.compile(r"\\[1-9]|\\k<")
_NESTED_QUANTIFIER: Final = re.compile(r"\([^()]*[+*][^()]*\)[+*{]")
_ALLOWLISTS: Final = (
    "allowed_models",
    "ignored_models",
    "allowed_providers",
    "ignored_providers",
)


def validate_guardrail_id(value: Any, *, field: str = "guardrail_id") -> str:
    """A guardrail's id: a UUID in any spelling :class:`uuid.UUID` reads, returned canonical."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and not value.strip():
        v.fail(field, "must not be empty")
    if not isinstance(value, str):
        v.fail(field, f"must be a guardrail id, a UUID (got {type(value).__name__})")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        v.fail(
            field,
            f"must be a guardrail id, a UUID such as 550e8400-e29b-41d4-a716-446655440000 "
            f"(got {quoted(value)})",
        )


def validate_guardrail_name(value: Any, *, field: str = "name") -> str:
    if not isinstance(value, str):
        v.fail(field, f"must be a string (got {type(value).__name__})")
    return v.check_text(value, field=field, max_length=GUARDRAIL_NAME_MAX, what="a guardrail's name")


def _sequence(value: Any, field: str) -> list[Any]:
    """A list from any iterable but a string or a mapping (a lone string is a slip for ``[string]``)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        v.fail(field, f"must be a list (got {type(value).__name__})")
    return list(value)


def validate_string_set(
    value: Any, *, field: str, choices: tuple[str, ...] | None = None
) -> list[str] | None:
    """``None`` or at least one non-blank string (``choices``: each one of them), duplicates dropped."""
    if value is None:
        return None
    items = _sequence(value, field)
    if not items:
        v.fail(field, "must hold at least one item; pass None to clear it")
    out: list[str] = []
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if choices is not None:
            out.append(v.validate_one_of(item, choices, field=where))
        elif not isinstance(item, str):
            v.fail(where, f"must be a string (got {type(item).__name__})")
        else:
            out.append(v.check_text(item.strip() or item, field=where, max_length=ITEM_MAX))
    return list(dict.fromkeys(out))


def _entry(value: Any, field: str) -> Mapping[str, Any]:
    if isinstance(value, (ContentFilterBuiltin, ContentFilter)):
        return value.to_dict()
    if not isinstance(value, Mapping):
        v.fail(field, f"must be a mapping or a content filter object (got {type(value).__name__})")
    return value


def validate_builtin_filters(
    value: Any, *, field: str = "content_filter_builtins"
) -> list[dict[str, Any]] | None:
    """OpenRouter's own filters: ``slug``, ``action`` and, for ``regex-prompt-injection``, ``scan_scope``.
    A ``label`` given is dropped: OpenRouter assigns it."""
    if value is None:
        return None
    out = []
    for index, item in enumerate(_sequence(value, field)):
        where = f"{field}[{index}]"
        entry = _entry(item, where)
        unknown = sorted(set(entry) - {"slug", "action", "scan_scope", "label"})
        if unknown:
            v.fail(where, f"has no setting {unknown[0]!r} (slug, action, scan_scope)")
        slug = v.validate_one_of(entry.get("slug"), BUILTIN_SLUGS, field=where + ".slug")
        body = {
            "slug": slug,
            "action": v.validate_one_of(entry.get("action"), FILTER_ACTIONS, field=where + ".action"),
        }
        scope = entry.get("scan_scope")
        if scope is not None:
            if slug != "regex-prompt-injection":
                v.fail(where + ".scan_scope", "applies to the regex-prompt-injection filter only")
            body["scan_scope"] = v.validate_one_of(scope, SCAN_SCOPES, field=where + ".scan_scope")
        out.append(body)
    return out


def validate_pattern(value: Any, *, field: str) -> str:
    """A custom filter's regex as OpenRouter takes it: JavaScript-flavoured, without the constructs it
    refuses (lookarounds, backreferences, nested quantifiers), at most 100,000 characters."""
    if not isinstance(value, str):
        v.fail(field, f"must be a regular expression (got {type(value).__name__})")
    if not value:
        v.fail(field, "must not be empty")
    if len(value) > PATTERN_MAX:
        v.fail(field, f"must be at most {PATTERN_MAX:,} characters (got {len(value):,})")
    if _LOOKAROUND.search(value) or _BACKREFERENCE.search(value) or _NESTED_QUANTIFIER.search(value):
        v.fail(field, "uses a lookaround, a backreference or a nested quantifier, which OpenRouter refuses")
    try:
        re.compile(value)
    except re.error as exc:
        v.fail(field, f"is not a valid regular expression ({exc})")
    return value


def validate_custom_filters(value: Any, *, field: str = "content_filters") -> list[dict[str, Any]] | None:
    if value is None:
        return None
    out = []
    for index, item in enumerate(_sequence(value, field)):
        where = f"{field}[{index}]"
        entry = _entry(item, where)
        unknown = sorted(set(entry) - {"pattern", "action", "label"})
        if unknown:
            v.fail(where, f"has no setting {unknown[0]!r} (pattern, action, label)")
        body: dict[str, Any] = {
            "pattern": validate_pattern(entry.get("pattern"), field=where + ".pattern"),
            "action": v.validate_one_of(entry.get("action"), FILTER_ACTIONS, field=where + ".action"),
        }
        label = entry.get("label")
        if label is not None:
            if not isinstance(label, str):
                v.fail(where + ".label", f"must be a string (got {type(label).__name__})")
            body["label"] = v.check_text(label, field=where + ".label", max_length=FILTER_LABEL_MAX)
        out.append(body)
    return out


def _setting(name: str, value: Any) -> Any:
    """One setting as sent; ``None`` (an update's "clear it") passes where the API lets the setting be
    cleared."""
    if name == "description":
        if value is None:
            return None
        if not isinstance(value, str):
            v.fail(name, f"must be a string or None (got {type(value).__name__})")
        return v.check_text(value, field=name, max_length=DESCRIPTION_MAX, what="a guardrail's description")
    if name == "limit_usd":
        return v.validate_limit(value, field=name)
    if name == "reset_interval":
        return v.validate_limit_reset(value, field=name)
    if name == "include_byok_in_budgets":  # a flag that cannot be cleared
        return v.validate_bool(value, field=name)
    if name in _ALLOWLISTS:
        return validate_string_set(value, field=name)
    if name == "allowed_data_regions":
        return validate_string_set(value, field=name, choices=DATA_REGIONS)
    if name == "content_filter_builtins":
        return validate_builtin_filters(value, field=name)
    if name == "content_filters":
        return validate_custom_filters(value, field=name)
    return None if value is None else v.validate_bool(value, field=name)


def guardrail_body(
    settings: Mapping[str, Any], *, name: Any = UNSET, workspace_id: Any = None, update: bool = False
) -> dict[str, Any]:
    """The validated body of ``POST /guardrails`` (``update=False``) or ``PATCH /guardrails/{id}``.

    A create sends the settings that are not ``None``; an update sends every setting given (``UNSET`` ones
    left out), ``None`` clearing it. An unknown setting is a ``TypeError``, as a wrong keyword is.
    """
    unknown = sorted(set(settings) - set(SETTING_NAMES))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    body: dict[str, Any] = {}
    if name is not UNSET:
        body["name"] = validate_guardrail_name(name)
    for setting in SETTING_NAMES:
        value = settings.get(setting, UNSET)
        if value is UNSET or (value is None and not update):
            continue
        body[setting] = _setting(setting, value)
    if update:
        if "limit_usd" in body and "reset_interval" in body:
            _check_budget(body.get("limit_usd"), body.get("reset_interval"))
    else:
        _check_budget(body.get("limit_usd"), body.get("reset_interval"))
        workspace = v.validate_workspace_id(workspace_id)
        if workspace is not None:
            body["workspace_id"] = workspace
    return body


def _check_budget(limit_usd: Any, reset_interval: Any) -> None:
    if limit_usd is not None and reset_interval is None:
        v.fail(
            "reset_interval",
            "must be given with limit_usd: a guardrail's budget needs its window (daily, weekly or monthly)",
        )
    if reset_interval is not None and limit_usd is None:
        v.fail("limit_usd", "must be given with reset_interval: a window needs the budget it resets")


def validate_key_hashes(value: Any, *, field: str = "key_hashes") -> list[str]:
    """At least one key hash (64 lower-case hex characters each), duplicates dropped, order kept."""
    items = _sequence(value, field)
    if not items:
        v.fail(field, "must hold at least one key hash")
    return list(
        dict.fromkeys(
            v.validate_key_hash(item, field=f"{field}[{index}]") for index, item in enumerate(items)
        )
    )
