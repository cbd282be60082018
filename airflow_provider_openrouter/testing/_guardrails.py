"""The local OpenRouter's guardrails: what the account holds, the rules the API documents, and the endpoints.

A guardrail is kept as the API object it is answered with; a key assignment as a small record looked up by
key hash, since a key holds at most one guardrail. Each account (:class:`OpenRouterState`) gets its own
:class:`GuardrailStore` on first use, guarded by the account's lock, so a key's existence, name and
workspace are read consistently with the guardrail change.

Where OpenRouter documents nothing, the store follows :class:`GuardrailChoices`, one field per choice, so a
test can try another answer (``guardrails_of(state).choices = GuardrailChoices(...)``) and the testing page
lists them in one place.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_openrouter.testing._state import (
    DEFAULT_WORKSPACE_ID,
    LIMIT_RESETS,
    ApiError,
    check_workspace_id,
    stamp,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import TypeAlias

    from airflow_provider_openrouter.testing._http import Request
    from airflow_provider_openrouter.testing._state import KeyRecord, OpenRouterState

    Endpoint: TypeAlias = Callable[[OpenRouterState, "Call"], tuple[int, Any]]

NAME_MAX: Final = 200
DESCRIPTION_MAX: Final = 1000
PATTERN_MAX: Final = 100_000
LABEL_MAX: Final = 100
PAGE_DEFAULT: Final = 50
PAGE_MAX: Final = 100

LISTS: Final = ("allowed_models", "ignored_models", "allowed_providers", "ignored_providers")
ZDR_FLAGS: Final = (
    "enforce_zdr_anthropic",
    "enforce_zdr_openai",
    "enforce_zdr_google",
    "enforce_zdr_xai",
    "enforce_zdr_other",
)
FLAGS: Final = (
    *ZDR_FLAGS,
    "enable_free_model_publication",
    "enable_free_model_training",
    "enable_paid_model_training",
    "allow_safety_retention_google",
    "allow_safety_retention_other",
)
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
PROMPT_INJECTION: Final = "regex-prompt-injection"
SCAN_SCOPES: Final = ("user_only", "all_messages")
#: Every field a create or an update sets (an update: all but ``workspace_id``), ``enforce_zdr`` only as the
#: fallback of the per-group ones.
SETTABLE: Final = (
    "name",
    "description",
    "limit_usd",
    "reset_interval",
    "include_byok_in_budgets",
    *LISTS,
    *FLAGS,
    "enforce_zdr",
    "allowed_data_regions",
    "content_filter_builtins",
    "content_filters",
)
# What the API refuses in a custom filter (JavaScript-flavoured regexes): lookarounds, backreferences and a
# quantified group that holds a quantifier (the classic catastrophic-backtracking shape).
_LOOKAROUND = re.compile(r"\(\?<?[=!]")
_BACKREFERENCE = re.compile(r"\\[1-9]|\\k<")
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*][^()]*\)[+*{]")


@dataclass(frozen=True)
class GuardrailChoices:
    """The fake's answers where OpenRouter's documentation says nothing."""

    #: Order of every list: ``"oldest_first"`` (creation order, stable while items are added) or
    #: ``"newest_first"``.
    order: str = "oldest_first"
    #: A bulk assign naming a key the account does not have (a management key counts as none) or a key of
    #: another workspace than the guardrail's is refused whole with this status, nothing assigned; ``None``:
    #: such keys are skipped and not counted.
    refuse_unknown_keys: int | None = 400
    #: Whether ``assigned_count`` counts keys that already held this guardrail (a re-sent assign).
    count_unchanged: bool = False
    #: Whether an update must leave ``limit_usd`` and ``reset_interval`` both set or both unset (the rule the
    #: API states for a create); ``False``: an update is not checked for it.
    budget_rule_on_update: bool = True
    #: Status of a create or rename to a name another guardrail of the workspace carries (an update gets it
    #: as 409); ``None``: names need not be unique.
    duplicate_name_status: int | None = None
    #: Model slugs answered as another (canonical) slug, such as
    #: ``{"openai/gpt-4o": "openai/gpt-4o-2024-08-06"}``; slugs not in it come back as sent.
    canonical_models: Mapping[str, str] = field(default_factory=dict)


class Call(Protocol):
    """What an endpoint gets from the router (its ``Call``): the caller, the request, and the path's
    ``{id}``, which travels where a key route's hash does."""

    @property
    def caller(self) -> KeyRecord: ...

    @property
    def request(self) -> Request: ...

    @property
    def key_hash(self) -> str: ...


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _not_found() -> ApiError:
    return ApiError(404, "Guardrail not found")


