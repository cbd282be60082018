"""The tenant sync's plan: the tenants table checked, then compared with one walk of each workspace.

Nothing here does I/O. The planner is handed the walk (``walk(workspace_id)``: the account's keys there,
newest first, as the hook lists them) and ``read_back(key_hash)``, the one lookup a plan may need: a tenant
whose key needed nothing is let go of as the walk passes it, and read again only when a second key turns up
under its name. So a plan of thousands of tenants is a function of rows and keys, testable without HTTP.

The plan is plain data, the shape of :class:`Plan`: XCom-safe, with hashes and names but never a plaintext.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, get_args

from airflow_provider_openrouter import _validation
from airflow_provider_openrouter._claims import (
    Claim,
    NameView,
    epoch_of,
    replaced_of,
    retired_of,
)
from airflow_provider_openrouter._sync_guardrails import GuardrailPlan
from airflow_provider_openrouter._sync_retirement import retired_action
from airflow_provider_openrouter.exceptions import OpenRouterValidationError
from airflow_provider_openrouter.models import KEY_FIELDS, KeyField, same_setting

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from airflow_provider_openrouter._sync_guardrails import DesiredGuardrail, GuardrailAction
    from airflow_provider_openrouter._sync_retirement import Retirement
    from airflow_provider_openrouter.guardrails import Guardrail, KeyAssignment
    from airflow_provider_openrouter.models import ApiKey

Action = Literal["create", "update", "unchanged", "rotate", "keep", "disable", "delete"]
Prune = Literal["keep", "disable", "delete"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
PRUNE: Final[tuple[Prune, ...]] = get_args(Prune)
#: The actions that make a new key (and so a plaintext to deliver).
NEW_KEY: Final = ("create", "rotate")
#: A validated row: a value per column of :data:`ROW_FIELDS`, and ``_given``, the columns the row named.
Tenant = dict[str, Any]

# --------------------------------------------------------------------------------------- the columns ---

# What finds a tenant's key: its name, in its workspace. The key's other synced fields are its settings.
_IDENTITY: Final = ("name", "workspace_id")
_SYNCED: Final[tuple[KeyField, ...]] = tuple(f for f in KEY_FIELDS.values() if f.synced)
#: The key fields a row keeps in line (an ``update`` sends them): those a new key is created with, then those
#: only an update sets, which is the order a plan lists a key's changes in.
DRIFT_FIELDS: Final[tuple[str, ...]] = tuple(
    f.name for f in sorted(_SYNCED, key=lambda f: not f.create) if f.update and f.name not in _IDENTITY
)
#: The key fields a new key is created with, besides the name it is created under.
CREATE_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in _SYNCED if f.create and f.name != "name")
# The sync's own columns: where a new key's plaintext goes, whether to rotate the key now, and the name of
# the declared guardrail its key is assigned to.
_OWN_COLUMNS: Final = ("deliver_to_variable", "rotate", "guardrail")
#: Every column of the tenants table, in the order rows are checked and problems listed.
ROW_FIELDS: Final[tuple[str, ...]] = (
    "name",
    *DRIFT_FIELDS,
    "workspace_id",
    *(f.name for f in _SYNCED if not f.update),  # settings a key is created with and keeps (expires_at)
    *_OWN_COLUMNS,
)
# A column left out is left as the key has it, except these: a tenant's key works unless its row says not.
_ENFORCED_DEFAULTS: Final[dict[str, Any]] = {"disabled": False}


# An old key after rotation: working until retired (see _sync_retirement), then disabled, then deleted.
def _column_check(key_field: KeyField) -> Callable[[dict[str, Any]], Any]:
    default = _ENFORCED_DEFAULTS.get(key_field.name)

    def check(given: dict[str, Any]) -> Any:
        value = given.get(key_field.name)
        return default if value is None else key_field.validate(value, text=True)

    return check


def _flag(given: dict[str, Any], field: str) -> bool:
    value = given.get(field)
    return value is not None and _validation.validate_bool(value, field=field, text=True)


def _guardrail_column(given: dict[str, Any]) -> str | None:
    value = given.get("guardrail")
    if value is not None and not isinstance(value, str):
        raise OpenRouterValidationError(
            "guardrail", f"must be a guardrail's name (got {type(value).__name__})"
        )
    return value


def _row_checks() -> tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...]:
    checks: dict[str, Callable[[dict[str, Any]], Any]] = {f.name: _column_check(f) for f in _SYNCED}
    # A tenant's name is one a key is delivered under: no marker of a provisional key may be in it.
    checks["name"] = lambda g: _validation.validate_provisioned_name(g.get("name"), field="name")
    checks["deliver_to_variable"] = lambda g: _validation.validate_variable_name(g.get("deliver_to_variable"))
    checks["rotate"] = lambda g: _flag(g, "rotate")
    checks["guardrail"] = _guardrail_column
    return tuple((field, checks[field]) for field in ROW_FIELDS)


# One check per column, each run on its own so that every problem is reported. Built once: a plan of 10,000
# tenants runs them 90,000 times.
_ROW_CHECKS: Final = _row_checks()
_KNOWN_FIELDS: Final = frozenset(ROW_FIELDS)
# What each optional column's check makes of a row without it: most rows name a few columns, and the others
# need no check.
_ABSENT: Final[dict[str, Any]] = {field: check({}) for field, check in _ROW_CHECKS if field != "name"}


def validate_tenants(
    rows: Any, name_prefix: str, guardrails: Mapping[str, DesiredGuardrail] | None = None
) -> list[Tenant]:
    """Every row checked; one error listing each bad row and field, before anything is sent. A row's
    ``guardrail`` must be one of ``guardrails``, declared in the row's workspace."""
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise OpenRouterValidationError("tenants", f"must be a list of mappings (got {type(rows).__name__})")
    problems: list[str] = []
    tenants: list[Tenant] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict) and not hasattr(row, "keys"):
            problems.append(f"tenants[{index}]: must be a mapping (got {type(row).__name__})")
            continue

        def label(row: Any = row, index: int = index) -> str:  # only when there is a problem to name
            name = row.get("name")
            return f"tenants[{index}]" + (f" ({name!r})" if isinstance(name, str) else "")

        if not _KNOWN_FIELDS.issuperset(row.keys()):
            unknown = sorted(str(k) for k in row if k not in _KNOWN_FIELDS)
            problems.append(
                f"{label()}: unknown field(s) {', '.join(unknown)}; known: {', '.join(ROW_FIELDS)}"
            )
        given: dict[str, Any] = {k: _validation.rendered_none(row[k]) for k in ROW_FIELDS if k in row}
        tenant: Tenant = {}
        for field, check in _ROW_CHECKS:
            if field not in given and field in _ABSENT:
                tenant[field] = _ABSENT[field]
                continue
            try:
                tenant[field] = check(given)
            except OpenRouterValidationError as exc:
                problems.append(f"{label()}.{field}: {exc.problem}")
        name = tenant.get("name")
        if isinstance(name, str):
            if not name.startswith(name_prefix):
                problems.append(f"{label()}.name: must start with name_prefix {name_prefix!r}")
            elif retired_of(name) is not None:
                problems.append(f"{label()}.name: must not end with a bracketed marker this operator uses")
            if name in seen:
                problems.append(f"{label()}.name: the same name as tenants[{seen[name]}]")
            seen.setdefault(name, index)
        wanted = tenant.get("guardrail")
        if wanted is not None:
            declared = guardrails.get(wanted) if guardrails is not None else None
            if declared is None:
                known = ", ".join(sorted(guardrails or ())) or "none are declared"
                problems.append(f"{label()}.guardrail: {wanted!r} is not a declared guardrail ({known})")
            elif declared.workspace_id != tenant.get("workspace_id"):
                problems.append(
                    f"{label()}.guardrail: {wanted!r} is declared in workspace {declared.workspace_id!r}, "
                    f"the row's key in {tenant.get('workspace_id')!r}; a key takes a guardrail of its own "
                    "workspace only"
                )
        tenant["_given"] = tuple(given)  # a tuple: a frozenset of two names takes four times the memory
        tenants.append(tenant)
    if problems:
        raise OpenRouterValidationError(
            "tenants", f"{len(problems)} problem(s), nothing was sent:\n  " + "\n  ".join(problems)
        )
    return tenants


