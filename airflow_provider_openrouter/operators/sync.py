"""Declarative tenant sync: make the keys under a name prefix match a table of tenants.

The operator validates the table, has the pure planner plan against one walk of the account, checks the plan
(the cap, an approval), applies it and reports. The module is imported when DAG files are parsed, so it stays
cheap: the hook, the provisioning sequence and the thread pool are imported inside ``execute``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from airflow.sdk import BaseOperator

from airflow_provider_openrouter import _validation, assets
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._sync_guardrails import DESTRUCTIVE, idents, validate_guardrails
from airflow_provider_openrouter._sync_plan import (
    ACTIONS,
    CREATE_COLUMNS,
    PRUNE,
    Planner,
    PlanPolicy,
    Prune,
    Tenant,
    tenants_digest,
    validate_tenants,
)
from airflow_provider_openrouter._sync_report import Progress, plan_markdown, plan_table
from airflow_provider_openrouter._sync_retirement import validate_retirement
from airflow_provider_openrouter.exceptions import (
    NotFoundError,
    OpenRouterError,
    OpenRouterValidationError,
    SyncRefusedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from airflow.sdk import Context

    from airflow_provider_openrouter._batch import Request
    from airflow_provider_openrouter._claims import NameView
    from airflow_provider_openrouter._provisioning import Provisioner
    from airflow_provider_openrouter._sync_guardrail_apply import GuardrailApply
    from airflow_provider_openrouter._sync_guardrails import DesiredGuardrail
    from airflow_provider_openrouter._sync_plan import Plan
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

__all__ = ["PLAN_MARKDOWN_XCOM_KEY", "SyncApiKeysOperator", "plan_markdown"]

Mode = Literal["plan_and_apply", "plan", "apply"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
# Where a plan-only task leaves the plan as a Markdown table, for an approval step to show.
PLAN_MARKDOWN_XCOM_KEY: Final = "plan_markdown"


def _seconds(value: Any, field: str) -> float | None:
    return None if value is None else _validation.validate_seconds(value, field=field)


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
        ``deliver_to_variable``, ``rotate`` and ``guardrail`` (the name of one of ``guardrails``, which the
        tenant's key is assigned to). Every row is checked before anything is sent. (templated)
    :param guardrails: The desired guardrails: a list of mappings with ``name``, optionally ``workspace_id``,
        and the settings :class:`~airflow_provider_openrouter.guardrails.GuardrailSettings` names. Owned
        like the keys: each name must start with ``name_prefix``, and the guardrails under it are created,
        updated (only the settings given that drifted) and pruned (``prune="delete"`` deletes them; they
        cannot be disabled, so otherwise they are kept and the tenants' keys leave them). A tenant key on an
        owned guardrail its row does not name is unassigned. ``None`` (default): guardrails are not managed
        and not read. See :doc:`/howto/guardrails`. (templated)
    :param name_prefix: The keys (and guardrails) this operator owns; every tenant name must start with it.
    :param prune: What happens to owned keys without a tenant: ``"keep"`` (default), ``"disable"``,
        ``"delete"``.
    :param mode: ``"plan_and_apply"`` (default); ``"plan"``: plan only, change nothing, and leave the plan as
        Markdown in the XCom ``plan_markdown`` for an approval step; or ``"apply"``, which applies the plan
        given as ``plan`` after checking that the account has not changed in a way that matters since.
    :param plan: The approved plan (the return value of a ``mode="plan"`` task), for ``mode="apply"``.
        (templated)
    :param dry_run: Plan only: ``dry_run=True`` is ``mode="plan"``. With ``mode="apply"`` it checks the
        approved plan against a fresh one, then stops there.
    :param max_destructive: The most disables and deletes one run may make (guardrail deletes and keys
        unassigned from a guardrail included): a whole number, or a fraction
        (below 1) of the owned keys. Default 10. Above it the run refuses before changing anything, a
        plan-only run included: an approver is never asked for a plan the apply would refuse.
    :param rotate_older_than: Rotate keys older than this (seconds or a ``timedelta``); ``None``: only rows
        with ``rotate`` set.
    :param rotation_overlap: How long a rotated-out key keeps working (default a day); then a run disables it.
        Not used with ``retire_when_idle_for``.
    :param rotation_grace: How long it then stays disabled before a run deletes it (default a week).
    :param retire_when_idle_for: Disable a rotated-out key only once its ``last_used_at`` shows it unused for
        this long (counted from the rotation at the earliest), or at ``retire_deadline``, whichever comes
        first; until then the plan lists it as ``keep`` with the reason. A key without ``last_used_at`` waits
        for the deadline. ``None`` (default): the fixed ``rotation_overlap``. See :doc:`/howto/fleet`.
    :param retire_deadline: With ``retire_when_idle_for``, the latest a rotated-out key is disabled, counted
        from the rotation (default a week; at least ``retire_when_idle_for``).
    :param deliver_to_callable: ``deliver_to_callable(created_key, context)``: hands each new plaintext on.
    :param max_workers: Requests in flight at once while applying.
    :param claim_lease: Lease of each provisional key, as for ``CreateApiKeyOperator``: seconds or a
        ``timedelta``, 2 s to a day (see :doc:`/guarantees`).
    :param openrouter_conn_id: The OpenRouter connection.
    :param asset_alias: The asset alias of the keys' asset events; ``None``: none (:ref:`howto/fleet:assets`).
    """

    template_fields: Sequence[str] = ("tenants", "plan", "guardrails")
    ui_color = "#e8eefc"

    def __init__(
        self,
        *,
        tenants: Any,
        name_prefix: str,
        guardrails: Any = None,
        prune: Prune = "keep",
        mode: Mode = "plan_and_apply",
        plan: Any = None,
        dry_run: bool = False,
        max_destructive: float = 10,
        rotate_older_than: float | dt.timedelta | None = None,
        rotation_overlap: float | dt.timedelta = dt.timedelta(days=1),
        rotation_grace: float | dt.timedelta = dt.timedelta(days=7),
        retire_when_idle_for: float | dt.timedelta | None = None,
        retire_deadline: float | dt.timedelta = dt.timedelta(days=7),
        deliver_to_callable: Callable[[CreatedApiKey, Context], None] | None = None,
        max_workers: int = 8,
        claim_lease: float | dt.timedelta = 120.0,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        asset_alias: str | None = assets.DEFAULT_ASSET_ALIAS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**assets.alias_outlet(asset_alias, kwargs))
        self.openrouter_conn_id = _validation.validate_conn_id(openrouter_conn_id)
        self.asset_alias = asset_alias
        self.name_prefix = _validation.validate_name_prefix(name_prefix)
        self.prune: Prune = _validation.validate_one_of(prune, PRUNE, field="prune")
        self.mode: Mode = _validation.validate_one_of(mode, MODES, field="mode")
        # One meaning of "plan only", whichever way it is asked for. Not ``self.dry_run``: BaseOperator has a
        # method of that name.
        self.plan_only = _validation.validate_bool(dry_run, field="dry_run") or self.mode == "plan"
        self.max_destructive = _validation.validate_destructive_cap(max_destructive)
        self.rotate_older_than = _seconds(rotate_older_than, "rotate_older_than")
        self.retirement = validate_retirement(
            rotation_overlap=rotation_overlap,
            rotation_grace=rotation_grace,
            retire_when_idle_for=retire_when_idle_for,
            retire_deadline=retire_deadline,
        )
        if deliver_to_callable is not None and not callable(deliver_to_callable):
            raise OpenRouterValidationError("deliver_to_callable", "must be a function or None")
        self.deliver_to_callable = deliver_to_callable
        self.max_workers = _validation.validate_int(max_workers, field="max_workers", minimum=1, maximum=64)
        self.claim_lease = _validation.validate_claim_lease(claim_lease)
        self.tenants = tenants
        self.guardrails = guardrails
        self._desired: dict[str, DesiredGuardrail] | None = None
        self._guardrail_apply: GuardrailApply | None = None
        self.plan = plan
        self._provisioner: Provisioner | None = None
        self._planned_views: dict[str | None, dict[str, NameView]] | None = None
        self._planned_horizons: dict[str | None, frozenset[str] | None] = {}
        self._leftovers: dict[str | None, list[NameView]] = {}
        self._deliver_lock = threading.Lock()

    @functools.cached_property
    def hook(self) -> OpenRouterHook:
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    # -- plan ------------------------------------------------------------------------------------------------

    def make_plan(self, tenants: list[Tenant]) -> Plan:
        """Walk each workspace once and plan; what the walks saw is kept for applying right after."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_openrouter._claims import Horizon

        started = time.monotonic()
        hook = self.hook
        horizons: dict[str | None, Horizon] = {}

        def walk(workspace: str | None) -> Iterator[ApiKey]:
            # The walk's horizon: claims made after the plan are checked against the keys created since.
            horizon = horizons[workspace] = Horizon()
            keys = hook.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace)
            return horizon.watch(keys)

        def read_back(key_hash: str) -> ApiKey | None:
            try:
                return hook.get_key(key_hash)
            except NotFoundError:
                return None

        policy = PlanPolicy(
            name_prefix=self.name_prefix,
            now=time.time(),
            prune=self.prune,
            rotate_older_than=self.rotate_older_than,
            **self.retirement,
        )
        planner = Planner(tenants, policy, self._desired)
        managed = self._desired is not None
        # The digest is worked out while the walk waits for its pages.
        with ThreadPoolExecutor(1, thread_name_prefix="sync-digest") as pool:
            digest = pool.submit(tenants_digest, tenants)
            plan = planner.plan(
                walk,
                read_back=read_back,
                digest=digest.result,
                guardrail_walk=(lambda ws: hook.list_guardrails(workspace_id=ws)) if managed else None,
                assignments=hook.list_key_assignments if managed else None,
            )
        self._planned_views = planner.views
        self._planned_horizons = {workspace: horizon.top for workspace, horizon in horizons.items()}
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
        owned = int(plan["owned_keys"]) + int(plan.get("owned_guardrails", 0))
        if isinstance(self.max_destructive, float) and self.max_destructive < 1:
            return math.floor(self.max_destructive * owned)
        return int(self.max_destructive)

    def check_cap(self, plan: Mapping[str, Any]) -> None:
        destructive = plan["counts"]["disable"] + plan["counts"]["delete"]
        guarded = plan.get("guardrail_counts") or {}
        destructive += sum(guarded.get(action, 0) for action in DESTRUCTIVE)
        cap = self._cap(plan)
        if destructive > cap:
            also = (
                f", deletes {guarded.get('delete', 0)} of {plan.get('owned_guardrails', 0)} owned guardrails "
                f"and unassigns {guarded.get('unassign', 0)} keys from guardrails"
                if guarded
                else ""
            )
            raise SyncRefusedError(
                f"The plan disables {plan['counts']['disable']} and deletes {plan['counts']['delete']} of "
                f"{plan['owned_keys']} owned keys under {self.name_prefix!r}{also}: {destructive} "
                f"destructive changes, above max_destructive={self.max_destructive!r} ({cap}). Nothing was "
                "changed. Check the tenants table (an empty or truncated table prunes everything); if the "
                "plan is right, raise max_destructive for this run."
            )

    # -- execute ---------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        self._desired = validate_guardrails(self.guardrails, self.name_prefix)
        tenants = validate_tenants(self.tenants, self.name_prefix, self._desired)
        plan = self.make_plan(tenants)
        if self.mode == "apply":
            self._check_approved(plan)
        self.check_cap(plan)
        if self.plan_only:
            # For the approval step: the human-in-the-loop body renders Markdown.
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key=PLAN_MARKDOWN_XCOM_KEY, value=plan_markdown(plan))
            self.log.info("Plan only: nothing was changed.")
            return dict(plan)
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
        approved_guarded = {
            json.dumps(part, sort_keys=True, default=str)
            for item in approved.get("guardrail_actions", [])
            for part in idents(item)
        }
        new_guarded = [
            item
            for item in fresh.get("guardrail_actions", [])
            if item["action"] != "keep"
            and any(json.dumps(p, sort_keys=True, default=str) not in approved_guarded for p in idents(item))
        ]
        if new or new_guarded:
            table = plan_table({"actions": new, "guardrail_actions": new_guarded, "counts": {}}, limit=20)
            shown = "\n".join(table.splitlines()[:-1])
            raise SyncRefusedError(
                f"The account changed since the approved plan ({approved.get('planned_at')}): "
                f"{len(new) + len(new_guarded)} "
                f"action(s) were not approved:\n{shown}\nNothing was changed. Plan and approve again."
            )

    # -- apply -----------------------------------------------------------------------------------------------

    def apply(self, plan: Mapping[str, Any], tenants: list[Tenant], context: Context) -> dict[str, Any]:
        """Make the plan's changes: updates, disables and deletes first, then creates and rotations."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_openrouter._provisioning import Provisioner

        by_name = {t["name"]: t for t in tenants}
        # The hook's rate gate is shared by every worker thread: a 429 any of them gets holds them all.
        pauses_before = self.hook.rate_limit_pauses
        todo = [item for item in plan["actions"] if item["action"] not in ("unchanged", "keep")]
        progress = Progress(self.log, "Applying", len(todo))
        provisioner = self._provisioner = Provisioner(self.hook, lease=self.claim_lease, logger=self.log)
        done: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        failures: list[str] = []
        lock = threading.Lock()
        events = self._events = assets.KeyEvents(self.asset_alias, self.openrouter_conn_id)

        def record(action: str, error: BaseException | None, what: str) -> None:
            with lock:
                if error is None:
                    done[action] += 1
                else:
                    failures.append(f"{action} {what}: {type(error).__name__}: {error}")
            progress.step()

        def simple(item: dict[str, Any]) -> None:
            action, key_hash = item["action"], item["key_hash"]
            what = item["tenant"] or item.get("key_name") or key_hash
            try:
                if action == "update":
                    changes = {f: new for f, (_, new) in item["changes"].items()}
                    self.hook.update_key(key_hash, **changes)
                elif action == "disable":
                    self.hook.update_key(key_hash, disabled=True)
                elif action == "delete":
                    self.hook.delete_key(key_hash, missing_ok=True)
            except NotFoundError as exc:
                if action != "disable":
                    record(action, exc, what)
                    return
                # Deleted since the walk (another run, a retire task, a person): past what a disable is for.
                self.log.info("Key %s (hash %s) is already gone; nothing to disable.", what, key_hash)
                progress.step()
            except Exception as exc:
                record(action, exc, what)
            else:
                record(action, None, "")
                events.add_planned(item)

        guarded = self._guardrail_apply = self._guardrails_for(plan, failures, lock)

        def collect(item: tuple[str | None, NameView]) -> None:
            # Deletes the claims past lease and grace (live ones belong to a run still at work) and settles
            # the old keys a replace took out.
            workspace, view = item
            try:
                provisioner.tidy(view, workspace)
            except OpenRouterError as exc:
                self.log.warning(
                    "Could not delete a leftover claim on %r (a later run will): %s", view.name, exc
                )

        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="sync") as pool:
            if guarded is not None:
                guarded.prepare(pool)
            list(pool.map(simple, [i for i in todo if i["action"] in ("update", "disable", "delete")]))
            if guarded is not None:
                list(pool.map(lambda call: call(), guarded.destructive()))
            leftovers, self._leftovers = self._leftovers, {}
            list(pool.map(collect, [(ws, view) for ws, views in leftovers.items() for view in views]))
            if guarded is not None:
                guarded.assign_kept(pool)

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
                    views = {
                        name: view
                        for name, view in walked.items()
                        if view.finals or view.claims or view.replaced
                    }
                self._create(
                    provisioner,
                    items,
                    by_name=by_name,
                    views=views,
                    workspace=workspace,
                    since=since,
                    context=context,
                    record=record,
                )
        finally:
            self._provisioner = self._guardrail_apply = None
            events.emit(context)
        summary: dict[str, Any] = {
            "counts": done,
            "failed": len(failures),
            "rate_limit_pauses": self.hook.rate_limit_pauses - pauses_before,
        }
        if guarded is not None:
            summary["guardrail_counts"] = guarded.done
        self.log.info(
            "Applied in %.1f s:\n%s",
            time.monotonic() - progress.started,
            "\n".join(f"  {a:<9} {done[a]:>7}" for a in ACTIONS if a not in ("unchanged", "keep"))
            + "".join(
                f"\n  guardrail {a:<9} {n:>7}" for a, n in (guarded.done if guarded else {}).items() if n
            )
            + f"\n  {'failed':<9} {len(failures):>7}",
        )
        if failures:
            total = len(todo) + (len(guarded.actions) if guarded is not None else 0)
            raise OpenRouterError(
                f"{len(failures)} of {total} changes failed (the rest were made; a rerun converges):\n  "
                + "\n  ".join(failures[:20])
            )
        return summary

    def _create(
        self,
        provisioner: Provisioner,
        items: list[dict[str, Any]],
        *,
        by_name: Mapping[str, Tenant],
        views: dict[str, NameView],
        workspace: str | None,
        since: frozenset[str] | None,
        context: Context,
        record: Callable[[str, BaseException | None, str], None],
    ) -> None:
        """Create (or rotate) one workspace's keys, a chunk of names checked by each walk."""
        from airflow_provider_openrouter._batch import provision_many
        from airflow_provider_openrouter._claims import NameView
        from airflow_provider_openrouter._masking import mask_plaintexts

        requests = [
            self._request(
                item,
                by_name[item["tenant"]],
                views.pop(item["tenant"], NameView(item["tenant"])),
                context,
            )
            for item in items
        ]
        guarded = self._guardrail_apply

        def report(index: int, result: Any) -> None:
            item = items[index]
            record(item["action"], result if isinstance(result, BaseException) else None, item["tenant"])
            if isinstance(result, BaseException):
                return
            self._events.add_outcome(result)
            guardrail = by_name[item["tenant"]]["guardrail"]
            if guarded is not None and guardrail is not None:
                guarded.new_key(guardrail, result.key.hash)

        provision_many(
            provisioner,
            requests,
            workspace_id=workspace,
            since=since,
            workers=self.max_workers,
            mask=mask_plaintexts,
            report=report,
        )
        # A key the run made is never left without its guardrail by a run that ends green.
        if guarded is not None:
            guarded.assign_new()

    def _guardrails_for(
        self, plan: Mapping[str, Any], failures: list[str], lock: threading.Lock
    ) -> GuardrailApply | None:
        if self._desired is None or "guardrail_actions" not in plan:
            return None
        from airflow_provider_openrouter._sync_guardrail_apply import GuardrailApply

        def fail(message: str) -> None:
            with lock:
                failures.append(message)

        return GuardrailApply(self.hook, plan["guardrail_actions"], self._desired, fail)

    def _request(self, item: Mapping[str, Any], tenant: Tenant, view: NameView, context: Context) -> Request:
        from airflow_provider_openrouter._batch import Request
        from airflow_provider_openrouter._key_writes import retirer

        hook = self.hook
        settings = {field: tenant[field] for field in CREATE_COLUMNS}

        def create(provisional: str) -> CreatedApiKey:
            # mask=False: the batch masks every plaintext at once (mask_plaintexts) before delivery or a log.
            return hook.create_key(provisional, **settings, mask=False)

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

        return Request(
            name=tenant["name"],
            create=create,
            deliver=deliver,
            if_exists="replace" if item["action"] == "rotate" else "fail",
            view=view,
            retire=retirer(hook, tenant["name"], self.log, clock=time.time)
            if item["action"] == "rotate"
            else None,
        )

    def on_kill(self) -> None:
        if self._provisioner is not None:
            self._provisioner.cancelled = True
