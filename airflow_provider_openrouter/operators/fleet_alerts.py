"""Fleet alerts: one walk of the keys, one message through any Airflow notifier, each occurrence once.

The module is imported when DAG files are parsed, so it stays cheap: the hook and the Variable API are
imported inside ``execute``. What is found, what is new and what the message says are decided by the pure
:mod:`airflow_provider_openrouter._fleet`.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import TYPE_CHECKING, Any, Final

from airflow.sdk import BaseOperator

from airflow_provider_openrouter import _validation
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._fleet import (
    FleetChecks,
    Scan,
    dump_state,
    mark_new,
    message,
    next_state,
    read_state,
    scope_label,
)
from airflow_provider_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import BaseNotifier, Context

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

__all__ = ["CONTEXT_KEY", "ApiKeyAlertsOperator"]

#: Where the notifiers' templates find the message: ``{{ fleet_alerts.subject }}``, ``.text``, ``.html``,
#: ``.count`` and ``.findings``.
CONTEXT_KEY: Final = "fleet_alerts"
#: The prefix of the default state Variable, followed by ``<dag_id>__<task_id>``.
STATE_VARIABLE_PREFIX: Final = "openrouter_fleet_alerts__"
_TEMPLATED: Final[tuple[str, ...]] = (
    "name_prefix",
    "workspace_id",
    "limit_fraction_at_least",
    "credits_below",
    "state_variable",
)


class StateStore:
    """The deduplication state in an Airflow Variable, as text (the operator parses it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self) -> str | None:
        from airflow.sdk import Variable

        value = Variable.get(self.name, default=None)
        return None if value is None else str(value)

    def write(self, text: str) -> None:
        from airflow.sdk import Variable

        Variable.set(
            self.name,
            text,
            description="Fleet alerts already sent (fingerprints of key hashes, no secret); "
            "delete it to have every current alert sent again",
        )


def _notifiers(value: Any) -> tuple[BaseNotifier, ...]:
    from airflow.sdk import BaseNotifier

    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not items:
        _validation.fail("notifier", "give at least one notifier")
    for item in items:
        if not isinstance(item, BaseNotifier):
            _validation.fail(
                "notifier",
                f"must be an Airflow notifier (a BaseNotifier such as SmtpNotifier) or a list of them "
                f"(got {type(item).__name__})",
            )
    return items


