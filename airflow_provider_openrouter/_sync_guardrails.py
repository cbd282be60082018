"""The tenant sync's guardrails: the declared ones checked, then compared with the account's. No I/O.

The sync owns the guardrails whose names start with its ``name_prefix``, as it owns keys. The planner is
handed one walk of each workspace's guardrails and one walk of the account's key assignments; it plans
guardrail creates, updates (only the settings a declaration names and the guardrail differs in) and prunes,
then which tenant keys to assign or unassign, grouped by guardrail so that the apply sends one request per
guardrail per hundred keys. Assignments are compared only for the tenants' own keys: keys outside the prefix
and retired keys keep whatever guardrail they hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, get_args

from airflow_provider_openrouter import _validation
from airflow_provider_openrouter.exceptions import OpenRouterValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment

GuardrailAct = Literal["create", "update", "unchanged", "keep", "delete", "assign", "unassign"]
GUARDRAIL_ACTIONS: Final[tuple[GuardrailAct, ...]] = get_args(GuardrailAct)
#: The guardrail actions ``max_destructive`` counts (an unassign counts once per key).
DESTRUCTIVE: Final = ("delete", "unassign")
_STRING_SETS: Final = (
    "allowed_models",
    "ignored_models",
    "allowed_providers",
    "ignored_providers",
    "allowed_data_regions",
)


@dataclass(frozen=True, slots=True)
class DesiredGuardrail:
    """A declared guardrail: ``settings`` holds only the settings named, as sent (``None`` clears one)."""

    name: str
    workspace_id: str | None
    settings: dict[str, Any]

    @property
    def create_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if v is not None}


class GuardrailAction(TypedDict):
    """One guardrail change of a plan; ``assign``/``unassign`` name the tenants whose keys move.

    In ``key_hashes``, ``None`` stands for the key the apply creates for that tenant (a create or rotation).
    """

    guardrail: str
    guardrail_id: str | None
    workspace_id: str | None
    action: GuardrailAct
    changes: dict[str, list[Any]]
    reason: str
    tenants: list[str]
    key_hashes: list[str | None]


def validate_guardrails(value: Any, name_prefix: str) -> dict[str, DesiredGuardrail] | None:
    """The declared guardrails by name; ``None``: guardrails are not managed. Every problem in one error."""
    from airflow_provider_openrouter._guardrail_validation import guardrail_body, validate_guardrail_name
    from airflow_provider_openrouter.guardrails import SETTING_NAMES

    value = _validation.rendered_none(value)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise OpenRouterValidationError(
            "guardrails", f"must be a list of mappings (got {type(value).__name__})"
        )
    known = ("name", "workspace_id", *SETTING_NAMES)
    problems: list[str] = []
    out: dict[str, DesiredGuardrail] = {}
    for index, row in enumerate(value):
        where = f"guardrails[{index}]"
        if not hasattr(row, "keys"):
            problems.append(f"{where}: must be a mapping (got {type(row).__name__})")
            continue
        unknown = sorted(str(k) for k in row if k not in known)
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
            continue
        given = {k: _validation.rendered_none(row[k]) for k in row}
        try:
            name = validate_guardrail_name(given.get("name"))
            where = f"{where} ({name!r})"
            if not name.startswith(name_prefix):
                raise OpenRouterValidationError("name", f"must start with name_prefix {name_prefix!r}")
            if name in out:
                raise OpenRouterValidationError("name", "declared twice")
            workspace = _validation.validate_workspace_id(given.get("workspace_id"))
            settings = {k: v for k, v in given.items() if k in SETTING_NAMES}
            guardrail_body(settings, name=name, workspace_id=workspace)  # a create's rules
            out[name] = DesiredGuardrail(name, workspace, guardrail_body(settings, update=True))
        except OpenRouterValidationError as exc:
            problems.append(f"{where}.{exc.field}: {exc.problem}")
    if problems:
        raise OpenRouterValidationError(
            "guardrails", f"{len(problems)} problem(s), nothing was sent:\n  " + "\n  ".join(problems)
        )
    return out


def _plain(value: Any) -> Any:
    """A setting as read back, JSON-safe for the plan."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in _plain_fields(value).items() if v is not None and k != "label"}
    return value


def _plain_fields(value: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}


def same_setting(field: str, current: Any, wanted: Any) -> bool:
    """Whether a guardrail's setting is what is declared, as OpenRouter would read it back: sets in any
    order, an assigned filter label or a default ``scan_scope`` not counting as drift."""
    if wanted is None:
        return current is None
    if current is None:
        return False
    if field in _STRING_SETS:
        return set(current) == set(wanted)
    if field == "limit_usd":
        return abs(float(current) - float(wanted)) < 1e-9
    if field in ("content_filter_builtins", "content_filters"):
        ident = ("slug", "action") if field == "content_filter_builtins" else ("pattern", "action")
        extra = "scan_scope" if field == "content_filter_builtins" else "label"
        have = {tuple(getattr(item, k) for k in ident): getattr(item, extra) for item in current}
        want = {tuple(item[k] for k in ident): item.get(extra) for item in wanted}
        return have.keys() == want.keys() and all(v is None or have[k] == v for k, v in want.items())
    return bool(current == wanted)


