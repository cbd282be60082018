"""The guardrail methods of :class:`~airflow_provider_openrouter.hooks.openrouter.OpenRouterHook`.

A mixin, so that the hook's module stays about keys: each method builds its request with
:mod:`airflow_provider_openrouter._guardrail_endpoints` (which checks every argument before any request) and
runs it through the hook's transport, with the same retries, rate limiting and error mapping as the key
methods. They are sync only: the keys page calls the hook from a worker thread, and no trigger watches a
guardrail.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_openrouter._sentinel import UNSET, Unset

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from typing_extensions import Unpack

    from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
    from airflow_provider_openrouter._endpoints import Call
    from airflow_provider_openrouter._guardrail_endpoints import Pages
    from airflow_provider_openrouter.guardrails import Guardrail, GuardrailSettings, KeyAssignment

T = TypeVar("T")

log = logging.getLogger("airflow_provider_openrouter.transport")


class GuardrailMethods:
    """Guardrails: list, get, create, update and delete them, and assign keys to them in bulk.

    Errors are the key methods': :class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError`
    before any request for a bad argument, :class:`~airflow_provider_openrouter.exceptions.NotFoundError`
    for a guardrail that does not exist, :class:`~airflow_provider_openrouter.exceptions.ConflictError` for
    an update OpenRouter refuses as conflicting, and so on by status.
    """

    if TYPE_CHECKING:
        _retry_jitter: Callable[[float], float] | None

        def _run(self, call: Call[T]) -> T: ...

        def _get_config(self) -> OpenRouterConnectionConfig: ...

    def _walk(self, pages: Pages) -> Iterator[Any]:
        while not pages.done:
            yield from pages.take(self._run(pages.next_call()))

    def list_guardrails(self, *, workspace_id: str | None = None) -> Iterator[Guardrail]:
        """Every guardrail of a workspace (the connection's default unless given), fetched 100 at a time as
        the caller iterates. Each is yielded once; arguments are checked now, requests start with the
        iteration."""
        from airflow_provider_openrouter._guardrail_endpoints import guardrail_pages
        from airflow_provider_openrouter._validation import validate_workspace_id

        workspace = validate_workspace_id(workspace_id)

        def walk() -> Iterator[Guardrail]:
            default = self._get_config().workspace_id
            yield from self._walk(guardrail_pages(workspace_id=workspace, default_workspace=default))

        return walk()

    def get_guardrail(self, guardrail_id: str) -> Guardrail:
        """One guardrail by its id (``GET /guardrails/{id}``); :class:`NotFoundError` if there is none."""
        from airflow_provider_openrouter._guardrail_endpoints import get_guardrail_call

        return self._run(get_guardrail_call(guardrail_id))

    def list_guardrail_key_assignments(self, guardrail_id: str) -> Iterator[KeyAssignment]:
        """The keys assigned to one guardrail, 100 at a time as the caller iterates; :class:`NotFoundError`
        (on iterating) if the guardrail does not exist."""
        from airflow_provider_openrouter._guardrail_endpoints import key_assignment_pages

        return self._walk(key_assignment_pages(guardrail_id))

    def list_key_assignments(self) -> Iterator[KeyAssignment]:
        """Every key assignment of the account, whatever the guardrail or workspace, 100 at a time as the
        caller iterates. A key appears at most once: it holds at most one guardrail."""
        from airflow_provider_openrouter._guardrail_endpoints import key_assignment_pages

        return self._walk(key_assignment_pages())

    # ------------------------------------------------------------------------------------- writes ---

    def create_guardrail(
        self, name: str, *, workspace_id: str | None = None, **settings: Unpack[GuardrailSettings]
    ) -> Guardrail:
        """Create a guardrail (``POST /guardrails``) with the settings given (see
        :class:`~airflow_provider_openrouter.guardrails.GuardrailSettings`); ``None`` leaves one unset.

        ``name``: not blank, at most 200 characters. ``limit_usd`` needs ``reset_interval`` (``"daily"``,
        ``"weekly"`` or ``"monthly"``) and the other way round. Allowlists hold at least one item.
        ``workspace_id`` defaults to the connection's. Every argument is checked before the request.

        Not repeated once the request may have reached OpenRouter, which has no idempotency key: a lost
        answer (a timeout, a dropped connection, a 5xx from a gateway) raises, and the guardrail may or may
        not exist. Look for it by name (:meth:`list_guardrails`) before creating it again, or two
        guardrails of that name will exist.
        """
        from airflow_provider_openrouter._guardrail_endpoints import create_guardrail_call

        config = self._get_config()
        call = create_guardrail_call(
            name, settings, workspace_id=workspace_id, default_workspace=config.workspace_id
        )
        return self._run(call)

    def update_guardrail(
        self, guardrail_id: str, *, name: str | Unset = UNSET, **settings: Unpack[GuardrailSettings]
    ) -> Guardrail:
        """Change a guardrail (``PATCH /guardrails/{id}``), sending only the settings named here.

        ``None`` clears a setting (``limit_usd=None, reset_interval=None`` removes the budget); an omitted
        one is left alone. A collection (``allowed_models``, ``content_filters``, …) replaces the whole set:
        name every item wanted. A guardrail cannot move to another workspace.
        """
        from airflow_provider_openrouter._guardrail_endpoints import update_guardrail_call

        return self._run(update_guardrail_call(guardrail_id, settings, name=name))

    def delete_guardrail(self, guardrail_id: str, *, missing_ok: bool = False) -> bool:
        """Delete a guardrail and with it its assignments (``DELETE /guardrails/{id}``): ``True`` if
        deleted, ``False`` if it was already gone and ``missing_ok`` (else :class:`NotFoundError`). A retry
        that finds it gone after an attempt whose answer was lost counts as deleted."""
        from airflow_provider_openrouter._guardrail_endpoints import delete_guardrail_call

        return self._run(delete_guardrail_call(guardrail_id, missing_ok=missing_ok))

    def assign_keys_to_guardrail(self, guardrail_id: str, key_hashes: Iterable[str]) -> int:
        """Assign keys (by hash) to a guardrail, replacing the guardrail each held before: a key holds at
        most one. Sent 100 keys per request; returns the sum of OpenRouter's ``assigned_count``.

        Safe to repeat, and repeated after a 5xx or a lost answer: assigning a key to the guardrail it holds
        changes nothing. Requests already answered stay done if a later one fails; calling again with the
        same keys finishes the work.
        """
        from airflow_provider_openrouter._guardrail_endpoints import assign_keys_calls

        return sum(self._run(call) for call in assign_keys_calls(guardrail_id, key_hashes))

    def unassign_keys_from_guardrail(self, guardrail_id: str, key_hashes: Iterable[str]) -> int:
        """Remove keys (by hash) from a guardrail, 100 per request; returns the sum of OpenRouter's
        ``unassigned_count``. Safe to repeat, as :meth:`assign_keys_to_guardrail` is."""
        from airflow_provider_openrouter._guardrail_endpoints import unassign_keys_calls

        return sum(self._run(call) for call in unassign_keys_calls(guardrail_id, key_hashes))