def tenants_digest(tenants: Sequence[Tenant]) -> str:
    """What identifies the table a plan was made from: an approved plan applies only to the same table."""
    # Fed a thousand rows at a time: one string of a big table would double the plan's memory for a moment.
    encoder = json.JSONEncoder(sort_keys=True, default=str)
    hasher = hashlib.sha256(b"[")
    for start in range(0, len(tenants), 1000):
        rows_json = encoder.encode(
            [{k: v for k, v in t.items() if k != "_given"} for t in tenants[start : start + 1000]]
        )
        hasher.update(((", " if start else "") + rows_json[1:-1]).encode())
    hasher.update(b"]")
    return hasher.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ the plan ---


class _ActionFields(TypedDict):
    tenant: str | None
    workspace_id: str | None
    action: Action
    key_hash: str | None
    #: ``{field: [current, wanted]}``: only the fields the row sets and the key differs in.
    changes: dict[str, list[Any]]
    reason: str


class PlannedAction(_ActionFields, total=False):
    """One change of a plan (or an ``unchanged``/``keep`` that is reported)."""

    #: The name of a key no tenant owns (pruned, a duplicate, rotated out).
    key_name: str


class _PlanFields(TypedDict):
    name_prefix: str
    planned_at: str
    tenants_digest: str
    owned_keys: int
    counts: dict[str, int]
    actions: list[PlannedAction]