class ApiKeyAlertsOperator(BaseOperator):
    """Check a fleet of OpenRouter keys in one walk and send what needs attention through Airflow notifiers.

    Each run lists the keys (disabled and expired ones included) of the connection's workspace or
    ``workspace_id``, keeps those whose name starts with ``name_prefix``, and finds: keys whose usage in
    their current limit window is at least ``limit_fraction_at_least`` of the limit, keys that expire within
    ``expires_within`` (or have expired), disabled keys (``report_disabled``), and the account's remaining
    credits below ``credits_below``. What was not reported before goes out as one message per run, through
    every notifier; nothing is sent when nothing is new. See :ref:`howto/operator:ApiKeyAlertsOperator`.

    The notifiers read the message from their templates: ``{{ fleet_alerts.subject }}``,
    ``{{ fleet_alerts.text }}`` (plain text), ``{{ fleet_alerts.html }}`` (escaped HTML), ``.count`` and
    ``.findings``. It names keys by name and hash and gives figures, never a plaintext.

    Deduplication: an occurrence (a key over the threshold in one limit window at one limit, a key's expiry,
    a key disabled, credits low) is reported once; once it has ended (a new window, another limit or expiry,
    the key enabled, credits topped up) the next one is reported again. The state is an Airflow Variable
    written after the send; the task runs one instance at a time across runs (``max_active_tis_per_dag=1``)
    so that overlapping runs do not both send. A failed send records nothing: the retry sends again. When the
    send succeeds and the state cannot be written, the task fails and its retry sends the same message again:
    an alert may be repeated, never lost.

    :param notifier: An Airflow notifier (a ``BaseNotifier``: ``SmtpNotifier``, Slack's, your own) or a
        list of them. Each is copied before it renders its templates.
    :param name_prefix: Only keys whose name starts with this. (templated)
    :param workspace_id: The workspace to walk; default the connection's. (templated)
    :param limit_fraction_at_least: Report keys with a limit whose usage in the current window reaches this
        share of it: above 0, at most 1 (``0.8``). (templated)
    :param expires_within: Report keys expiring within this (seconds or a ``timedelta``), and expired keys.
    :param report_disabled: ``True``: report disabled keys.
    :param credits_below: Report when the account's credits minus its usage falls below this many USD.
        (templated)
    :param state_variable: The Variable holding what was reported; default
        ``openrouter_fleet_alerts__<dag_id>__<task_id>``. Give each alerts task its own. (templated)
    :param openrouter_conn_id: The OpenRouter connection.

    Returns (XCom) ``{"checked_at", "scope", "keys_checked", "findings", "sent", "state_variable"}``: every
    finding that holds now, each with its figures, ``fingerprint`` and ``new`` (reported by this run), and
    how many this try sent.
    """

    template_fields: Sequence[str] = _TEMPLATED
    ui_color = "#fdf0e2"

    def __init__(
        self,
        *,
        notifier: BaseNotifier | Sequence[BaseNotifier],
        name_prefix: str | None = None,
        workspace_id: str | None = None,
        limit_fraction_at_least: float | str | None = None,
        expires_within: dt.timedelta | float | None = None,
        report_disabled: bool = False,
        credits_below: float | str | None = None,
        state_variable: str | None = None,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        max_active_tis_per_dag: int | None = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_active_tis_per_dag=max_active_tis_per_dag, **kwargs)
        self.notifier = _notifiers(notifier)
        self.name_prefix = name_prefix
        self.workspace_id = workspace_id
        self.limit_fraction_at_least = limit_fraction_at_least
        self.expires_within = expires_within
        self.report_disabled = report_disabled
        self.credits_below = credits_below
        self.state_variable = state_variable
        self.openrouter_conn_id = _validation.validate_conn_id(openrouter_conn_id)
        self._check(rendered=False)

    # -- validation ------------------------------------------------------------------------------------------

    def _check(self, *, rendered: bool) -> tuple[FleetChecks | None, str | None, str | None, str | None]:
        """Check the arguments: at parse time those that are literal, after rendering all of them. Returns
        the checks, the prefix, the workspace and the state Variable (``None`` until known)."""
        known = {
            name: _validation.rendered_none(getattr(self, name))
            for name in _TEMPLATED
            if rendered or _validation.is_literal(getattr(self, name))
        }
        prefix = known.get("name_prefix")
        if prefix is not None:
            prefix = _validation.validate_name_prefix(prefix)
        workspace = _validation.validate_workspace_id(known.get("workspace_id"))
        variable = _validation.validate_variable_name(known.get("state_variable"), field="state_variable")
        if "limit_fraction_at_least" in known:
            _validation.validate_fraction(known["limit_fraction_at_least"])
        if "credits_below" in known:
            _validation.validate_limit(known["credits_below"], field="credits_below")
        everything = rendered or all(name in known for name in ("limit_fraction_at_least", "credits_below"))
        # With a template still to render the conditions are checked once it is, except the untemplated ones.
        checks = (
            FleetChecks(
                limit_fraction_at_least=known.get("limit_fraction_at_least"),
                expires_within=self.expires_within,
                report_disabled=self.report_disabled,
                credits_below=known.get("credits_below"),
            )
            if everything
            else None
        )
        if checks is None:
            if self.expires_within is not None:
                _validation.validate_seconds(self.expires_within, field="expires_within")
            _validation.validate_bool(self.report_disabled, field="report_disabled")
        return checks, prefix, workspace, variable

    def _state_variable(self, given: str | None) -> str:
        if given is not None:
            return given
        name = f"{STATE_VARIABLE_PREFIX}{self.dag_id}__{self.task_id}"
        checked = _validation.validate_variable_name(name, field="state_variable")
        assert checked is not None
        return checked

    # -- execution -------------------------------------------------------------------------------------------

    def hook(self) -> OpenRouterHook:
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    def state_store(self, name: str) -> StateStore:
        return StateStore(name)

    def execute(self, context: Context) -> dict[str, Any]:
        checks, prefix, workspace, given_variable = self._check(rendered=True)
        assert checks is not None
        variable = self._state_variable(given_variable)
        run_id = str(context["run_id"])
        scope = scope_label(prefix, workspace)

        walked_at = dt.datetime.now(dt.timezone.utc)
        scan = Scan(checks, walked_at)
        hook = self.hook()
        try:
            for key in hook.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace):
                if prefix is None or (key.name or "").startswith(prefix):
                    scan.add(key)
            if checks.credits_below is not None:
                scan.add_credits(hook.get_credits())
        finally:
            hook.close()
        self.log.info("Checked %d key(s) (%s): %d finding(s)", scan.keys_checked, scope, len(scan.findings))

        store = self.state_store(variable)
        state, problem = read_state(store.read())
        if problem is not None:
            self.log.warning("Variable %s is %s: starting from an empty state", variable, problem)
        to_send = mark_new(scan.findings, state, run_id)
        for finding in scan.findings:
            if not finding["new"]:
                self.log.info("Already reported: %s", finding["fingerprint"])
        now = dt.datetime.now(dt.timezone.utc)
        if to_send:
            self._send(context, message(to_send, scope=scope, checked_at=walked_at))
            self.log.info("Sent %d alert(s) through %d notifier(s)", len(to_send), len(self.notifier))
        else:
            self.log.info("Nothing new to report")

        # Read again just before writing: what an overlapping run recorded meanwhile is kept, not overwritten.
        try:
            raw = store.read()
            latest, _ = read_state(raw)
            text = dump_state(
                next_state(latest, to_send, scan.live, run_id=run_id, walked_at=walked_at, now=now)
            )
            if text != raw:
                store.write(text)
        except Exception as err:
            if not to_send:
                raise
            raise OpenRouterError(
                f"The alerts were sent, but recording them in Variable {variable} failed "
                f"({type(err).__name__}: {err}); a retry will send them again"
            ) from err
        return {
            "checked_at": walked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scope": scope,
            "keys_checked": scan.keys_checked,
            "findings": scan.findings,
            "sent": len(to_send),
            "state_variable": variable,
        }

    def _send(self, context: Context, alert: dict[str, Any]) -> None:
        rendering = {**context, CONTEXT_KEY: alert}
        for notifier in self.notifier:
            # Rendering replaces a notifier's templates with their values: a copy keeps them for next time.
            copy.copy(notifier)(rendering)
