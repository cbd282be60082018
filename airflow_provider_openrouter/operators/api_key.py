"""Operators for the life of an OpenRouter API key: create (and deliver its plaintext), update, delete.

The module is imported when DAG files are parsed, so it stays cheap: the hook (and with it ``requests``) is
imported the first time a task needs it, inside ``execute``.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any, Final

from airflow.sdk import BaseOperator

from airflow_provider_openrouter import _validation, assets
from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter._endpoints import create_key_body, update_key_body

# The sentinel without the models module: this module is imported by every DAG file that uses it.
from airflow_provider_openrouter._sentinel import UNSET, Unset

# Re-exported, not only a type: the reference documents if_exists's type here, declared once with the checks.
from airflow_provider_openrouter._validation import IfExists  # noqa: TC001
from airflow_provider_openrouter.assets import DEFAULT_ASSET_ALIAS as _ALIAS
from airflow_provider_openrouter.exceptions import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    NotFoundError,
    OpenRouterValidationError,
)
from airflow_provider_openrouter.links import KEY_HASH_ATTR, OpenRouterKeyLink
from airflow_provider_openrouter.models import CREATE_FIELDS, UPDATE_FIELDS, same_setting

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.sdk import Context

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

__all__ = [
    "PLAINTEXT_XCOM_KEY",
    "CreateApiKeyOperator",
    "DeleteApiKeyOperator",
    "UpdateApiKeyOperator",
]

#: XCom key under which :class:`CreateApiKeyOperator` pushes the plaintext when ``push_plaintext_to_xcom``.
PLAINTEXT_XCOM_KEY: Final = "openrouter_api_key"

# The key fields each operator takes, as declared on ApiKey.
_CREATE_FIELDS: Final = tuple(key_field.name for key_field in CREATE_FIELDS)
_UPDATE_FIELDS: Final = tuple(key_field.name for key_field in UPDATE_FIELDS)
# The settings a reused key is compared with (its name and workspace are what found it).
_SETTINGS: Final = tuple(
    name for name in _CREATE_FIELDS if name in _UPDATE_FIELDS and name not in ("name", "workspace_id")
)
# Any moment passes the "in the future" check: at parse time only the form of ``expires_at`` is checked, so a
# DAG file does not stop importing the day its literal date passes.
_DAWN_OF_TIME: Final = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc)


def _callable_name(func: Callable[..., Any]) -> str:
    # The qualified name alone: Airflow loads DAG files under generated module names that say nothing.
    return str(getattr(func, "__qualname__", None) or type(func).__name__)


class _KeyOperator(BaseOperator):
    """What the three key operators share: the connection, the lazy hook and the extra link."""

    operator_extra_links = (OpenRouterKeyLink(),)

    def __init__(
        self, *, openrouter_conn_id: str = DEFAULT_CONN_ID, asset_alias: str | None = _ALIAS, **kw: Any
    ) -> None:
        super().__init__(**assets.alias_outlet(asset_alias, kw))
        self.openrouter_conn_id = _validation.validate_conn_id(openrouter_conn_id)
        self.asset_alias = asset_alias

    @functools.cached_property
    def hook(self) -> OpenRouterHook:
        """The hook, built on first use (no connection lookup or network access before ``execute``)."""
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        return OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id)

    def _remember_key(self, key_hash: str) -> None:
        # Read by OpenRouterKeyLink when the task finishes, whether it succeeded or not.
        setattr(self, KEY_HASH_ATTR, key_hash)

    def _find_target(self, key_hash: str | None, key_name: str | None) -> ApiKey | None:
        """The key named by hash or by name; ``None`` when it does not exist."""
        if key_hash is not None:
            try:
                return self.hook.get_key(key_hash)
            except NotFoundError:
                return None
        assert key_name is not None
        return self.hook.find_key_by_name(key_name)


class CreateApiKeyOperator(_KeyOperator):
    """Create an OpenRouter API key and deliver its plaintext to where the DAG author chose.

    OpenRouter shows a key's plaintext once, in the answer to the create. The operator hands it to the
    destinations given here right then, and keeps it out of everything else (masked, never logged, never
    returned, in XCom only on request); a key that cannot be delivered is deleted again. ``if_exists`` makes
    it idempotent by name, and parallel or killed runs leave one delivered key under the name (the
    provisional-name sequence of :doc:`/guarantees`). How to use it, each destination, ``if_exists`` and what
    a failure leaves: :ref:`howto/operator:CreateApiKeyOperator`.

    It returns the key's metadata (:class:`~airflow_provider_openrouter.models.ApiKey`) plus ``action``
    (``"created"``, ``"reused"``, ``"replaced"``), ``plaintext_issued``, ``plaintext_delivered_to`` (never the
    plaintext), ``replaced_key_hashes`` (the old keys the new one took the name from), ``retired_key_hashes``
    (those of them still working as ``<name> [retired …]``: ``keep_old_key``) and
    ``deleted_orphan_key_hashes``.

    :param name: Name of the key, and what makes the operator idempotent. (templated)
    :param limit: Spending limit in USD (0 to 1,000,000,000), or ``None`` for none. (templated)
    :param limit_reset: ``"daily"``, ``"weekly"``, ``"monthly"``, or ``None`` for never. (templated)
    :param include_byok_in_limit: Whether BYOK spend counts toward the limit (``None``: default). (templated)
    :param expires_at: When the key stops working: a timezone-aware ``datetime`` or ISO 8601 string in the
        future; ``None`` for never. (templated)
    :param workspace_id: Workspace to create the key in (and look for one of the same name in); ``None``:
        the connection's. (templated)
    :param creator_user_id: OpenRouter user to record as the key's creator, or ``None``. (templated)
    :param guardrail_id: Guardrail (its id, a UUID) the key is assigned to before the task succeeds: a new
        key while it is still provisional, before delivery (if that fails the key is deleted again); a
        reused one too, which is safe to repeat. ``None``: no guardrail. (templated)
    :param if_exists: When a key of this name exists: ``"fail"`` (default), ``"reuse"`` or ``"replace"``.
    :param keep_old_key: ``True`` or ``False`` (default). With ``if_exists="replace"``, rotate with overlap:
        the old key is not deleted but renamed ``<name> [retired <epoch>]`` and keeps working, until
        :class:`~airflow_provider_openrouter.operators.retire.RetireApiKeysOperator` (or a tenant sync of the
        name) retires it once idle (:ref:`howto/fleet:single-key-rotation`). Needs ``if_exists="replace"``.
    :param deliver_to_variable: Airflow Variable to write the plaintext to. (templated)
    :param deliver_to_callable: ``deliver_to_callable(created_key, context)``, handed the
        :class:`~airflow_provider_openrouter.models.CreatedApiKey`; it must raise if it could not store it.
    :param push_plaintext_to_xcom: Also push the plaintext to the XCom ``openrouter_api_key`` (unencrypted:
        off by default). At least one of the three destinations is required.
    :param claim_lease: Seconds (or a ``timedelta``, 2 s to a day) a task holds its provisional key; delivery
        must finish within half of it. Default 120 s.
    :param openrouter_conn_id: The OpenRouter connection (its password is the management key).
    :param asset_alias: The asset alias of its asset events; ``None``: none (:ref:`howto/fleet:assets`).

    Literal arguments are checked when the DAG file is parsed, templated ones once rendered, before any
    request; an empty string never means "none" (see :ref:`howto/operator:empty-values`).
    """

    template_fields: Sequence[str] = (*_CREATE_FIELDS, "deliver_to_variable", "guardrail_id")
    ui_color = "#e0f2e9"

    def __init__(
        self,
        *,
        name: str,
        limit: float | str | None = None,
        limit_reset: str | None = None,
        include_byok_in_limit: bool | str | None = None,
        expires_at: dt.datetime | str | None = None,
        workspace_id: str | None = None,
        creator_user_id: str | None = None,
        if_exists: IfExists = "fail",
        keep_old_key: bool = False,
        deliver_to_variable: str | None = None,
        deliver_to_callable: Callable[[CreatedApiKey, Context], None] | None = None,
        push_plaintext_to_xcom: bool = False,
        guardrail_id: str | None = None,
        claim_lease: float | dt.timedelta = 120.0,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(openrouter_conn_id=openrouter_conn_id, **kwargs)
        self._provisioner: Any = None
        self.claim_lease = _validation.validate_claim_lease(claim_lease)
        # One attribute per create field, named as declared on ApiKey (and templated: template_fields).
        settings = {
            "name": name,
            "limit": limit,
            "limit_reset": limit_reset,
            "include_byok_in_limit": include_byok_in_limit,
            "expires_at": expires_at,
            "workspace_id": workspace_id,
            "creator_user_id": creator_user_id,
        }
        for field in _CREATE_FIELDS:
            setattr(self, field, settings[field])
        self.if_exists = if_exists
        self.keep_old_key = keep_old_key
        self.deliver_to_variable = deliver_to_variable
        self.deliver_to_callable = deliver_to_callable
        self.push_plaintext_to_xcom = push_plaintext_to_xcom
        self.guardrail_id = guardrail_id
        self._validate_static()

    # -- validation ------------------------------------------------------------------------------------------

    def _validate_static(self) -> None:
        """Check what is known when the DAG file is parsed; templates are checked once rendered."""
        _validation.validate_one_of(self.if_exists, _validation.IF_EXISTS, field="if_exists")
        if _validation.validate_bool(self.keep_old_key, field="keep_old_key") and self.if_exists != "replace":
            _validation.fail(
                "keep_old_key",
                f"keeps the old key a replace takes the name from: it needs if_exists='replace' (got "
                f"if_exists={self.if_exists!r})",
            )
        _validation.validate_bool(self.push_plaintext_to_xcom, field="push_plaintext_to_xcom")
        if self.deliver_to_callable is not None and not callable(self.deliver_to_callable):
            raise OpenRouterValidationError("deliver_to_callable", "must be a function or None")
        if (
            self.deliver_to_variable is None
            and self.deliver_to_callable is None
            and not self.push_plaintext_to_xcom
        ):
            raise OpenRouterValidationError(
                "deliver_to_variable, deliver_to_callable, push_plaintext_to_xcom",
                "none is set, so the new key's plaintext, which OpenRouter shows only once, would be lost; "
                "set at least one",
            )
        if _validation.is_literal(self.deliver_to_variable):
            _validation.validate_variable_name(self.deliver_to_variable)
        if _validation.is_literal(self.guardrail_id):
            self._guardrail()
        literal = {field: getattr(self, field) for field in _CREATE_FIELDS}
        literal = {field: value for field, value in literal.items() if _validation.is_literal(value)}
        self._create_args(literal, now=_DAWN_OF_TIME, partial=True)
        if "name" in literal:
            _validation.validate_provisioned_name(literal["name"])

    @staticmethod
    def _create_args(
        values: dict[str, Any], *, now: dt.datetime | None = None, partial: bool = False
    ) -> dict[str, Any]:
        """Validate (and normalise) the create fields in ``values``: the body of the request, by field."""
        given = {field: _validation.rendered_none(value) for field, value in values.items()}
        return create_key_body(given, text=True, now=now, partial=partial)

    # -- execution -------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_openrouter._provisioning import Provisioner

        args = self._create_args({field: getattr(self, field) for field in _CREATE_FIELDS})
        _validation.validate_provisioned_name(args["name"])
        variable = _validation.validate_variable_name(self.deliver_to_variable)
        guardrail = self._guardrail()
        provisioner = self._provisioner = Provisioner(self.hook, lease=self.claim_lease, logger=self.log)

        def create(provisional_name: str) -> CreatedApiKey:
            created = self._create_once({**args, "name": provisional_name})
            self._remember_key(created.hash)
            if guardrail is not None:
                from airflow_provider_openrouter._create_steps import assign_new_key

                assign_new_key(self.hook, guardrail, created)
            return created

        def deliver(created: CreatedApiKey) -> list[str]:
            self.log.info(
                "Created key %r (hash %s, label %s).", created.name, created.hash, created.api_key.label
            )
            return self._deliver(created, context, variable)

        retire = None
        if self.keep_old_key:
            from airflow_provider_openrouter._key_writes import retirer

            retire = retirer(self.hook, args["name"], self.log, clock=provisioner.clock)
        try:
            outcome = provisioner.provision(
                args["name"],
                self.if_exists,
                create,
                deliver,
                workspace_id=args.get("workspace_id"),
                retire=retire,
            )
        except ApiKeyExistsError as exc:
            if exc.hashes:
                self._remember_key(exc.hashes[0])
            raise
        finally:
            self._provisioner = None
        self._remember_key(outcome.key.hash)
        if outcome.action == "reused":
            if guardrail is not None:
                from airflow_provider_openrouter._create_steps import assign_kept_key

                assign_kept_key(self.hook, guardrail, outcome.key, self.log)
            return self._reuse(outcome.key, args, collected=outcome.collected)
        assets.key_created(self, context, outcome)
        return self._result(
            outcome.key,
            action=outcome.action,
            issued=True,
            delivered=outcome.delivered_to,
            replaced=outcome.replaced,
            orphans=outcome.collected,
            retired=outcome.replaced if retire is not None else [],
        )

    def on_kill(self) -> None:
        """Stop provisioning at the next step; a key not yet delivered is deleted again."""
        provisioner = self._provisioner
        if provisioner is not None:
            provisioner.cancelled = True

    def _reuse(self, key: ApiKey, args: dict[str, Any], *, collected: list[str]) -> dict[str, Any]:
        from airflow_provider_openrouter._create_steps import log_reused

        self._remember_key(key.hash)
        log_reused(key, {field: args.get(field) for field in _SETTINGS}, self.log)
        return self._result(key, action="reused", issued=False, delivered=[], replaced=[], orphans=collected)

    def _guardrail(self) -> str | None:
        from airflow_provider_openrouter._guardrail_validation import validate_guardrail_id

        value = _validation.rendered_none(self.guardrail_id)
        return None if value is None else validate_guardrail_id(value)

    def _create_once(self, args: dict[str, Any]) -> CreatedApiKey:
        from airflow.sdk.log import mask_secret

        created = self.hook.create_key(**args)
        # The hook masks it on arrival already; masking twice costs nothing and keeps this operator safe
        # with a hook subclass that forgot.
        mask_secret(created.plaintext)
        return created

    def _deliver(self, created: CreatedApiKey, context: Context, variable: str | None) -> list[str]:
        """Hand the plaintext to every destination; on failure delete the new key and say so."""
        delivered: list[str] = []
        current = ""
        try:
            if self.deliver_to_callable is not None:
                current = f"callable {_callable_name(self.deliver_to_callable)}"
                self.deliver_to_callable(created, context)
                delivered.append(current)
            if variable is not None:
                from airflow.sdk import Variable

                current = f"Variable {variable}"
                Variable.set(variable, created.plaintext, description=self._variable_description(created))
                delivered.append(current)
            if self.push_plaintext_to_xcom:
                current = f"XCom {PLAINTEXT_XCOM_KEY}"
                self.log.warning(
                    "Pushing the plaintext of key %r to XCom %r, as push_plaintext_to_xcom asks: XCom is "
                    "stored unencrypted in the metadata database and readable in the UI.",
                    created.name,
                    PLAINTEXT_XCOM_KEY,
                )
                context["ti"].xcom_push(key=PLAINTEXT_XCOM_KEY, value=created.plaintext)
                delivered.append(current)
        except Exception as exc:
            from airflow_provider_openrouter._create_steps import delivery_failed

            replacing = self.if_exists == "replace"
            raise delivery_failed(self.hook, created, current, exc, delivered, replacing=replacing) from exc
        self.log.info("Delivered the plaintext of key %r to %s.", created.name, ", ".join(delivered))
        return delivered

    def _variable_description(self, created: CreatedApiKey) -> str:
        return (
            f"OpenRouter API key {created.name!r} (hash {created.hash}), written by "
            f"{self.dag_id}.{self.task_id}."
        )

    @staticmethod
    def _result(
        key: ApiKey,
        *,
        action: str,
        issued: bool,
        delivered: list[str],
        replaced: list[str],
        orphans: list[str],
        retired: list[str] | None = None,
    ) -> dict[str, Any]:
        return {
            **key.to_dict(),
            "action": action,
            "plaintext_issued": issued,
            "plaintext_delivered_to": delivered,
            "replaced_key_hashes": replaced,
            "retired_key_hashes": retired or [],
            "deleted_orphan_key_hashes": orphans,
        }


class UpdateApiKeyOperator(_KeyOperator):
    """Change an OpenRouter API key's name, limit, limit reset, BYOK accounting, workspace, or disable it.

    The key is named by ``key_hash`` or by its exact ``key_name`` (exactly one). Only the fields given
    are sent; ``limit=None`` and ``limit_reset=None`` clear those settings (``""`` is refused everywhere), and
    ``disabled`` disables or re-enables the key. The operator reads the key first and writes nothing when it
    already matches (``"changed": False``), so it suits scheduled runs and mapping over a tenants table
    (``.partial(...).expand_kwargs(rows)``). See :ref:`howto/operator:UpdateApiKeyOperator`.

    The return value is the key's metadata after the update plus ``changed``, ``changed_fields`` and
    ``previous`` (the changed fields' old values). Comparing first makes a retry converge: after an answer
    lost once OpenRouter had made the change, the next try finds nothing left to change (a key renamed by
    ``key_name`` is then found under its new name). See :doc:`/guarantees`.

    :param key_hash: Hash of the key to change: 64 lower-case hex characters. (templated)
    :param key_name: Exact name of the key to change, looked up in the connection's default workspace; more
        than one key of that name is an error. (templated)
    :param name: New name, by the rule of :class:`CreateApiKeyOperator`'s ``name``. (templated)
    :param disabled: ``True`` to disable the key, ``False`` to enable it. (templated)
    :param limit: New spending limit in USD, 0 to 1,000,000,000; ``None`` removes the limit. (templated)
    :param limit_reset: ``"daily"``, ``"weekly"``, ``"monthly"``; ``None`` stops resets. (templated)
    :param include_byok_in_limit: ``True`` or ``False``: whether bring-your-own-key spend counts toward the
        limit. (templated)
    :param workspace_id: Workspace (UUID, any spelling; sent canonical) to move the key to. (templated)
    :param missing_ok: ``True`` or ``False``: succeed when no such key exists, instead of failing, where a
        missing key is as good as the change (disabling a key that a later step of the same process deletes).
        The result then has ``"found": False`` and ``"changed": False``, and the ``hash`` or ``name`` given.
    :param openrouter_conn_id: The OpenRouter connection (its password is the management key).
    :param asset_alias: The asset alias of its asset events; ``None``: none (:ref:`howto/fleet:assets`).
    """

    template_fields: Sequence[str] = ("key_hash", "key_name", *_UPDATE_FIELDS)
    ui_color = "#fdf3dc"

    def __init__(
        self,
        *,
        key_hash: str | None = None,
        key_name: str | None = None,
        name: str | Unset = UNSET,
        disabled: bool | str | Unset = UNSET,
        limit: float | str | Unset | None = UNSET,
        limit_reset: str | Unset | None = UNSET,
        include_byok_in_limit: bool | str | Unset = UNSET,
        workspace_id: str | Unset = UNSET,
        missing_ok: bool = False,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(openrouter_conn_id=openrouter_conn_id, **kwargs)
        self.missing_ok = _validation.validate_bool(missing_ok, field="missing_ok")
        arguments = {
            "name": name,
            "disabled": disabled,
            "limit": limit,
            "limit_reset": limit_reset,
            "include_byok_in_limit": include_byok_in_limit,
            "workspace_id": workspace_id,
        }
        given = {field: arguments[field] for field in _UPDATE_FIELDS}
        # The fields given are recorded by name and unset ones stored as None, so that the operator serializes
        # with plain values (DAG serialization knows nothing of the UNSET sentinel).
        self.update_fields: tuple[str, ...] = tuple(
            field for field, value in given.items() if value is not UNSET
        )
        self.key_hash = key_hash
        self.key_name = key_name
        for field, value in given.items():
            setattr(self, field, None if value is UNSET else value)
        _validation.validate_target(key_hash, key_name, rendered=False)
        if not self.update_fields:
            raise OpenRouterValidationError(
                ", ".join(_UPDATE_FIELDS), "nothing to update: give at least one of these fields"
            )
        self._changes(
            {
                field: getattr(self, field)
                for field in self.update_fields
                if _validation.is_literal(getattr(self, field))
            }
        )

    @staticmethod
    def _changes(values: dict[str, Any]) -> dict[str, Any]:
        """Validate (and normalise) the given update fields; ``None`` (or a template's ``"None"``) clears
        ``limit`` and ``limit_reset``, and ``""`` is refused everywhere."""
        return update_key_body(
            {field: _validation.rendered_none(value) for field, value in values.items()}, text=True
        )

    def execute(self, context: Context) -> dict[str, Any]:
        key_hash, key_name = _validation.validate_target(self.key_hash, self.key_name, rendered=True)
        wanted = self._changes({field: getattr(self, field) for field in self.update_fields})
        key = self._find_target(key_hash, key_name)
        if key is None and key_name is not None and "name" in wanted and wanted["name"] != key_name:
            # An earlier try may have renamed it, its answer lost: the key under the new name, if it has
            # everything asked for, is the outcome.
            renamed = self.hook.find_key_by_name(wanted["name"], workspace_id=wanted.get("workspace_id"))
            if renamed is not None and all(same_setting(getattr(renamed, f), v) for f, v in wanted.items()):
                key = renamed
        if key is None:
            if not self.missing_ok:
                raise ApiKeyNotFoundError(key_hash=key_hash, key_name=key_name)
            what = f"hash {key_hash}" if key_hash is not None else f"name {key_name!r}"
            self.log.info("No key with %s exists: nothing to update (missing_ok=True).", what)
            return {
                "found": False,
                "changed": False,
                "changed_fields": [],
                "previous": {},
                "hash": key_hash,
                "name": key_name,
            }
        self._remember_key(key.hash)
        changes = {
            field: value for field, value in wanted.items() if not same_setting(getattr(key, field), value)
        }
        if not changes:
            self.log.info(
                "Key %r (hash %s) already has %s: nothing to change, no request sent.",
                key.name,
                key.hash,
                ", ".join(f"{field}={value!r}" for field, value in wanted.items()),
            )
            return {**key.to_dict(), "found": True, "changed": False, "changed_fields": [], "previous": {}}
        previous = {field: getattr(key, field) for field in changes}
        updated = self.hook.update_key(key.hash, **changes)
        assets.key_updated(self, context, updated, changes, previous)
        self.log.info(
            "Updated key %r (hash %s): %s.",
            updated.name,
            updated.hash,
            ", ".join(f"{field} {previous[field]!r} -> {value!r}" for field, value in changes.items()),
        )
        return {
            **updated.to_dict(),
            "found": True,
            "changed": True,
            "changed_fields": list(changes),
            "previous": previous,
        }


class DeleteApiKeyOperator(_KeyOperator):
    """Delete an OpenRouter API key, named by ``key_hash`` or by its exact ``key_name`` (exactly one).

    Deleting is final: the key stops working at once and cannot be restored (disabling it with
    :class:`UpdateApiKeyOperator` keeps the way back open). A lost answer after OpenRouter deleted the key is
    no failure: the retry's "not found" is this task's own doing (:doc:`/guarantees`). See
    :ref:`howto/operator:DeleteApiKeyOperator`.

    The return value is the deleted key's metadata as it was just before deletion, plus ``"deleted": True``;
    with ``missing_ok`` and no such key it is ``{"deleted": False, "hash": ..., "name": ...}`` holding
    whichever of the two the key was named by.

    :param key_hash: Hash of the key to delete: 64 lower-case hex characters. (templated)
    :param key_name: Exact name of the key to delete, looked up in the connection's default workspace; more
        than one key of that name is an error. (templated)
    :param missing_ok: ``True`` or ``False``: succeed when no such key exists, instead of failing. On a retry
        (``try_number`` > 1) a missing key succeeds either way: the earlier try may have deleted it and died
        before saying so.
    :param openrouter_conn_id: The OpenRouter connection (its password is the management key).
    :param asset_alias: The asset alias of its asset events; ``None``: none (:ref:`howto/fleet:assets`).
    """

    template_fields: Sequence[str] = ("key_hash", "key_name")
    ui_color = "#f9e0e0"

    def __init__(
        self,
        *,
        key_hash: str | None = None,
        key_name: str | None = None,
        missing_ok: bool = False,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(openrouter_conn_id=openrouter_conn_id, **kwargs)
        self.key_hash = key_hash
        self.key_name = key_name
        self.missing_ok = missing_ok
        _validation.validate_target(key_hash, key_name, rendered=False)
        _validation.validate_bool(missing_ok, field="missing_ok")

    def execute(self, context: Context) -> dict[str, Any]:
        key_hash, key_name = _validation.validate_target(self.key_hash, self.key_name, rendered=True)
        key = self._find_target(key_hash, key_name)
        if key is not None:
            self._remember_key(key.hash)
            # Deleting is "make sure it is gone": found a moment ago and gone now is deleted, by this call
            # (whose answer was lost) or by someone else.
            self.hook.delete_key(key.hash, missing_ok=True)
            self.log.info("Deleted key %r (hash %s).", key.name, key.hash)
            assets.key_deleted(self, context, key)
            return {**key.to_dict(), "deleted": True}
        what = f"hash {key_hash}" if key_hash is not None else f"name {key_name!r}"
        try_number = getattr(context.get("ti"), "try_number", 1) or 1
        if not self.missing_ok and try_number > 1:
            # An earlier try of this task may have deleted it and died before it could say so.
            self.log.info("No key with %s exists: an earlier try may have deleted it.", what)
            return {"deleted": False, "hash": key_hash, "name": key_name}
        if not self.missing_ok:
            raise ApiKeyNotFoundError(key_hash=key_hash, key_name=key_name)
        self.log.info("No key with %s exists: nothing to delete (missing_ok=True).", what)
        return {"deleted": False, "hash": key_hash, "name": key_name}