class Plan(_PlanFields, total=False):
    """What the sync returns and a ``mode="apply"`` task is given to approve against; the ``guardrail``
    fields only when the sync manages guardrails."""

    owned_guardrails: int
    guardrail_counts: dict[str, int]
    guardrail_actions: list[GuardrailAction]


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """What the operator's arguments say about planning; ``now`` is the moment ages are measured from."""

    name_prefix: str
    now: float
    prune: Prune = "keep"
    rotate_older_than: float | None = None
    rotation_overlap: float = 86400.0
    rotation_grace: float = 7 * 86400.0
    #: See :mod:`~airflow_provider_openrouter._sync_retirement`: ``None`` retires after the fixed overlap.
    retire_when_idle_for: float | None = None
    retire_deadline: float = 7 * 86400.0


class Planner:
    """Compare the tenants with one walk of each workspace.

    Besides the plan, it keeps what the walk saw for applying right after: :attr:`views`, the keys and claims
    of each name to create or rotate, and :attr:`leftovers`, the claims on the other names (a killed run's,
    most likely), which applying collects so that a rerun leaves no undelivered key behind.
    """

    def __init__(
        self,
        tenants: Sequence[Tenant],
        policy: PlanPolicy,
        guardrails: Mapping[str, DesiredGuardrail] | None = None,
    ) -> None:
        self.tenants = tenants
        self.policy = policy
        self.guardrails = guardrails
        #: With guardrails managed: each tenant's key that stays (``None``: the plan makes a new one).
        self.kept: dict[str, str | None] | None = None if guardrails is None else {}
        self.views: dict[str | None, dict[str, NameView]] = {}
        self.leftovers: dict[str | None, list[NameView]] = {}

    def plan(
        self,
        walk: Callable[[str | None], Iterable[ApiKey]],
        *,
        read_back: Callable[[str], ApiKey | None],
        digest: Callable[[], str] | None = None,
        guardrail_walk: Callable[[str | None], Iterable[Guardrail]] | None = None,
        assignments: Callable[[], Iterable[KeyAssignment]] | None = None,
    ) -> Plan:
        """The plan; ``digest`` gives the tenants' digest once the walks are done (default: worked out then,
        by :func:`tenants_digest`; a caller walking over a network works it out meanwhile).

        With guardrails managed, ``guardrail_walk(workspace_id)`` lists a workspace's guardrails and
        ``assignments()`` the account's key assignments; the guardrails are compared first (a tenant's
        assignment needs its guardrail's id), the assignments last (they need each tenant's kept key)."""
        by_workspace: dict[str | None, list[Tenant]] = {}
        for tenant in self.tenants:
            by_workspace.setdefault(tenant["workspace_id"], []).append(tenant)
        if not by_workspace:
            by_workspace[None] = []
        guarded: GuardrailPlan | None = None
        if self.guardrails is not None:
            if guardrail_walk is None or assignments is None:
                raise TypeError("managing guardrails needs guardrail_walk and assignments")
            guarded = GuardrailPlan()
            spaces = dict.fromkeys([*by_workspace, *(g.workspace_id for g in self.guardrails.values())])
            for space in spaces:
                guarded.compare(
                    self.guardrails,
                    space,
                    guardrail_walk(space),
                    prefix=self.policy.name_prefix,
                    prune=self.policy.prune,
                )
        actions: list[PlannedAction] = []
        counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        owned = 0
        for workspace, tenants in by_workspace.items():
            owned += self._compare(
                workspace, tenants, walk(workspace), read_back=read_back, into=(actions, counts)
            )
        plan: Plan = {
            "name_prefix": self.policy.name_prefix,
            "planned_at": dt.datetime.fromtimestamp(self.policy.now, dt.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "tenants_digest": digest() if digest is not None else tenants_digest(self.tenants),
            "owned_keys": owned,
            "counts": counts,
            "actions": actions,
        }
        if guarded is not None and self.kept is not None and assignments is not None:
            guarded.assign(self.tenants, self.kept, assignments())
            plan["owned_guardrails"] = len(guarded.owned)
            plan["guardrail_counts"] = guarded.counts
            plan["guardrail_actions"] = guarded.actions
        return plan

    def _compare(
        self,
        workspace: str | None,
        tenants: list[Tenant],
        keys: Iterable[ApiKey],
        *,
        read_back: Callable[[str], ApiKey | None],
        into: tuple[list[PlannedAction], dict[str, int]],
    ) -> int:
        """One workspace's actions and counts added ``into`` the plan's; returns how many keys there the
        prefix owns."""
        actions, counts = into
        prefix = self.policy.name_prefix
        wanted = {tenant["name"]: tenant for tenant in tenants}
        finals: dict[str, list[ApiKey]] = {}
        # Tenants whose one key so far needs nothing (most of them, most days), by name: its hash. Their keys
        # are let go as the walk passes them, so a big account's keys do not pile up in memory (nor make the
        # garbage collector sweep the whole process while they do).
        quiet: dict[str, str] = {}
        claims: dict[str, list[Claim]] = {}
        replaced: dict[str, list[ApiKey]] = {}
        retired: list[tuple[ApiKey, str, float]] = []
        views: dict[str, NameView] = {}
        leftovers: list[NameView] = []
        self.views[workspace], self.leftovers[workspace] = views, leftovers
        owned = 0
        for key in keys:
            name = key.name
            if not name.startswith(prefix):
                continue  # not ours
            marked = name.endswith("]")  # claims and retired keys end with their marker
            claim = Claim.parse(key) if marked else None
            if claim is not None:  # the provisioning sequence settles it
                claims.setdefault(claim.name, []).append(claim)
                continue
            taken_from = replaced_of(name) if marked else None
            if taken_from is not None:  # so does it an old key a replace took out
                replaced.setdefault(taken_from, []).append(key)
                continue
            owned += 1
            rotated = retired_of(name) if marked else None
            if rotated is not None:
                retired.append((key, *rotated))
                continue
            if name in quiet:
                # A second key under the name: the first one is read back so that the duplicates are settled
                # like any others.
                first = read_back(quiet.pop(name))
                finals[name] = [first, key] if first is not None else [key]
            elif name not in finals and name in wanted and self._needs_nothing(wanted[name], key):
                quiet[name] = key.hash
            else:
                finals.setdefault(name, []).append(key)
        for tenant in tenants:
            name = tenant["name"]
            kept = quiet.pop(name, None)
            if kept is not None:
                if self.kept is not None:
                    self.kept[name] = kept
                counts["unchanged"] += 1
                held, out = claims.pop(name, []), replaced.pop(name, [])
                if held or out:
                    leftovers.append(NameView(name, claims=held, replaced=out))
                continue
            found = finals.pop(name, [])
            planned = self._tenant(tenant, found, workspace, counts)
            held, out = claims.pop(name, []), replaced.pop(name, [])
            if (found or held or out) and any(
                a["tenant"] == name and a["action"] in NEW_KEY for a in planned
            ):
                views[name] = NameView(name, finals=list(found), claims=held, replaced=out)
            elif held or out:
                leftovers.append(NameView(name, claims=held, replaced=out))
            actions.extend(planned)
        leftovers.extend(
            NameView(name, claims=held, replaced=replaced.pop(name, [])) for name, held in claims.items()
        )
        leftovers.extend(NameView(name, replaced=out) for name, out in replaced.items())
        for name, found in finals.items():
            for key in found:
                actions.append(self._prune(key, workspace, counts, f"no tenant {name!r} in the table"))
        for key, name, at in retired:
            action = self._retired(key, name, at, workspace)
            if action is not None:
                counts[action["action"]] += 1
                actions.append(action)
        return owned

    def _tenant(
        self, tenant: Tenant, keys: list[ApiKey], workspace: str | None, counts: dict[str, int]
    ) -> list[PlannedAction]:
        name = tenant["name"]
        if not keys:
            if self.kept is not None:
                self.kept[name] = None
            counts["create"] += 1
            changes = _wanted(tenant)
            return [_for_tenant(name, workspace, "create", None, changes=changes)]
        # Several keys under one name (made outside this operator): keep the newest, the others go the way of
        # the prune policy, and the plan says so.
        if len(keys) > 1:
            keys = sorted(keys, key=lambda k: (epoch_of(k.created_at) or 0.0, k.hash), reverse=True)
        key, extras = keys[0], keys[1:]
        if self.kept is not None:
            self.kept[name] = None if self._rotates(tenant, key) else key.hash
        out = [
            self._prune(extra, workspace, counts, f"duplicate of {key.hash} (the newest is kept)")
            for extra in extras
        ]
        if self._rotates(tenant, key):
            counts["rotate"] += 1
            reason = "asked for" if tenant["rotate"] else f"older than {self.policy.rotate_older_than:.0f} s"
            out.append(
                _for_tenant(name, workspace, "rotate", key.hash, changes=_drift(tenant, key), reason=reason)
            )
            return out
        changes = _drift(tenant, key)
        counts["update" if changes else "unchanged"] += 1
        if changes:
            out.append(_for_tenant(name, workspace, "update", key.hash, changes=changes))
        return out

    def _rotates(self, tenant: Tenant, key: ApiKey) -> bool:
        older_than = self.policy.rotate_older_than
        return bool(tenant["rotate"]) or (
            older_than is not None and self.policy.now - (epoch_of(key.created_at) or 0.0) > older_than
        )

    def _needs_nothing(self, tenant: Tenant, key: ApiKey) -> bool:
        return not self._rotates(tenant, key) and not _drift(tenant, key)

    def _prune(
        self, key: ApiKey, workspace: str | None, counts: dict[str, int], reason: str
    ) -> PlannedAction:
        action: Action = self.policy.prune
        if action == "disable" and key.disabled:
            action = "keep"
        counts[action] += 1
        return {
            "tenant": None,
            "workspace_id": workspace,
            "action": action,
            "key_hash": key.hash,
            "key_name": key.name,
            "changes": {},
            "reason": reason,
        }

    def _retired(self, key: ApiKey, name: str, at: float, workspace: str | None) -> PlannedAction | None:
        policy = self.policy
        rules: Retirement = {
            "rotation_overlap": policy.rotation_overlap,
            "rotation_grace": policy.rotation_grace,
            "retire_when_idle_for": policy.retire_when_idle_for,
            "retire_deadline": policy.retire_deadline,
        }
        decided = retired_action(key, name, at, now=policy.now, rules=rules)
        if decided is None:
            return None
        action, reason = decided
        return {
            "tenant": None,
            "workspace_id": workspace,
            "key_hash": key.hash,
            "key_name": key.name,
            "changes": {},
            "action": action,
            "reason": reason,
        }


def _for_tenant(
    name: str,
    workspace: str | None,
    action: Action,
    key_hash: str | None,
    *,
    changes: dict[str, list[Any]],
    reason: str = "",
) -> PlannedAction:
    return {
        "tenant": name,
        "workspace_id": workspace,
        "action": action,
        "key_hash": key_hash,
        "changes": changes,
        "reason": reason,
    }


def _wanted(tenant: Tenant) -> dict[str, list[Any]]:
    """A new key's settings, as changes from nothing."""
    return {f: [None, tenant[f]] for f in DRIFT_FIELDS if f in tenant["_given"] and tenant[f] is not None}


def _drift(tenant: Tenant, key: ApiKey) -> dict[str, list[Any]]:
    """Only the fields the row sets (or enforces) and the key differs in: ``{field: [current, wanted]}``."""
    changes = {}
    for field in DRIFT_FIELDS:
        if field not in tenant["_given"] and field not in _ENFORCED_DEFAULTS:
            continue
        current, wanted = getattr(key, field), tenant[field]
        if wanted is None and not KEY_FIELDS[field].clears:
            continue  # no setting to clear: the row leaves it to OpenRouter
        if not same_setting(current, wanted):
            changes[field] = [current, wanted]
    return changes
