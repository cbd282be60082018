"""Sensor that waits until an OpenRouter key's usage reaches a threshold."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._usage import (
    CONDITION_FIELDS,
    EVENT_STATUSES,
    ProgressLog,
    UsageConditions,
    describe_key,
    evaluate,
    unavailable_message,
)
from airflow_provider_openrouter.exceptions import (
    NO_CLEAR_ANSWER,
    NotFoundError,
    OpenRouterError,
    OpenRouterKeyUnavailableError,
    OpenRouterValidationError,
    RateLimitedError,
)

try:  # Airflow >= 3.2
    from airflow.sdk import conf
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
except ImportError:  # pragma: no cover - Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined,assignment,unused-ignore]
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey

__all__ = ["RESCHEDULE_MIN_INTERVAL", "OpenRouterKeyUsageSensor"]

# Seconds. Below this, reschedule mode is unreliable on a real scheduler with Celery workers: a poke's
# "finished" event can reach the scheduler after the task is already queued for its next poke, and the
# scheduler fails the task (Airflow's own race, apache/airflow#71172). Measured on a deployment with two
# Celery workers: see the README's "On a real deployment".
RESCHEDULE_MIN_INTERVAL = 5.0


class OpenRouterKeyUsageSensor(BaseSensorOperator):
    """Wait until an OpenRouter API key's usage reaches a threshold.

    The key is named by ``key_hash`` or by its exact ``key_name`` (give exactly one). The sensor measures the
    key's usage in ``usage_window`` (the current UTC day, the week starting Monday, the month, or the key's
    lifetime), adding the BYOK usage of the same window when ``include_byok`` is set, and succeeds when any
    of the given conditions holds (every one of them with ``match_all``):

    * ``usage_at_least``: the measured usage is at least this many USD;
    * ``limit_fraction_at_least``: the measured usage is at least this share of the key's spending limit
      (``0.8`` = 80 %); a key without a limit makes this an error;
    * ``limit_remaining_at_most``: OpenRouter's own ``limit_remaining`` for the key is at most this many USD
      (it follows the key's ``limit_reset`` and ``include_byok_in_limit``); a key without a limit makes this
      an error.

    To measure the share of the limit the way OpenRouter counts it, set ``usage_window`` to the key's
    ``limit_reset`` (``"lifetime"`` for a key whose limit never resets) and ``include_byok`` to its
    ``include_byok_in_limit``.

    Each poll logs one line, e.g. ``usage_daily $3.20 of $5.00 threshold (64 %)``. On success the sensor
    returns a JSON-safe usage snapshot (pushed to XCom). A key that is disabled, has expired or has been
    deleted ends the wait with :class:`OpenRouterKeyUnavailableError`, a failure without retries (a skip
    with ``soft_fail``). ``timeout`` works the same in the poke, reschedule and deferrable modes: the wait
    ends with ``AirflowSensorTimeout`` (a skip with ``soft_fail``).

    :param key_hash: Hash of the key to watch: 64 lower-case hex characters. Templated.
    :param key_name: Exact name of the key to watch, instead of ``key_hash``; it must match exactly one key.
        A name as :class:`~airflow_provider_openrouter.operators.api_key.CreateApiKeyOperator` accepts it.
        Templated.
    :param usage_window: ``"daily"``, ``"weekly"``, ``"monthly"`` or ``"lifetime"``. Templated.
    :param usage_at_least: Succeed when the usage in the window reaches this many USD: a number from 0 to
        1,000,000,000 (a numeric string too), or ``None``. Templated.
    :param limit_fraction_at_least: Succeed when the usage in the window reaches this share of the key's
        limit: a ratio above 0 and at most 1 (``0.8`` for 80 %), or ``None``. Templated.
    :param limit_remaining_at_most: Succeed when the key's remaining limit falls to this many USD: a number
        from 0 to 1,000,000,000, or ``None``. Templated. At least one of the three conditions is required; a
        template clears one by rendering to ``None`` (see :ref:`howto/operator:empty-values`), never to
        ``""``.
    :param include_byok: ``True`` or ``False``: count the key's BYOK (bring your own key) usage in the window
        too.
    :param match_all: ``True`` or ``False``: succeed only when every given condition holds, rather than any
        one of them.
    :param openrouter_conn_id: The OpenRouter connection to use (its password is a management key): letters,
        digits, ``_``, ``.`` and ``-``.
    :param deferrable: ``True`` or ``False``: wait in the triggerer instead of a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param max_consecutive_failures: How many polls in a row (a whole number, 0 or more) may fail transiently
        (network errors, server errors, unreadable answers) before the sensor fails, in poke and deferrable
        modes. The hook's own retries (the connection's ``max_retries``) happen within each poll. A rate limit
        (429) is not a failure: the next poll waits at least the ``Retry-After`` OpenRouter asked for.
    :param poke_interval: Time between polls, in seconds or as a ``timedelta``: finite, at least 0.05 s (no
        tight polling loop), at most ten years.
    :param timeout: How long to wait in all, in seconds or as a ``timedelta`` (finite, 0 to ten years), in
        every mode. Defaults to ``[sensors] default_timeout``.
    :param mode: ``"poke"`` (hold a worker slot between polls) or ``"reschedule"`` (free it); ignored when
        ``deferrable``.
    :param soft_fail: ``True`` or ``False``: skip the task instead of failing it on timeout or when the key
        becomes unusable.

    Literal arguments are checked when the DAG file is parsed, templated ones once rendered, before any
    request; a bad one raises :class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError`
    naming it.

    For more information on how to use this sensor, take a look at the guide:
    :ref:`howto/sensor:OpenRouterKeyUsageSensor`
    """

    template_fields: Sequence[str] = (
        "key_hash",
        "key_name",
        "usage_window",
        "usage_at_least",
        "limit_fraction_at_least",
        "limit_remaining_at_most",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        key_hash: str | None = None,
        key_name: str | None = None,
        usage_window: str = "daily",
        usage_at_least: float | str | None = None,
        limit_fraction_at_least: float | str | None = None,
        limit_remaining_at_most: float | str | None = None,
        include_byok: bool = False,
        match_all: bool = False,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_consecutive_failures: int = 3,
        poke_interval: dt.timedelta | float = 60,
        timeout: dt.timedelta | float | None = None,
        mode: str = "poke",
        soft_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        # Checked before Airflow's own handling, which lets NaN or infinity through to date arithmetic.
        poke_interval = v.validate_poll_interval(poke_interval, field="poke_interval")
        if timeout is not None:
            # Airflow 3.1 reads its default from the config only when no timeout is passed at all.
            kwargs["timeout"] = v.validate_seconds(timeout, field="timeout")
        v.validate_one_of(mode, v.SENSOR_MODES, field="mode")
        super().__init__(
            poke_interval=poke_interval,
            mode=mode,
            soft_fail=v.validate_bool(soft_fail, field="soft_fail"),
            **kwargs,
        )
        if self.mode == "reschedule" and not deferrable and self.poke_interval < RESCHEDULE_MIN_INTERVAL:
            warnings.warn(
                f"{self.task_id}: poke_interval={self.poke_interval:g} s in reschedule mode is below "
                f"{RESCHEDULE_MIN_INTERVAL:g} s, where Airflow's scheduler can fail the sensor between two "
                "pokes (apache/airflow#71172); poll less often, or use deferrable=True",
                UserWarning,
                stacklevel=2,
            )
        self.key_hash = key_hash
        self.key_name = key_name
        self.usage_window = usage_window
        self.usage_at_least = usage_at_least
        self.limit_fraction_at_least = limit_fraction_at_least
        self.limit_remaining_at_most = limit_remaining_at_most
        self.include_byok = v.validate_bool(include_byok, field="include_byok")
        self.match_all = v.validate_bool(match_all, field="match_all")
        self.openrouter_conn_id = v.validate_conn_id(openrouter_conn_id)
        self.deferrable = v.validate_bool(deferrable, field="deferrable")
        self.max_consecutive_failures = v.validate_int(
            max_consecutive_failures, field="max_consecutive_failures"
        )
        self._check(rendered=False)
        self._resolved_hash: str | None = None
        self._failures = 0
        self._progress = ProgressLog()

    # -- validation ------------------------------------------------------------------------------------------

    def _check(self, *, rendered: bool) -> tuple[str | None, str | None, UsageConditions | None]:
        """Check the templated fields: at parse time those that are literal (``rendered=False``), after
        rendering all of them. Returns the target and, once every field is known, the conditions."""
        target = [v.rendered_none(value) if rendered else value for value in (self.key_hash, self.key_name)]
        if (target[0] is None) == (target[1] is None):
            v.fail("key_hash/key_name", "give exactly one of key_hash and key_name to name the key to watch")
        known = {
            name: v.rendered_none(getattr(self, name))
            for name in ("key_hash", "key_name", "usage_window", *CONDITION_FIELDS)
            if rendered or v.is_literal(getattr(self, name))
        }
        key_hash = v.validate_key_hash(known["key_hash"]) if known.get("key_hash") is not None else None
        key_name = (
            v.validate_name(known["key_name"], field="key_name")
            if known.get("key_name") is not None
            else None
        )
        if "usage_window" in known:
            v.validate_usage_window(known["usage_window"])
        for name in ("usage_at_least", "limit_remaining_at_most"):
            if name in known:
                v.validate_limit(known[name], field=name)
        if "limit_fraction_at_least" in known:
            v.validate_fraction(known["limit_fraction_at_least"])
        if all(name in known and known[name] is None for name in CONDITION_FIELDS):
            v.fail("/".join(CONDITION_FIELDS), "give at least one condition to wait for")
        if not rendered:
            return key_hash, key_name, None
        conditions = UsageConditions(
            usage_window=known["usage_window"],
            **{name: known[name] for name in CONDITION_FIELDS},
            include_byok=self.include_byok,
            match_all=self.match_all,
        )
        return key_hash, key_name, conditions

    def _conditions(self) -> UsageConditions:
        conditions = self._check(rendered=True)[2]
        assert conditions is not None
        return conditions

    # -- polling ---------------------------------------------------------------------------------------------

    @cached_property
    def hook(self) -> OpenRouterHook:
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    def _fetch_key(self) -> ApiKey:
        target_hash = self._resolved_hash or self.key_hash
        if target_hash is not None:
            try:
                return self.hook.get_key(target_hash)
            except NotFoundError as err:
                raise OpenRouterKeyUnavailableError(
                    unavailable_message(target_hash, self.key_name, "deleted"), reason="deleted"
                ) from err
        assert self.key_name is not None
        key = self.hook.find_key_by_name(self.key_name)
        if key is None:
            raise OpenRouterKeyUnavailableError(
                f"No key is named {self.key_name!r} (deleted, or never created): its usage cannot be watched",
                reason="deleted",
            )
        # Later polls of this run ask for the key by hash: one request instead of a scan of every key.
        self._resolved_hash = key.hash
        return key

    def poke(self, context: Context) -> PokeReturnValue:
        conditions = self._conditions()
        try:
            key = self._fetch_key()
        except RateLimitedError as err:
            # As in the trigger: OpenRouter asked us to slow down, which is not a failure of the watch, so it
            # does not count towards max_consecutive_failures; timeout still bounds the wait.
            if self.mode == "reschedule" and not self.deferrable:
                raise
            extra = (err.retry_after or 0.0) - self.poke_interval
            self.log.warning(
                "Rate limited (%s); polling again in %.1f s", err, self.poke_interval + max(0, extra)
            )
            if extra > 0 and not self.deferrable:
                time.sleep(extra)
            return PokeReturnValue(is_done=False)
        except NO_CLEAR_ANSWER as err:
            # Between reschedules nothing is remembered, so only a sensor that stays in memory can count.
            if self.mode == "reschedule" and not self.deferrable:
                raise
            self._failures += 1
            if self._failures > self.max_consecutive_failures:
                raise OpenRouterError(
                    f"Polling {describe_key(self._resolved_hash or self.key_hash or '?', self.key_name)} "
                    f"failed {self._failures} times in a row (max_consecutive_failures="
                    f"{self.max_consecutive_failures}); last error: {type(err).__name__}: {err}"
                ) from err
            self.log.warning(
                "Poll failed (%d of %d tolerated in a row): %s: %s",
                self._failures,
                self.max_consecutive_failures,
                type(err).__name__,
                err,
            )
            return PokeReturnValue(is_done=False)
        self._failures = 0
        check = evaluate(key, conditions)
        if self._progress.due(check.progress):
            self.log.info("%s", check.progress)
        if check.unavailable is not None:
            raise OpenRouterKeyUnavailableError(
                unavailable_message(key.hash, key.name, check.unavailable, key.expires_at),
                reason=check.unavailable,
            )
        if check.met:
            return PokeReturnValue(is_done=True, xcom_value=check.snapshot)
        return PokeReturnValue(is_done=False)

    # -- execution -------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        # Template rendering happened just before this call: check the values as they will be used.
        self.key_hash, self.key_name, _ = self._check(rendered=True)
        self._resolved_hash = None
        self._failures = 0
        self._progress = ProgressLog()
        if not self.deferrable:
            return super().execute(context)

        started = time.time()
        try:
            first = self.poke(context)
        except (AirflowFailException, AirflowSensorTimeout) as err:
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if first:
            self.log.info("Success criteria met. Exiting.")
            return first.xcom_value
        return self._defer(started)

    def _defer(self, started: float) -> NoReturn:
        from airflow_provider_openrouter.triggers.key_usage import OpenRouterKeyUsageTrigger

        target_hash = self._resolved_hash or self.key_hash
        if target_hash is None:
            # The first poll failed transiently before the name was resolved: resolve it now, or fail here.
            target_hash = self._fetch_key().hash
        deadline = dt.datetime.fromtimestamp(started + self.timeout, dt.timezone.utc)
        trigger = OpenRouterKeyUsageTrigger(
            key_hash=target_hash,
            key_name=self.key_name,
            **self._conditions().to_dict(),
            openrouter_conn_id=self.openrouter_conn_id,
            poll_interval=self.poke_interval,
            deadline=deadline.isoformat(),
            max_consecutive_failures=self.max_consecutive_failures,
        )
        # The trigger ends the wait itself at the deadline with a readable event; the deferral timeout is a
        # backstop for a triggerer that is down, and maps to the same AirflowSensorTimeout.
        backstop = dt.timedelta(
            seconds=max(0.0, started + self.timeout - time.time()) + max(60.0, 2 * self.poke_interval)
        )
        self.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: return the snapshot, or raise what ended the wait."""
        if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
            raise OpenRouterError(f"Unexpected event from the key-usage trigger: {event!r}")
        status = event["status"]
        message = str(event.get("message") or status)
        snapshot = event.get("snapshot")
        if status == "success":
            if not isinstance(snapshot, dict):
                raise OpenRouterError(f"The key-usage trigger reported success without a snapshot: {event!r}")
            self.log.info("%s", message)
            return snapshot
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        if status == "key_gone":
            raise OpenRouterKeyUnavailableError(message, reason=str(event.get("reason") or "deleted"))
        field = event.get("field")
        if isinstance(field, str):
            raise OpenRouterValidationError(field, str(event.get("problem") or message))
        raise OpenRouterError(message)