# -- request checks ------------------------------------------------------------------------------------------


def _text(name: str, value: Any, *, max_length: int, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _bad(f"{name}: expected a string{' or null' if optional else ''}")
    if not value and not optional:
        raise _bad(f"{name}: must contain at least 1 character")
    if len(value) > max_length:
        raise _bad(f"{name}: must contain at most {max_length} characters")
    return value


def _limit_usd(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad("limit_usd: expected a number or null")
    if value < 0:
        raise _bad("limit_usd: must be greater than or equal to 0")
    return float(value)


def _interval(value: Any) -> str | None:
    if value is not None and value not in LIMIT_RESETS:
        raise _bad(f"reset_interval: invalid value {value!r}; expected 'daily', 'weekly', 'monthly' or null")
    return value  # type: ignore[no-any-return]


def _flag(name: str, value: Any, *, optional: bool = True) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise _bad(f"{name}: expected a boolean{' or null' if optional else ''}")
    return value


def _strings(name: str, value: Any, choices: Iterable[str] | None = None) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _bad(f"{name}: expected an array of non-empty strings or null")
    if not value:
        raise _bad(f"{name}: must contain at least 1 item; send null to clear it")
    allowed = tuple(choices) if choices is not None else None
    if allowed is not None and any(item not in allowed for item in value):
        raise _bad(f"{name}: each item must be one of {', '.join(allowed)}")
    return list(value)


def _builtins(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad("content_filter_builtins: expected an array or null")
    out = []
    for index, entry in enumerate(value):
        where = f"content_filter_builtins[{index}]"
        if not isinstance(entry, dict):
            raise _bad(f"{where}: expected an object")
        slug, action, scope = entry.get("slug"), entry.get("action"), entry.get("scan_scope")
        if slug not in BUILTIN_SLUGS:
            raise _bad(f"{where}.slug: invalid value {slug!r}")
        if action not in FILTER_ACTIONS:
            raise _bad(f"{where}.action: expected one of {', '.join(FILTER_ACTIONS)}")
        if scope is not None and (slug != PROMPT_INJECTION or scope not in SCAN_SCOPES):
            raise _bad(f"{where}.scan_scope: only {PROMPT_INJECTION} takes one, user_only or all_messages")
        # The label is system-assigned: one sent is ignored.
        item = {"slug": slug, "action": action, "label": "[" + slug.upper().replace("-", "_") + "]"}
        if slug == PROMPT_INJECTION:
            item["scan_scope"] = scope or "all_messages"
        out.append(item)
    return out


def _regex_problem(pattern: str) -> str | None:
    if _LOOKAROUND.search(pattern) or _BACKREFERENCE.search(pattern) or _NESTED_QUANTIFIER.search(pattern):
        return "lookarounds, backreferences and nested quantifiers are not supported"
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _filters(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad("content_filters: expected an array or null")
    out = []
    for index, entry in enumerate(value):
        where = f"content_filters[{index}]"
        if not isinstance(entry, dict):
            raise _bad(f"{where}: expected an object")
        pattern = _text(f"{where}.pattern", entry.get("pattern"), max_length=PATTERN_MAX, optional=False)
        assert pattern is not None
        if entry.get("action") not in FILTER_ACTIONS:
            raise _bad(f"{where}.action: expected one of {', '.join(FILTER_ACTIONS)}")
        label = _text(f"{where}.label", entry.get("label"), max_length=LABEL_MAX, optional=True)
        problem = _regex_problem(pattern)
        if problem is not None:
            raise ApiError(400, f"invalid_regex_pattern: {where}.pattern: {problem}")
        out.append({"pattern": pattern, "action": entry["action"], "label": label})
    return out


def _checked(body: Mapping[str, Any], choices: GuardrailChoices) -> dict[str, Any]:
    """The settable fields ``body`` names, checked and in the form they are answered with."""
    out: dict[str, Any] = {}
    for name in SETTABLE:
        if name not in body:
            continue
        value = body[name]
        if name == "name":
            out[name] = _text(name, value, max_length=NAME_MAX, optional=False)
        elif name == "description":
            out[name] = _text(name, value, max_length=DESCRIPTION_MAX, optional=True)
        elif name == "limit_usd":
            out[name] = _limit_usd(value)
        elif name == "reset_interval":
            out[name] = _interval(value)
        elif name == "include_byok_in_budgets":
            out[name] = _flag(name, value, optional=False)
        elif name in LISTS:
            items = _strings(name, value)
            if items is not None and name.endswith("_models"):
                items = [choices.canonical_models.get(item, item) for item in items]
            out[name] = items
        elif name in FLAGS or name == "enforce_zdr":
            out[name] = _flag(name, value)
        elif name == "allowed_data_regions":
            out[name] = _strings(name, value, DATA_REGIONS)
        elif name == "content_filter_builtins":
            out[name] = _builtins(value)
        else:
            out[name] = _filters(value)
    fallback = out.pop("enforce_zdr", None)
    if fallback is not None:
        # The deprecated switch fills the per-group ones the request does not name.
        for name in ZDR_FLAGS:
            out.setdefault(name, fallback)
    return out


def _check_budget(limit_usd: Any, reset_interval: Any) -> None:
    if (limit_usd is None) != (reset_interval is None):
        raise _bad("limit_usd must be provided together with reset_interval")


# -- the store -----------------------------------------------------------------------------------------------


class GuardrailStore:
    """An account's guardrails and key assignments. Every method takes the account's lock."""

    def __init__(self, state: OpenRouterState) -> None:
        self._state = state
        self.choices = GuardrailChoices()
        self._guardrails: dict[str, dict[str, Any]] = {}  # id -> Guardrail object, in creation order
        self._assignments: dict[str, dict[str, Any]] = {}  # key hash -> assignment, in assignment order

    # -- helpers ---------------------------------------------------------------------------------------------

    def _key(self, key_hash: str) -> dict[str, Any] | None:
        """What the store reads of a key the account holds (name, label, workspace), or ``None`` (management
        keys are no API keys). Read from the key's record rather than its full state, which would bring its
        usage up to date and copy it for every assignment of every page listed."""
        rec = self._state._keys.get(key_hash)
        if rec is None or rec.management:
            return None
        return {"name": rec.name, "label": rec.label, "workspace_id": rec.workspace_id, "management": False}

    def _guardrail(self, guardrail_id: str) -> dict[str, Any]:
        found = self._guardrails.get(guardrail_id.lower())
        if found is None:
            raise _not_found()
        return found

    def _ordered(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        listed = list(items)
        return listed[::-1] if self.choices.order == "newest_first" else listed

    def _prune(self) -> None:
        # A deleted key takes its assignment with it; keys are never re-created under a hash, so dropping
        # the assignment when it is next looked at is the same as dropping it at the delete.
        for key_hash in [h for h in self._assignments if self._key(h) is None]:
            del self._assignments[key_hash]

    def _check_unique(self, name: str, workspace_id: str | None, own_id: str | None, status: int) -> None:
        if self.choices.duplicate_name_status is None:
            return
        for other in self._guardrails.values():
            if other["id"] != own_id and other["name"] == name and other["workspace_id"] == workspace_id:
                raise ApiError(status, f"A guardrail named {name!r} already exists in this workspace")

    def _assignment_api(self, record: dict[str, Any]) -> dict[str, Any]:
        key = self._key(record["key_hash"]) or {}
        return {**record, "key_name": key.get("name", ""), "key_label": key.get("label", "")}

    # -- guardrails ------------------------------------------------------------------------------------------

    def in_workspace(self, workspace_id: str | None) -> list[dict[str, Any]]:
        workspace = workspace_id or DEFAULT_WORKSPACE_ID
        with self._state.lock:
            found = [g for g in self._guardrails.values() if g["workspace_id"] == workspace]
            return copy.deepcopy(self._ordered(found))

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if "name" not in body:
            raise _bad("name: required")
        values = _checked(body, self.choices)
        _check_budget(values.get("limit_usd"), values.get("reset_interval"))
        raw_workspace = body.get("workspace_id")
        workspace = DEFAULT_WORKSPACE_ID if raw_workspace is None else check_workspace_id(raw_workspace)
        with self._state.lock:
            status = self.choices.duplicate_name_status
            self._check_unique(values["name"], workspace, None, status or 400)
            guardrail: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "name": values["name"],
                "description": None,
                "limit_usd": None,
                "reset_interval": None,
                "include_byok_in_budgets": False,
                **dict.fromkeys(LISTS),
                "enforce_zdr": None,
                **dict.fromkeys(FLAGS),
                "allowed_data_regions": None,
                "content_filter_builtins": None,
                "content_filters": None,
                "created_at": stamp(self._state.now()),
                "updated_at": None,
                "workspace_id": workspace,
            }
            guardrail.update(values)
            self._guardrails[guardrail["id"]] = guardrail
            return copy.deepcopy(guardrail)

    def get(self, guardrail_id: str) -> dict[str, Any]:
        with self._state.lock:
            return copy.deepcopy(self._guardrail(guardrail_id))

    def update(self, guardrail_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._state.lock:
            guardrail = self._guardrail(guardrail_id)
            if "workspace_id" in body:
                raise _bad("workspace_id: a guardrail cannot move to another workspace")
            values = _checked(body, self.choices)
            if not values:
                raise _bad("No update fields provided")
            merged = {**guardrail, **values}
            if self.choices.budget_rule_on_update:
                _check_budget(merged["limit_usd"], merged["reset_interval"])
            if "name" in values:
                self._check_unique(values["name"], guardrail["workspace_id"], guardrail["id"], 409)
            guardrail.update(values, updated_at=stamp(self._state.now()))
            return copy.deepcopy(guardrail)

    def delete(self, guardrail_id: str) -> None:
        with self._state.lock:
            gone = self._guardrail(guardrail_id)["id"]
            del self._guardrails[gone]
            # Its assignments go with it: the keys hold no guardrail afterwards.
            for key_hash in [h for h, a in self._assignments.items() if a["guardrail_id"] == gone]:
                del self._assignments[key_hash]

    # -- key assignments -------------------------------------------------------------------------------------

    def assign(self, guardrail_id: str, body: Mapping[str, Any], assigned_by: str | None) -> int:
        with self._state.lock:
            guardrail = self._guardrail(guardrail_id)
            hashes = _key_hashes(body)
            accepted = []
            refused = []
            for key_hash in hashes:
                key = self._key(key_hash)
                if key is None or key["workspace_id"] != guardrail["workspace_id"]:
                    refused.append(key_hash)
                else:
                    accepted.append(key_hash)
            status = self.choices.refuse_unknown_keys
            if refused and status is not None:
                shown = ", ".join(h[:12] for h in refused[:5]) + (" …" if len(refused) > 5 else "")
                raise ApiError(status, f"Keys not found in the guardrail's workspace: {shown}")
            count = 0
            for key_hash in accepted:
                held = self._assignments.get(key_hash)
                if held is not None and held["guardrail_id"] == guardrail["id"]:
                    count += self.choices.count_unchanged
                    continue
                # One guardrail per key: the new assignment replaces the old one (and moves to the end).
                self._assignments.pop(key_hash, None)
                self._assignments[key_hash] = {
                    "id": str(uuid.uuid4()),
                    "key_hash": key_hash,
                    "guardrail_id": guardrail["id"],
                    "assigned_by": assigned_by,
                    "created_at": stamp(self._state.now()),
                }
                count += 1
            return count

    def unassign(self, guardrail_id: str, body: Mapping[str, Any]) -> int:
        """Keys not assigned to this guardrail (or not known at all) are skipped and not counted."""
        with self._state.lock:
            gone = self._guardrail(guardrail_id)["id"]
            count = 0
            for key_hash in _key_hashes(body):
                held = self._assignments.get(key_hash)
                if held is not None and held["guardrail_id"] == gone:
                    del self._assignments[key_hash]
                    count += 1
            return count

    def assignments(self, guardrail_id: str | None) -> list[dict[str, Any]]:
        """The key assignments of one guardrail, or of all (``None``)."""
        with self._state.lock:
            wanted = None if guardrail_id is None else self._guardrail(guardrail_id)["id"]
            self._prune()
            found = [a for a in self._assignments.values() if wanted is None or a["guardrail_id"] == wanted]
            return [self._assignment_api(a) for a in self._ordered(found)]


def _key_hashes(body: Mapping[str, Any]) -> list[str]:
    hashes = body.get("key_hashes")
    if not isinstance(hashes, list) or not hashes:
        raise _bad("key_hashes: expected an array with at least 1 item")
    if not all(isinstance(h, str) and h for h in hashes):
        raise _bad("key_hashes: each item must be a non-empty string")
    return list(dict.fromkeys(hashes))


_STORES: weakref.WeakKeyDictionary[OpenRouterState, GuardrailStore] = weakref.WeakKeyDictionary()


def guardrails_of(state: OpenRouterState) -> GuardrailStore:
    """The guardrails of the account ``state`` models, made on first use."""
    with state.lock:
        store = _STORES.get(state)
        if store is None:
            store = _STORES[state] = GuardrailStore(state)
        return store


# -- the endpoints -------------------------------------------------------------------------------------------


def _window(query: Mapping[str, str]) -> tuple[int, int]:
    """``offset`` and ``limit`` of a list request, refused as the API refuses them."""
    bounds = {"offset": (0, None, 0), "limit": (1, PAGE_MAX, PAGE_DEFAULT)}
    values = []
    for name, (low, high, default) in bounds.items():
        raw = query.get(name)
        if raw is None or raw == "":
            values.append(default)
            continue
        if not (raw.isascii() and raw.isdigit()) or int(raw) < low or (high is not None and int(raw) > high):
            span = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise _bad(f"{name}: expected an integer {span} (got {raw!r})")
        values.append(int(raw))
    return values[0], values[1]


def _page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    offset, limit = _window(query)
    return {"data": items[offset : offset + limit], "total_count": len(items)}


def _body(call: Call) -> dict[str, Any]:
    """A request body that must be a JSON object, refused as the key routes refuse one."""
    raw = call.request.body
    if not raw:
        raise _bad("Request body is required")
    try:
        body = json.loads(raw)
    except ValueError:
        raise _bad("Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    return body


def _list_guardrails(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    query = call.request.query
    _window(query)
    workspace = query.get("workspace_id")
    found = guardrails_of(state).in_workspace(check_workspace_id(workspace) if workspace else None)
    return 200, _page(found, query)


def _create_guardrail(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 201, {"data": guardrails_of(state).create(_body(call))}


def _get_guardrail(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": guardrails_of(state).get(call.key_hash)}


def _update_guardrail(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"data": guardrails_of(state).update(call.key_hash, _body(call))}


def _delete_guardrail(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    guardrails_of(state).delete(call.key_hash)
    return 200, {"deleted": True}


def _assign_keys(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    store = guardrails_of(state)
    count = store.assign(call.key_hash, _body(call), call.caller.creator_user_id)
    return 200, {"assigned_count": count}


def _unassign_keys(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    return 200, {"unassigned_count": guardrails_of(state).unassign(call.key_hash, _body(call))}


def _guardrail_key_assignments(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    query = call.request.query
    _window(query)
    return 200, _page(guardrails_of(state).assignments(call.key_hash), query)


def _all_key_assignments(state: OpenRouterState, call: Call) -> tuple[int, Any]:
    query = call.request.query
    _window(query)
    return 200, _page(guardrails_of(state).assignments(None), query)


#: Path (below /api/v1, ``{id}`` standing for a guardrail's id) -> the endpoint of each method. Members
#: (``…/assignments/members``) are not modelled: those paths answer 404.
ROUTES: Final[dict[str, dict[str, Endpoint]]] = {
    "/guardrails": {"GET": _list_guardrails, "POST": _create_guardrail},
    "/guardrails/assignments/keys": {"GET": _all_key_assignments},
    "/guardrails/{id}": {"GET": _get_guardrail, "PATCH": _update_guardrail, "DELETE": _delete_guardrail},
    "/guardrails/{id}/assignments/keys": {"GET": _guardrail_key_assignments, "POST": _assign_keys},
    "/guardrails/{id}/assignments/keys/remove": {"POST": _unassign_keys},
}
_ID_PATH = re.compile(r"/guardrails/([^/]+)(/assignments/keys(?:/remove)?)?")


def match_path(api_path: str) -> tuple[str, str] | None:
    """The route a guardrail path with an ``{id}`` takes, and the id; ``None`` for any other path."""
    found = _ID_PATH.fullmatch(api_path)
    if found is None:
        return None
    return "/guardrails/{id}" + (found.group(2) or ""), found.group(1)
