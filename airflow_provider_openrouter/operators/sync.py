"""Declarative tenant sync: make the keys under a name prefix match a table of tenants.

The module is imported when DAG files are parsed, so it stays cheap: the hook, the provisioning sequence and
the thread pool are imported inside ``execute``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow.sdk import BaseOperator

from airflow_provider_openrouter import _validation
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter.exceptions import (
    OpenRouterError,
    OpenRouterValidationError,
    SyncRefusedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow.sdk import Context

    from airflow_provider_openrouter._provisioning import NameView
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

__all__ = ["PLAN_MARKDOWN_XCOM_KEY", "SyncApiKeysOperator", "plan_markdown"]

Prune = Literal["keep", "disable", "delete"]
Mode = Literal["plan_and_apply", "plan", "apply"]
# Where a ``mode="plan"`` task leaves the plan as a Markdown table, for an approval step to show.
PLAN_MARKDOWN_XCOM_KEY: Final = "plan_markdown"
ACTIONS: Final = ("create", "update", "unchanged", "rotate", "keep", "disable", "delete")
# The fields a tenant row compares against its key (kept small on purpose: the key fields' one declaration
# can take it over). ``expires_at`` applies to new keys only: OpenRouter cannot change it afterwards.
DRIFT_FIELDS: Final = ("limit", "limit_reset", "include_byok_in_limit", "disabled")
ROW_FIELDS: Final = (
    "name",
    *DRIFT_FIELDS,
    "workspace_id",
    "expires_at",
    "deliver_to_variable",
    "rotate",
)
# Names claimed per check: each name's key and claim are held until its chunk is done (about 2.5 KB); each
# check reads the keys created since the one before, a page per chunk.
CHUNK: Final = 100
NEW_KEY: Final = ("create", "rotate")
# An old key after rotation: still working until the overlap ends, then disabled, then deleted.
_RETIRED = re.compile(r"^(?P<name>.+) \[retired (?P<at>\d{9,12})\]$")


def retired_name(name: str, at: float) -> str:
    return f"{name} [retired {int(at)}]"


def _seconds(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
        or not math.isfinite(value)
    ):
        raise OpenRouterValidationError(
            field, f"must be a number of seconds or a timedelta, >= 0 (got {value!r})"
        )
    return float(value)


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(current, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(float(current), float(wanted), rel_tol=0.0, abs_tol=1e-9)
    return bool(current == wanted)


def _optional_bool(given: dict[str, Any], field: str) -> bool | None:
    value = given.get(field)
    return None if value is None else _validation.validate_bool(value, field=field, text=True)


# One check per field of a row, each run on its own so that every problem is reported. Built once: a plan of
# 10,000 tenants runs them 90,000 times.
_ROW_CHECKS: Final[tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...]] = (
    ("name", lambda g: _validation.validate_provisioned_name(g.get("name"), field="name")),
    ("limit", lambda g: _validation.validate_limit(g.get("limit"))),
    ("limit_reset", lambda g: _validation.validate_limit_reset(g.get("limit_reset"))),
    ("include_byok_in_limit", lambda g: _optional_bool(g, "include_byok_in_limit")),
    ("disabled", lambda g: bool(_optional_bool(g, "disabled"))),
    ("workspace_id", lambda g: _validation.validate_workspace_id(g.get("workspace_id"))),
    ("expires_at", lambda g: _validation.validate_expires_at(g.get("expires_at"))),
    ("deliver_to_variable", lambda g: _validation.validate_variable_name(g.get("deliver_to_variable"))),
    ("rotate", lambda g: bool(_optional_bool(g, "rotate"))),
)
_KNOWN_FIELDS: Final = frozenset(ROW_FIELDS)
# What each optional field's check makes of a row without it: most rows name a few fields, and the others
# need no check.
_ABSENT: Final[dict[str, Any]] = {field: check({}) for field, check in _ROW_CHECKS if field != "name"}


def validate_tenants(rows: Any, name_prefix: str) -> list[dict[str, Any]]:
    """Every row checked; one error listing each bad row and field, before anything is sent."""
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise OpenRouterValidationError("tenants", f"must be a list of mappings (got {type(rows).__name__})")
    v = _validation
    problems: list[str] = []
    tenants: list[dict[str, Any]] = []
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
        given: dict[str, Any] = {k: v.rendered_none(row[k]) for k in ROW_FIELDS if k in row}
        tenant: dict[str, Any] = {}
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
            elif _RETIRED.match(name):
                problems.append(f"{label()}.name: must not end with a bracketed marker this operator uses")
            if name in seen:
                problems.append(f"{label()}.name: the same name as tenants[{seen[name]}]")
            seen.setdefault(name, index)
        tenant["_given"] = tuple(given)  # a tuple: a frozenset of two names takes four times the memory
        tenants.append(tenant)
    if problems:
        raise OpenRouterValidationError(
            "tenants", f"{len(problems)} problem(s), nothing was sent:\n  " + "\n  ".join(problems)
        )
    return tenants


def _epoch(stamp: str | None) -> float:
    from airflow_provider_openrouter._provisioning import _epoch as parse

    return parse(stamp) or 0.0


class Planner:
    """Compare the tenants with one walk of each workspace; the plan is plain data (XCom-safe, no secrets)."""

    def __init__(
        self,
        hook: OpenRouterHook,
        tenants: list[dict[str, Any]],
        *,
        name_prefix: str,
        prune: Prune,
        rotate_older_than: float | None,
        rotation_overlap: float,
        rotation_grace: float,
        now: float,
    ) -> None:
        self.hook = hook
        self.tenants = tenants
        self.prefix = name_prefix
        self.prune = prune
        self.rotate_older_than = rotate_older_than
        self.overlap = rotation_overlap
        self.grace = rotation_grace
        self.now = now
        # What the walk saw of each name to create or rotate, by workspace: the keys under it and its claims.
        # Applying right after the plan starts from these rather than walking the account again.
        self.views: dict[str | None, dict[str, NameView]] = {}
        # Each workspace's walk's horizon: claims made after the plan are checked against the keys created
        # since, not the whole account.
        self.horizons: dict[str | None, frozenset[str] | None] = {}
        # Claims on the other names (a killed run's, most likely): applying deletes those past lease and
        # grace, so that a rerun leaves no undelivered key behind even where nothing is left to create.
        self.leftovers: dict[str | None, list[NameView]] = {}

    def plan(self) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        # The digest is worked out while the walk waits for its pages.
        with ThreadPoolExecutor(1, thread_name_prefix="sync-digest") as pool:
            digest = pool.submit(self._digest)
            plan = self._compare()
            plan["tenants_digest"] = digest.result()
        return plan

    def _digest(self) -> str:
        # The digest of the JSON list of rows, fed a thousand rows at a time: one string of a big table would
        # double the plan's memory for a moment.
        encoder = json.JSONEncoder(sort_keys=True, default=str)
        hasher = hashlib.sha256(b"[")
        for start in range(0, len(self.tenants), 1000):
            rows_json = encoder.encode(
                [{k: v for k, v in t.items() if k != "_given"} for t in self.tenants[start : start + 1000]]
            )
            hasher.update(((", " if start else "") + rows_json[1:-1]).encode())
        hasher.update(b"]")
        return hasher.hexdigest()[:16]

    def _compare(self) -> dict[str, Any]:
        from airflow_provider_openrouter._provisioning import Claim, Horizon, NameView

        by_workspace: dict[str | None, list[dict[str, Any]]] = {}
        for tenant in self.tenants:
            by_workspace.setdefault(tenant["workspace_id"], []).append(tenant)
        if not by_workspace:
            by_workspace[None] = []
        rows: list[dict[str, Any]] = []
        counts = dict.fromkeys(ACTIONS, 0)
        owned_total = 0
        for workspace, tenants in by_workspace.items():
            wanted = {tenant["name"]: tenant for tenant in tenants}
            finals: dict[str, list[ApiKey]] = {}
            # Tenants whose one key so far needs nothing (most of them, most days), by name: its hash. Their
            # keys are let go as the walk passes them, so a big account's keys do not pile up in memory (nor
            # make the garbage collector sweep the whole process while they do).
            quiet: dict[str, str] = {}
            claims: dict[str, list[Claim]] = {}
            retired: list[tuple[ApiKey, str, float]] = []
            views = self.views[workspace] = {}
            leftovers = self.leftovers[workspace] = []
            horizon = Horizon()
            for key in horizon.watch(
                self.hook.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace)
            ):
                name = key.name
                if not name.startswith(self.prefix):
                    continue  # not ours
                marked = name.endswith("]")  # claims and retired keys end with their marker
                claim = Claim.parse(key) if marked else None
                if claim is not None:  # the provisioning sequence settles it
                    claims.setdefault(claim.name, []).append(claim)
                    continue
                owned_total += 1
                match = _RETIRED.match(name) if marked else None
                if match:
                    retired.append((key, match["name"], float(match["at"])))
                    continue
                if name in quiet:
                    # A second key under the name: the first one is read back (a request per such name) so
                    # that the duplicates are settled like any others.
                    first = self._read_back(quiet.pop(name))
                    finals[name] = [first, key] if first is not None else [key]
                elif name not in finals and name in wanted and self._needs_nothing(wanted[name], key):
                    quiet[name] = key.hash
                else:
                    finals.setdefault(name, []).append(key)
            self.horizons[workspace] = horizon.top
            for tenant in tenants:
                name = tenant["name"]
                if quiet.pop(name, None) is not None:
                    counts["unchanged"] += 1
                    held = claims.pop(name, [])
                    if held:
                        leftovers.append(NameView(name, claims=held))
                    continue
                keys = finals.pop(name, [])
                planned = self._tenant(tenant, keys, workspace, counts)
                held = claims.pop(name, [])
                if (keys or held) and any(r["tenant"] == name and r["action"] in NEW_KEY for r in planned):
                    views[name] = NameView(name, finals=list(keys), claims=held)
                elif held:
                    leftovers.append(NameView(name, claims=held))
                rows.extend(planned)
            leftovers.extend(NameView(name, claims=held) for name, held in claims.items())
            for name, keys in finals.items():
                for key in keys:
                    rows.append(self._prune(key, workspace, counts, f"no tenant {name!r} in the table"))
            for key, name, at in retired:
                row = self._retired(key, name, at, workspace)
                if row is not None:
                    counts[row["action"]] += 1
                    rows.append(row)
        return {
            "name_prefix": self.prefix,
            "planned_at": dt.datetime.fromtimestamp(self.now, dt.timezone.utc).isoformat(timespec="seconds"),
            "tenants_digest": "",
            "owned_keys": owned_total,
            "counts": counts,
            "actions": rows,
        }

    def _tenant(
        self, tenant: dict[str, Any], keys: list[ApiKey], workspace: str | None, counts: dict[str, int]
    ) -> list[dict[str, Any]]:
        name = tenant["name"]
        base = {"tenant": name, "workspace_id": workspace}
        if not keys:
            counts["create"] += 1
            return [
                {**base, "action": "create", "key_hash": None, "changes": self._wanted(tenant), "reason": ""}
            ]
        # Several keys under one name (made outside this operator): keep the newest, the others go the way of
        # the prune policy, and the plan says so.
        if len(keys) > 1:
            keys = sorted(keys, key=lambda k: (_epoch(k.created_at), k.hash), reverse=True)
        key, extras = keys[0], keys[1:]
        out = [
            self._prune(extra, workspace, counts, f"duplicate of {key.hash} (the newest is kept)")
            for extra in extras
        ]
        if self._rotates(tenant, key):
            counts["rotate"] += 1
            reason = "asked for" if tenant["rotate"] else f"older than {self.rotate_older_than:.0f} s"
            out.append(
                {
                    **base,
                    "action": "rotate",
                    "key_hash": key.hash,
                    "changes": self._drift(tenant, key),
                    "reason": reason,
                }
            )
            return out
        changes = self._drift(tenant, key)
        action = "update" if changes else "unchanged"
        counts[action] += 1
        if changes:
            out.append({**base, "action": "update", "key_hash": key.hash, "changes": changes, "reason": ""})
        return out

    def _rotates(self, tenant: dict[str, Any], key: ApiKey) -> bool:
        return bool(tenant["rotate"]) or (
            self.rotate_older_than is not None and self.now - _epoch(key.created_at) > self.rotate_older_than
        )

    def _needs_nothing(self, tenant: dict[str, Any], key: ApiKey) -> bool:
        return not self._rotates(tenant, key) and not self._drift(tenant, key)

    def _read_back(self, key_hash: str) -> ApiKey | None:
        from airflow_provider_openrouter.exceptions import NotFoundError

        try:
            return self.hook.get_key(key_hash)
        except NotFoundError:
            return None

    @staticmethod
    def _wanted(tenant: dict[str, Any]) -> dict[str, Any]:
        return {f: [None, tenant[f]] for f in DRIFT_FIELDS if f in tenant["_given"] and tenant[f] is not None}

    @staticmethod
    def _drift(tenant: dict[str, Any], key: ApiKey) -> dict[str, Any]:
        """Only the fields the row sets and the key differs in: ``{field: [current, wanted]}``."""
        changes = {}
        for field in DRIFT_FIELDS:
            if field not in tenant["_given"] and field != "disabled":
                continue
            current, wanted = getattr(key, field), tenant[field]
            if field == "include_byok_in_limit" and wanted is None:
                continue
            if not _same(current, wanted):
                changes[field] = [current, wanted]
        return changes

    def _prune(
        self, key: ApiKey, workspace: str | None, counts: dict[str, int], reason: str
    ) -> dict[str, Any]:
        action = self.prune
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

    def _retired(self, key: ApiKey, name: str, at: float, workspace: str | None) -> dict[str, Any] | None:
        base: dict[str, Any] = {
            "tenant": None,
            "workspace_id": workspace,
            "key_hash": key.hash,
            "key_name": key.name,
            "changes": {},
        }
        if self.now >= at + self.overlap + self.grace:
            return {**base, "action": "delete", "reason": f"rotated out of {name!r}; overlap and grace over"}
        if self.now >= at + self.overlap and not key.disabled:
            return {**base, "action": "disable", "reason": f"rotated out of {name!r}; overlap over"}
        return None


def plan_table(plan: Mapping[str, Any], *, limit: int = 200) -> str:
    """The plan as the log shows it: one line per change, then the counts."""
    rows = [("ACTION", "TENANT / KEY", "HASH", "CHANGES / REASON")]
    for item in plan["actions"][:limit]:
        changes = ", ".join(f"{f}: {old!r} -> {new!r}" for f, (old, new) in item["changes"].items())
        detail = "; ".join(part for part in (changes, item.get("reason") or "") if part)
        who = item["tenant"] or item.get("key_name") or ""
        rows.append((item["action"], who, (item["key_hash"] or "(new)")[:12], detail))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    more = len(plan["actions"]) - limit
    if more > 0:
        lines.append(f"... and {more} more (the full plan is in the return value)")
    counts = plan["counts"]
    lines.append("counts: " + ", ".join(f"{a} {counts.get(a, 0)}" for a in ACTIONS))
    return "\n".join(lines)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def plan_markdown(plan: Mapping[str, Any], *, limit: int = 100) -> str:
    """The plan as a Markdown table, for an approver (the human-in-the-loop ``body`` renders Markdown)."""
    counts = plan["counts"]
    lines = [
        "**Counts:** " + ", ".join(f"{a} {counts.get(a, 0)}" for a in ACTIONS),
        "",
        "| Action | Tenant / key | Hash | Changes / reason |",
        "|---|---|---|---|",
    ]
    for item in plan["actions"][:limit]:
        changes = ", ".join(f"{f}: {old!r} → {new!r}" for f, (old, new) in item["changes"].items())
        detail = "; ".join(part for part in (changes, item.get("reason") or "") if part)
        who = item["tenant"] or item.get("key_name") or ""
        hash_ = f"`{item['key_hash'][:12]}`" if item["key_hash"] else "(new)"
        lines.append(f"| {item['action']} | {_md(who)} | {hash_} | {_md(detail)} |")
    if not plan["actions"]:
        lines.append("| (nothing to change) | | | |")
    more = len(plan["actions"]) - limit
    if more > 0:
        lines.append(f"\n… and {more} more: the full plan is the plan task's return value.")
    return "\n".join(lines)


class Progress:
    """A line every ``every`` seconds: done / total, rate, time left."""

    def __init__(self, log: Any, what: str, total: int, every: float = 5.0) -> None:
        self.log, self.what, self.total, self.every = log, what, total, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def step(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.every or self.done >= self.total:
                return
            self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate else float("inf")
        self.log.info(
            "%s: %d / %d done, %.1f/s, about %.0f s left", self.what, self.done, self.total, rate, left
        )


class SyncApiKeysOperator(BaseOperator):
    """Make the OpenRouter keys whose names start with ``name_prefix`` match a table of tenants.

    One walk of the account (per workspace) is compared with ``tenants``; each tenant gets one action:
    ``create`` (no key), ``update`` (only the fields that drifted), ``unchanged`` or ``rotate``. Owned keys
    (names starting with ``name_prefix``) without a tenant are kept, disabled or deleted as ``prune`` says,
    and so are the extra keys when several carry one tenant's name (the newest is kept). Keys outside the
    prefix are never touched. The plan is logged as a table and returned (no plaintext in it), with
    ``counts`` per action. See :doc:`/howto/sync_api_keys`.

    :param tenants: The desired state: a list of mappings with ``name`` and optionally ``limit``,
        ``limit_reset``, ``include_byok_in_limit``, ``disabled``, ``workspace_id``, ``expires_at`` (new keys),
        ``deliver_to_variable`` and ``rotate``. Every row is checked before anything is sent. (templated)
    :param name_prefix: The keys this operator owns; every tenant name must start with it.
    :param prune: What happens to owned keys without a tenant: ``"keep"`` (default), ``"disable"``,
        ``"delete"``.
    :param mode: ``"plan_and_apply"`` (default), ``"plan"`` (same as ``dry_run=True``) or ``"apply"``, which
        applies the plan given as ``plan`` after checking that the account has not changed in a way that
        matters since.
    :param plan: The approved plan (the return value of a ``mode="plan"`` task), for ``mode="apply"``.
        (templated)
    :param dry_run: Compute and return the plan, change nothing.
    :param max_destructive: The most disables and deletes one run may make: a whole number, or a fraction
        (below 1) of the owned keys. Default 10. Above it the run refuses before changing anything.
    :param rotate_older_than: Rotate keys older than this (seconds or a ``timedelta``); ``None``: only rows
        with ``rotate`` set.
    :param rotation_overlap: How long a rotated-out key keeps working (default a day); then a run disables it.
    :param rotation_grace: How long it then stays disabled before a run deletes it (default a week).
    :param deliver_to_callable: ``deliver_to_callable(created_key, context)``: hands each new plaintext on.
    :param max_workers: Requests in flight at once while applying.
    :param claim_lease: Lease of a creating task's provisional key (see :doc:`/guarantees`).
    :param openrouter_conn_id: The OpenRouter connection.
    """

    template_fields: Sequence[str] = ("tenants", "plan")
    ui_color = "#e8eefc"

    def __init__(
        self,
        *,
        tenants: Any,
        name_prefix: str,
        prune: Literal["keep", "disable", "delete"] = "keep",
        mode: Literal["plan_and_apply", "plan", "apply"] = "plan_and_apply",
        plan: Any = None,
        dry_run: bool = False,
        max_destructive: float = 10,
        rotate_older_than: float | dt.timedelta | None = None,
        rotation_overlap: float | dt.timedelta = dt.timedelta(days=1),
        rotation_grace: float | dt.timedelta = dt.timedelta(days=7),
        deliver_to_callable: Callable[[CreatedApiKey, Context], None] | None = None,
        max_workers: int = 8,
        claim_lease: float = 120.0,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.openrouter_conn_id = _validation.validate_conn_id(openrouter_conn_id)
        if not isinstance(name_prefix, str) or not name_prefix.strip():
            raise OpenRouterValidationError(
                "name_prefix", "required: a non-blank prefix the owned keys start with"
            )
        self.name_prefix = _validation.check_text(name_prefix, field="name_prefix", max_length=200)
        self.prune = _validation.validate_one_of(prune, ("keep", "disable", "delete"), field="prune")
        self.mode = _validation.validate_one_of(mode, ("plan_and_apply", "plan", "apply"), field="mode")
        # Not ``self.dry_run``: BaseOperator has a method of that name.
        self.plan_only = _validation.validate_bool(dry_run, field="dry_run")
        if (
            isinstance(max_destructive, bool)
            or not isinstance(max_destructive, (int, float))
            or max_destructive < 0
        ):
            raise OpenRouterValidationError(
                "max_destructive", f"must be a count or a fraction >= 0 (got {max_destructive!r})"
            )
        if isinstance(max_destructive, float) and max_destructive >= 1 and not max_destructive.is_integer():
            raise OpenRouterValidationError(
                "max_destructive", "a fraction must be below 1; a count a whole number"
            )
        self.max_destructive = max_destructive
        self.rotate_older_than = _seconds(rotate_older_than, "rotate_older_than")
        self.rotation_overlap = _seconds(rotation_overlap, "rotation_overlap") or 0.0
        self.rotation_grace = _seconds(rotation_grace, "rotation_grace") or 0.0
        if deliver_to_callable is not None and not callable(deliver_to_callable):
            raise OpenRouterValidationError("deliver_to_callable", "must be a function or None")
        self.deliver_to_callable = deliver_to_callable
        self.max_workers = _validation.validate_int(max_workers, field="max_workers", minimum=1, maximum=64)
        self.claim_lease = float(_seconds(claim_lease, "claim_lease") or 120.0)
        self.tenants = tenants
        self.plan = plan
        self._provisioner: Any = None
        self._planned_views: dict[str | None, dict[str, NameView]] | None = None
        self._planned_horizons: dict[str | None, frozenset[str] | None] = {}
        self._leftovers: dict[str | None, list[NameView]] = {}
        self._deliver_lock = threading.Lock()

    @functools.cached_property
    def hook(self) -> OpenRouterHook:
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    # -- plan ------------------------------------------------------------------------------------------------

    def make_plan(self, tenants: list[dict[str, Any]]) -> dict[str, Any]:
        started = time.monotonic()
        planner = Planner(
            self.hook,
            tenants,
            name_prefix=self.name_prefix,
            prune=self.prune,
            rotate_older_than=self.rotate_older_than,
            rotation_overlap=self.rotation_overlap,
            rotation_grace=self.rotation_grace,
            now=time.time(),
        )
        plan = planner.plan()
        self._planned_views = planner.views
        self._planned_horizons = planner.horizons
        self._leftovers = planner.leftovers
        self.log.info(
            "Plan for %d tenants under %r (%d owned keys, %.1f s):\n%s",
            len(tenants),
            self.name_prefix,
            plan["owned_keys"],
            time.monotonic() - started,
            plan_table(plan),
        )
        return plan

    def _cap(self, plan: Mapping[str, Any]) -> int:
        owned = int(plan["owned_keys"])
        if isinstance(self.max_destructive, float) and self.max_destructive < 1:
            return math.floor(self.max_destructive * owned)
        return int(self.max_destructive)

    def check_cap(self, plan: Mapping[str, Any]) -> None:
        destructive = plan["counts"]["disable"] + plan["counts"]["delete"]
        cap = self._cap(plan)
        if destructive > cap:
            raise SyncRefusedError(
                f"The plan disables {plan['counts']['disable']} and deletes {plan['counts']['delete']} of "
                f"{plan['owned_keys']} owned keys under {self.name_prefix!r}: {destructive} destructive "
                f"changes, above max_destructive={self.max_destructive!r} ({cap}). Nothing was changed. "
                "Check "
                "the tenants table (an empty or truncated table prunes everything); if the plan is right, "
                "raise max_destructive for this run."
            )

    # -- execute ---------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        tenants = validate_tenants(self.tenants, self.name_prefix)
        plan = self.make_plan(tenants)
        if self.mode == "apply":
            self._check_approved(plan)
        if self.plan_only:
            try:
                self.check_cap(plan)
            except SyncRefusedError as exc:
                self.log.warning("A real run would refuse: %s", exc)
            self.log.info("dry_run: nothing was changed.")
            return plan
        self.check_cap(plan)
        if self.mode == "plan":
            # For the approval step: the human-in-the-loop body renders Markdown.
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key=PLAN_MARKDOWN_XCOM_KEY, value=plan_markdown(plan))
            self.log.info(
                "Plan only (%s): nothing was changed.", "dry_run" if self.plan_only else "mode='plan'"
            )
            return plan
        applied = self.apply(plan, tenants, context)
        return {**plan, "applied": applied}

    def _check_approved(self, fresh: Mapping[str, Any]) -> None:
        approved = self.plan
        if isinstance(approved, str):
            approved = json.loads(approved)
        if not isinstance(approved, dict) or "actions" not in approved:
            raise OpenRouterValidationError(
                "plan", "mode='apply' needs the approved plan (the plan task's return value)"
            )
        if approved.get("tenants_digest") != fresh["tenants_digest"]:
            raise SyncRefusedError(
                "The tenants table differs from the one the approved plan was made from: plan again."
            )

        def ident(item: Mapping[str, Any]) -> str:
            return json.dumps(
                [item["action"], item["tenant"], item["key_hash"], item["changes"]],
                sort_keys=True,
                default=str,
            )

        allowed = {ident(item) for item in approved["actions"]}
        # Actions already done (a resumed apply) drop out of a fresh plan; a new or different one matters.
        new = [item for item in fresh["actions"] if ident(item) not in allowed and item["action"] != "keep"]
        if new:
            shown = "\n".join(plan_table({"actions": new, "counts": {}}, limit=20).splitlines()[:-1])
            raise SyncRefusedError(
                f"The account changed since the approved plan ({approved.get('planned_at')}): {len(new)} "
                f"action(s) were not approved:\n{shown}\nNothing was changed. Plan and approve again."
            )

    # -- apply -----------------------------------------------------------------------------------------------

    def apply(
        self, plan: Mapping[str, Any], tenants: list[dict[str, Any]], context: Context
    ) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_openrouter._provisioning import Provisioner, merge_views

        by_name = {t["name"]: t for t in tenants}
        # The hook's rate gate is shared by every worker thread: a 429 any of them gets holds them all.
        pauses_before = self.hook.rate_limit_pauses
        todo = [item for item in plan["actions"] if item["action"] not in ("unchanged", "keep")]
        progress = Progress(self.log, "Applying", len(todo))
        provisioner = self._provisioner = Provisioner(self.hook, lease=self.claim_lease, logger=self.log)
        done: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        failures: list[str] = []
        lock = threading.Lock()

        def record(action: str, error: BaseException | None, what: str) -> None:
            with lock:
                if error is None:
                    done[action] += 1
                else:
                    failures.append(f"{action} {what}: {type(error).__name__}: {error}")
            progress.step()

        def simple(item: dict[str, Any]) -> None:
            action, key_hash = item["action"], item["key_hash"]
            try:
                if action == "update":
                    changes = {f: new for f, (_, new) in item["changes"].items()}
                    self.hook.update_key(key_hash, **changes)
                elif action == "disable":
                    self.hook.update_key(key_hash, disabled=True)
                elif action == "delete":
                    self.hook.delete_key(key_hash, missing_ok=True)
            except Exception as exc:
                record(action, exc, item["tenant"] or item.get("key_name") or key_hash)
            else:
                record(action, None, "")

        def collect(view: NameView) -> None:
            # Deletes the claims past lease and grace; live ones belong to a run still at work.
            try:
                provisioner._tidy(view)
            except OpenRouterError as exc:
                self.log.warning(
                    "Could not delete a leftover claim on %r (a later run will): %s", view.name, exc
                )

        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="sync") as pool:
            list(pool.map(simple, [i for i in todo if i["action"] in ("update", "disable", "delete")]))
            leftovers, self._leftovers = self._leftovers, {}
            list(pool.map(collect, [view for views in leftovers.values() for view in views]))

        creating = [i for i in todo if i["action"] in ("create", "rotate")]
        by_workspace: dict[str | None, list[dict[str, Any]]] = {}
        for item in creating:
            by_workspace.setdefault(item["workspace_id"], []).append(item)
        planned, self._planned_views = self._planned_views, None
        try:
            for workspace, items in by_workspace.items():
                # Each name starts from what the plan's walk saw of it (claims of dead runs included, which
                # get collected), or, without that walk, from one walk now. Names without keys start empty.
                if planned is not None and workspace in planned:
                    views = planned.pop(workspace)
                    since = self._planned_horizons.get(workspace)
                else:
                    walked, since = provisioner.walk([item["tenant"] for item in items], workspace)
                    views = {name: view for name, view in walked.items() if view.finals or view.claims}
                for start in range(0, len(items), CHUNK):
                    self._create_chunk(
                        provisioner,
                        items[start : start + CHUNK],
                        by_name=by_name,
                        views=views,
                        workspace=workspace,
                        since=since,
                        later=[item["tenant"] for item in items[start + CHUNK :]],
                        context=context,
                        record=record,
                    )
                    # The next chunk's check stops where this one's began, knowing what this one saw of it.
                    if provisioner.horizon is not None:
                        since = provisioner.horizon
                        for name, seen in provisioner.later_views.items():
                            if name in views:
                                merge_views(views[name], seen)
                            else:
                                views[name] = seen
        finally:
            self._provisioner = None
        summary = {
            "counts": done,
            "failed": len(failures),
            "rate_limit_pauses": self.hook.rate_limit_pauses - pauses_before,
        }
        self.log.info(
            "Applied in %.1f s:\n%s",
            time.monotonic() - progress.started,
            "\n".join(f"  {a:<9} {done[a]:>7}" for a in ACTIONS if a not in ("unchanged", "keep"))
            + f"\n  {'failed':<9} {len(failures):>7}",
        )
        if failures:
            raise OpenRouterError(
                f"{len(failures)} of {len(todo)} changes failed (the rest were made; a rerun converges):\n  "
                + "\n  ".join(failures[:20])
            )
        return summary

    def _create_chunk(
        self,
        provisioner: Any,
        chunk: list[dict[str, Any]],
        *,
        by_name: Mapping[str, dict[str, Any]],
        views: dict[str, Any],
        workspace: str | None,
        since: frozenset[str] | None,
        later: list[str],
        context: Context,
        record: Callable[[str, BaseException | None, str], None],
    ) -> None:
        """Create (or rotate) one chunk's keys with one walk checking their claims. A method of its own so
        that a chunk's keys, views and outcomes are gone before the next chunk's are made."""
        from airflow_provider_openrouter._masking import mask_plaintexts
        from airflow_provider_openrouter._provisioning import NameView

        requests = [
            self._request(
                item,
                by_name[item["tenant"]],
                views.pop(item["tenant"], None) or NameView(item["tenant"]),
                context,
            )
            for item in chunk
        ]

        def report(index: int, result: Any) -> None:
            item = chunk[index]
            record(item["action"], result if isinstance(result, BaseException) else None, item["tenant"])

        provisioner.provision_many(
            requests,
            workspace_id=workspace,
            since=since,
            later=later,
            workers=self.max_workers,
            mask=mask_plaintexts,
            report=report,
        )

    def _request(
        self,
        item: Mapping[str, Any],
        tenant: dict[str, Any],
        view: Any,
        context: Context,
    ) -> Any:
        from airflow_provider_openrouter._provisioning import Request

        hook = self.hook
        workspace = tenant["workspace_id"]

        def create(provisional: str) -> CreatedApiKey:
            # mask=False: the batch masks every plaintext at once (mask_plaintexts) before delivery or a log.
            return hook.create_key(
                provisional,
                limit=tenant["limit"],
                limit_reset=tenant["limit_reset"],
                include_byok_in_limit=tenant["include_byok_in_limit"],
                expires_at=tenant["expires_at"],
                workspace_id=workspace,
                mask=False,
            )

        def deliver(created: CreatedApiKey) -> list[str]:
            # One delivery at a time: a user's secret-store client need not be thread-safe, and neither is
            # Airflow's in-process task channel under `airflow dags test` (Variable.set goes through it).
            with self._deliver_lock:
                return deliver_one(created)

        def deliver_one(created: CreatedApiKey) -> list[str]:
            where = []
            if self.deliver_to_callable is not None:
                self.deliver_to_callable(created, context)
                where.append("callable")
            if tenant["deliver_to_variable"]:
                from airflow.sdk import Variable

                Variable.set(
                    tenant["deliver_to_variable"],
                    created.plaintext,
                    description=f"OpenRouter API key {created.name!r} (hash {created.hash})",
                )
                where.append(f"Variable {tenant['deliver_to_variable']}")
            if not where:
                raise OpenRouterValidationError(
                    f"tenants ({tenant['name']!r}).deliver_to_variable",
                    "a new key needs a destination: set it, or the operator's deliver_to_callable",
                )
            return where

        def retire(old: ApiKey) -> None:
            hook.update_key(old.hash, name=retired_name(tenant["name"], time.time()))
            self.log.info(
                "Rotated key %r (hash %s) out: it works until the overlap ends.", old.name, old.hash
            )

        return Request(
            name=tenant["name"],
            create=create,
            deliver=deliver,
            if_exists="replace" if item["action"] == "rotate" else "fail",
            view=view,
            retire=retire if item["action"] == "rotate" else None,
        )

    def on_kill(self) -> None:
        if self._provisioner is not None:
            self._provisioner.cancelled = True
