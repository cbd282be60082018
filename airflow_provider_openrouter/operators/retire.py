"""Retire the keys a rotation with overlap left working (``<name> [retired <epoch>]``) once they are idle.

The rule is the tenant sync's (:mod:`~airflow_provider_openrouter._sync_retirement`): this operator applies
it to the keys one name (or a prefix) rotated out, for the single-key path
(``CreateApiKeyOperator(if_exists="replace", keep_old_key=True)``). The module is imported when DAG files are
parsed, so it stays cheap: the hook and the trigger are imported inside ``execute``.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from airflow.sdk import BaseOperator

from airflow_provider_openrouter import _validation, assets
from airflow_provider_openrouter._claims import retired_of
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._sync_retirement import (
    Retirement,
    due_at,
    retired_action,
    validate_retirement,
    waiting_reason,
)
from airflow_provider_openrouter.exceptions import NotFoundError, OpenRouterError

try:  # Airflow >= 3.2
    from airflow.sdk import conf
except ImportError:  # pragma: no cover - Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined,assignment,unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey

    # A key rotated out of a name, the name, and when: what a wait watches.
    Retired: TypeAlias = tuple[ApiKey, str, float]

__all__ = ["RetireApiKeysOperator"]

_DURATIONS = ("retire_when_idle_for", "retire_deadline", "rotation_overlap", "rotation_grace")


class RetireApiKeysOperator(BaseOperator):
    """Retire the old keys a rotation with overlap left working, once idle: disable, then delete them.

    ``CreateApiKeyOperator(if_exists="replace", keep_old_key=True)`` renames the old key
    ``<name> [retired <epoch>]`` and leaves it working, so that its clients can move to the new key. This
    operator finds those keys of ``key_name`` (or of every name under ``name_prefix``) and applies the tenant
    sync's rule to each: once its ``last_used_at`` shows it unused for ``retire_when_idle_for`` (counted from
    the rotation at the earliest), or at ``retire_deadline`` whatever its use, it is disabled, and
    ``rotation_grace`` later deleted (at once with the default grace of 0). A key without ``last_used_at``
    waits for the deadline. See :ref:`howto/operator:RetireApiKeysOperator`.

    With ``wait=True`` (default) the task ends only once every such key is deleted, logging why each one
    still waits; ``deferrable=True`` waits in the triggerer
    (:class:`~airflow_provider_openrouter.triggers.retired_keys.RetiredKeysTrigger`, which reads each key by
    hash and wakes the task when a step is due), otherwise the worker polls every ``poll_interval``. With
    ``wait=False`` it makes one pass, for a scheduled clean-up DAG.

    It returns a list of ``{"key_hash", "name", "action", "reason"}``: each ``"disable"`` and ``"delete"``
    made, and (``wait=False``) a ``"keep"`` for each key still waiting. Disabled and deleted keys get asset
    events on their name's asset, as the sync's rotated-out keys do.

    :param key_name: The exact name the keys were rotated out of. (templated)
    :param name_prefix: Instead of ``key_name``: every name starting with this. (templated)
    :param workspace_id: The workspace to look in; ``None``: the connection's. (templated)
    :param retire_when_idle_for: How long a key must go unused before it is retired (seconds or a
        ``timedelta``; default a day); ``None``: a fixed ``rotation_overlap`` instead. (templated)
    :param retire_deadline: The latest a key is retired, counted from its rotation, however busy (default a
        week; at least ``retire_when_idle_for``). (templated)
    :param rotation_overlap: Without ``retire_when_idle_for``: how long after the rotation a key is retired
        (default 0). (templated)
    :param rotation_grace: How long a retired key stays disabled before it is deleted; 0 (default): deleted
        at once, without being disabled first. (templated)
    :param wait: ``True`` (default): finish only once every such key is deleted; ``False``: one pass.
    :param deferrable: ``True`` or ``False``: wait in the triggerer instead of a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: Seconds between reads of the waiting keys (at least 0.05; default 5 minutes); a wait
        also wakes when a step falls due.
    :param max_consecutive_failures: Reads in a row that may fail transiently (network, 5xx) before the wait
        fails.
    :param openrouter_conn_id: The OpenRouter connection (its password is the management key).
    :param asset_alias: The asset alias of its asset events; ``None``: none (:ref:`howto/fleet:assets`).
    """

    template_fields: Sequence[str] = ("key_name", "name_prefix", "workspace_id", *_DURATIONS)
    ui_color = "#f9e0e0"

    def __init__(
        self,
        *,
        key_name: str | None = None,
        name_prefix: str | None = None,
        workspace_id: str | None = None,
        retire_when_idle_for: float | dt.timedelta | str | None = dt.timedelta(days=1),
        retire_deadline: float | dt.timedelta | str = dt.timedelta(days=7),
        rotation_overlap: float | dt.timedelta | str = 0.0,
        rotation_grace: float | dt.timedelta | str = 0.0,
        wait: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 300.0,
        max_consecutive_failures: int = 3,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        asset_alias: str | None = assets.DEFAULT_ASSET_ALIAS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**assets.alias_outlet(asset_alias, kwargs))
        self.openrouter_conn_id = _validation.validate_conn_id(openrouter_conn_id)
        self.asset_alias = asset_alias
        self.key_name = key_name
        self.name_prefix = name_prefix
        self.workspace_id = workspace_id
        self.retire_when_idle_for = retire_when_idle_for
        self.retire_deadline = retire_deadline
        self.rotation_overlap = rotation_overlap
        self.rotation_grace = rotation_grace
        self.wait = _validation.validate_bool(wait, field="wait")
        self.deferrable = _validation.validate_bool(deferrable, field="deferrable")
        self.poll_interval = _validation.validate_poll_interval(poll_interval, field="poll_interval")
        self.max_consecutive_failures = _validation.validate_int(
            max_consecutive_failures, field="max_consecutive_failures"
        )
        self._target(rendered=False)
        if _validation.is_literal(workspace_id):
            _validation.validate_workspace_id(workspace_id)
        if all(_validation.is_literal(getattr(self, field)) for field in _DURATIONS):
            self._rules()

    # -- validation ------------------------------------------------------------------------------------------

    def _target(self, *, rendered: bool) -> tuple[str | None, str | None]:
        """Exactly one of ``key_name`` / ``name_prefix``, each checked when literal (both once rendered)."""
        name, prefix = self.key_name, self.name_prefix
        if rendered:
            name, prefix = _validation.rendered_none(name), _validation.rendered_none(prefix)
        if (name is None) == (prefix is None):
            _validation.fail(
                "key_name, name_prefix",
                "give exactly one: the exact name the keys were rotated out of, or a prefix of such names"
                + (" (got both)" if name is not None else " (got neither)"),
            )
        if name is not None and (rendered or _validation.is_literal(name)):
            return _validation.validate_name(name, field="key_name"), None
        if prefix is not None and (rendered or _validation.is_literal(prefix)):
            return None, _validation.validate_name_prefix(prefix)
        return None, None

    def _rules(self) -> Retirement:
        values = {field: _validation.rendered_none(getattr(self, field)) for field in _DURATIONS}
        return validate_retirement(**values)

    @functools.cached_property
    def hook(self) -> OpenRouterHook:
        """The hook, built on first use (no connection lookup or network access before ``execute``)."""
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    # -- execution -------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]]:
        return self._run(context, [])

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, done: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Resume after the trigger fired: a step is due (or a key is gone), so make another pass."""
        if not isinstance(event, dict) or event.get("status") not in ("due", "error"):
            raise OpenRouterError(f"Unexpected event from the retired-keys trigger: {event!r}")
        if event["status"] == "error":
            raise OpenRouterError(str(event.get("message") or "the retired-keys trigger failed"))
        self.log.info("%s", event.get("message"))
        return self._run(context, list(done or []))

    def _run(self, context: Context, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
        name, prefix = self._target(rendered=True)
        workspace = _validation.validate_workspace_id(_validation.rendered_none(self.workspace_id))
        rules = self._rules()
        while True:
            acted, waiting = self._pass(context, rules, name=name, prefix=prefix, workspace=workspace)
            done.extend(acted)
            if not waiting:
                self.log.info("No key rotated out of %s is left.", self._what(name, prefix))
                return done
            if not self.wait:
                now = time.time()
                # A key disabled by this pass has its entry: its delete is the next pass's.
                acted_on = {entry["key_hash"] for entry in acted}
                return done + [
                    {
                        "key_hash": key.hash,
                        "name": key.name,
                        "action": "keep",
                        "reason": waiting_reason(key, of, at, now=now, rules=rules),
                    }
                    for key, of, at in waiting
                    if key.hash not in acted_on
                ]
            if self.deferrable:
                self._defer(waiting, rules, done)
            self._wait_in_worker(waiting, rules)

    @staticmethod
    def _what(name: str | None, prefix: str | None) -> str:
        return f"{name!r}" if name is not None else f"the names under {prefix!r}"

    def _pass(
        self,
        context: Context,
        rules: Retirement,
        *,
        name: str | None,
        prefix: str | None,
        workspace: str | None,
    ) -> tuple[list[dict[str, Any]], list[Retired]]:
        """One walk and the steps due now: what was done, and the keys still to wait for."""
        found: list[Retired] = []
        # Collected before any change: deleting while walking would shift the pages still to come.
        for key in self.hook.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace):
            rotated = retired_of(key.name)
            if rotated is not None and (rotated[0] == name or (prefix and rotated[0].startswith(prefix))):
                found.append((key, *rotated))
        now = time.time()
        events = assets.KeyEvents(self.asset_alias, self.openrouter_conn_id)
        acted: list[dict[str, Any]] = []
        waiting: list[Retired] = []
        failures: list[str] = []
        for key, of, at in found:
            decided = retired_action(key, of, at, now=now, rules=rules)
            if decided is None or decided[0] == "keep":
                self.log.info(
                    "Keeping key %r (hash %s): %s.",
                    key.name,
                    key.hash,
                    waiting_reason(key, of, at, now=now, rules=rules),
                )
                waiting.append((key, of, at))
                continue
            action, reason = decided
            try:
                if action == "disable":
                    # Still to wait for: its delete, rotation_grace from now.
                    waiting.append((self.hook.update_key(key.hash, disabled=True), of, at))
                else:
                    self.hook.delete_key(key.hash, missing_ok=True)
            except NotFoundError:
                # Deleted since the walk (another run, or a person): past what a disable is for.
                self.log.info("Key %r (hash %s) is already gone.", key.name, key.hash)
                continue
            except OpenRouterError as exc:
                failures.append(f"{action} {key.name!r} (hash {key.hash}): {type(exc).__name__}: {exc}")
                continue
            past = "disabled" if action == "disable" else "deleted"
            self.log.info("%s key %r (hash %s): %s.", past.capitalize(), key.name, key.hash, reason)
            events.add_key(past, key)
            acted.append({"key_hash": key.hash, "name": key.name, "action": action, "reason": reason})
        events.emit(context)
        if failures:
            raise OpenRouterError(
                f"{len(failures)} of {len(found)} rotated-out keys could not be retired (the rest were; a "
                "rerun converges):\n  " + "\n  ".join(failures)
            )
        return acted, waiting

    def _wait_in_worker(self, waiting: list[Retired], rules: Retirement) -> None:
        """Read the waiting keys by hash until a step is due or one is gone (then the caller walks again)."""
        from airflow_provider_openrouter.exceptions import NO_CLEAR_ANSWER

        failures = 0
        while True:
            now = time.time()
            soonest = min(due_at(key, at, rules=rules) for key, _, at in waiting)
            time.sleep(max(0.0, min(self.poll_interval, soonest - now)))
            try:
                fresh = [(self.hook.get_key(key.hash), of, at) for key, of, at in waiting]
            except NotFoundError:
                return
            except NO_CLEAR_ANSWER as exc:
                failures += 1
                if failures > self.max_consecutive_failures:
                    raise
                self.log.warning("Reading the waiting keys failed (%d in a row): %s", failures, exc)
                continue
            failures = 0
            now = time.time()
            if any(due_at(key, at, rules=rules) <= now for key, _, at in fresh):
                return
            for (old, _, _), (key, of, at) in zip(waiting, fresh, strict=True):
                if key.last_used_at != old.last_used_at:
                    self.log.info(
                        "Keeping key %r: %s.", key.name, waiting_reason(key, of, at, now=now, rules=rules)
                    )
            waiting = fresh

    def _defer(self, waiting: list[Retired], rules: Retirement, done: list[dict[str, Any]]) -> NoReturn:
        from airflow_provider_openrouter.triggers.retired_keys import RetiredKeysTrigger

        trigger = RetiredKeysTrigger(
            keys=[{"key_hash": key.hash, "key_name": key.name} for key, _, _ in waiting],
            rules=dict(rules),
            openrouter_conn_id=self.openrouter_conn_id,
            poll_interval=self.poll_interval,
            max_consecutive_failures=self.max_consecutive_failures,
        )
        # A backstop for a triggerer that is down: the latest any step can fall due, and some slack.
        fixed = rules["retire_when_idle_for"] is None
        latest = max(
            at + (rules["rotation_overlap"] if fixed else rules["retire_deadline"]) + rules["rotation_grace"]
            for _, _, at in waiting
        )
        timeout = dt.timedelta(seconds=max(0.0, latest - time.time()) + max(60.0, 2 * self.poll_interval))
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"done": done}, timeout=timeout)