def drift(desired: DesiredGuardrail, guardrail: Guardrail) -> dict[str, list[Any]]:
    """``{setting: [current, wanted]}`` for the declared settings the guardrail differs in."""
    changes = {}
    for field, wanted in desired.settings.items():
        current = getattr(guardrail, field)
        if not same_setting(field, current, wanted):
            changes[field] = [_plain(current), wanted]
    return changes


def _action(
    name: str, gid: str | None, workspace: str | None, action: GuardrailAct, reason: str = "", **more: Any
) -> GuardrailAction:
    return {
        "guardrail": name,
        "guardrail_id": gid,
        "workspace_id": workspace,
        "action": action,
        "changes": more.get("changes", {}),
        "reason": reason,
        "tenants": more.get("tenants", []),
        "key_hashes": more.get("key_hashes", []),
    }


@dataclass
class GuardrailPlan:
    """What the guardrail side of a plan found: the actions and counts, and what the assignments need."""

    actions: list[GuardrailAction] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(GUARDRAIL_ACTIONS, 0))
    #: Each declared guardrail's id (``None`` until the apply creates it).
    ids: dict[str, str | None] = dataclasses.field(default_factory=dict)
    #: The owned guardrails found, by id: their names.
    owned: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The owned guardrails the plan deletes (their assignments go with them).
    deleting: set[str] = dataclasses.field(default_factory=set)

    def compare(
        self,
        desired: Mapping[str, DesiredGuardrail],
        workspace: str | None,
        walk: Iterable[Guardrail],
        *,
        prefix: str,
        prune: str,
    ) -> None:
        """One workspace's owned guardrails against the ones declared there."""
        found: dict[str, list[Guardrail]] = {}
        for guardrail in walk:
            if guardrail.name.startswith(prefix):
                found.setdefault(guardrail.name, []).append(guardrail)
                self.owned[guardrail.id] = guardrail.name
        for want in desired.values():
            if want.workspace_id != workspace:
                continue
            # Names need not be unique: the oldest is kept (a lost create's answer may have made a second).
            have = sorted(found.pop(want.name, []), key=lambda g: (g.created_at, g.id))
            if not have:
                self.counts["create"] += 1
                self.ids[want.name] = None
                changes = {k: [None, v] for k, v in want.create_settings.items()}
                self.actions.append(_action(want.name, None, workspace, "create", changes=changes))
                continue
            kept, extras = have[0], have[1:]
            self.ids[want.name] = kept.id
            changes = drift(want, kept)
            self.counts["update" if changes else "unchanged"] += 1
            if changes:
                self.actions.append(_action(want.name, kept.id, workspace, "update", changes=changes))
            for extra in extras:
                self._prune(extra, workspace, prune, f"duplicate of {kept.id} (the oldest is kept)")
        for name, extras in found.items():
            for extra in extras:
                self._prune(extra, workspace, prune, f"no guardrail {name!r} declared")

    def _prune(self, guardrail: Guardrail, workspace: str | None, prune: str, reason: str) -> None:
        # A guardrail cannot be disabled: short of deleting it, it is kept, and the tenants' keys leave it.
        action: GuardrailAct = "delete" if prune == "delete" else "keep"
        if action == "delete":
            self.deleting.add(guardrail.id)
        self.counts[action] += 1
        self.actions.append(_action(guardrail.name, guardrail.id, workspace, action, reason))

    def assign(
        self,
        tenants: Sequence[Mapping[str, Any]],
        kept: Mapping[str, str | None],
        assignments: Iterable[KeyAssignment],
    ) -> None:
        """The tenants' keys moved to their rows' guardrails: ``kept`` is each tenant's key that stays
        (``None``: the apply makes a new one). A key on an owned guardrail its row does not name leaves it."""
        ours = {key_hash for key_hash in kept.values() if key_hash is not None}
        held = {a.key_hash: a.guardrail_id for a in assignments if a.key_hash in ours}
        moves: dict[tuple[GuardrailAct, str, str | None], GuardrailAction] = {}
        for tenant in tenants:
            name, wanted = tenant["name"], tenant["guardrail"]
            key_hash = kept.get(name)
            current = held.get(key_hash) if key_hash is not None else None
            if wanted is not None:
                gid = self.ids[wanted]
                if key_hash is not None and gid is not None and current == gid:
                    continue
                act: GuardrailAct = "assign"
                target, target_id = wanted, gid
            elif current is not None and current in self.owned and current not in self.deleting:
                act, target, target_id = "unassign", self.owned[current], current
            else:
                continue
            move = moves.get((act, target, target_id))
            if move is None:
                move = moves[(act, target, target_id)] = _action(
                    target, target_id, tenant["workspace_id"], act
                )
                self.actions.append(move)
            move["tenants"].append(name)
            move["key_hashes"].append(key_hash)
            self.counts[act] += 1
        for move in moves.values():
            new = move["key_hashes"].count(None)
            move["reason"] = f"{len(move['tenants'])} key(s)" + (f", {new} made by this run" if new else "")


def idents(action: Mapping[str, Any]) -> list[list[Any]]:
    """What an approval compares: a guardrail change as a whole, an assignment per tenant (not by key hash,
    so that a key made by the approved run and not yet assigned still matches)."""
    if action["action"] in ("assign", "unassign"):
        return [
            [action["action"], action["guardrail"], tenant, None if action["action"] == "assign" else key]
            for tenant, key in zip(action["tenants"], action["key_hashes"], strict=True)
        ]
    return [[action["action"], action["guardrail"], action["guardrail_id"], action["changes"]]]
