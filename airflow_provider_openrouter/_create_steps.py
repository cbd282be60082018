"""What ``CreateApiKeyOperator`` adds around the provisioning sequence's create and deliver steps.

Each step leaves no key behind that nobody has: a new key that cannot take its guardrail, or whose plaintext
cannot be delivered, is deleted again. The guardrail is assigned while the key is still a claim (right after
its create, before delivery), so a key is never delivered without it, and a claim withdrawn later takes its
assignment with it. A failed assignment is raised as a definite error, never as a lost answer: the sequence
would otherwise look for the claim, find it, and deliver it without its guardrail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_openrouter.exceptions import GuardrailAssignmentError, PlaintextDeliveryError
from airflow_provider_openrouter.models import same_setting

if TYPE_CHECKING:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey


class _Log(Protocol):
    def info(self, event: Any, /, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: Any, /, *args: Any, **kw: Any) -> Any: ...


def _undo(hook: OpenRouterHook, key_hash: str) -> str | None:
    """Delete a new key again; the reason it could not be, or ``None``."""
    try:
        hook.delete_key(key_hash, missing_ok=True)
    except Exception as cleanup:
        return f"{type(cleanup).__name__}: {cleanup}"
    return None


def assign_new_key(hook: OpenRouterHook, guardrail_id: str, created: CreatedApiKey) -> None:
    """Assign a new key (still a claim) to its guardrail; if that fails, delete the key and raise."""
    try:
        hook.assign_keys_to_guardrail(guardrail_id, [created.hash])
    except Exception as exc:
        message = f"Assigning the new key (hash {created.hash}) to guardrail {guardrail_id} failed ({exc}). "
        problem = _undo(hook, created.hash)
        if problem is None:
            message += "The new key was deleted again before its plaintext was delivered."
        else:
            message += (
                f"Deleting it again failed too ({problem}): it is undelivered, and a run after its lease "
                "deletes it (or delete it yourself)."
            )
        raise GuardrailAssignmentError(message, key_hash=created.hash, key_deleted=problem is None) from exc


def assign_kept_key(hook: OpenRouterHook, guardrail_id: str, key: ApiKey, log: _Log) -> None:
    """Assign a reused key to the guardrail (safe to repeat: a key already on it stays on it)."""
    try:
        changed = hook.assign_keys_to_guardrail(guardrail_id, [key.hash])
    except Exception as exc:
        raise GuardrailAssignmentError(
            f"Assigning the reused key {key.name!r} (hash {key.hash}) to guardrail {guardrail_id} failed "
            f"({exc}). The key is unchanged; a retry assigns it.",
            key_hash=key.hash,
            key_deleted=False,
        ) from exc
    if changed:
        log.info("Assigned the reused key %r (hash %s) to guardrail %s.", key.name, key.hash, guardrail_id)


def log_reused(key: ApiKey, asked: dict[str, Any], log: _Log) -> None:
    """Say that the name's key was kept, and how it differs from the settings ``asked`` for (``None``: not
    asked)."""
    log.info(
        "A key named %r already exists (hash %s) and if_exists='reuse': keeping it. No key was created, "
        "so no new plaintext exists and nothing was delivered.",
        key.name,
        key.hash,
    )
    if key.disabled:
        log.warning("The reused key %r (hash %s) is disabled.", key.name, key.hash)
    differs = [
        f"{field} is {getattr(key, field)!r}, asked for {value!r}"
        for field, value in asked.items()
        if value is not None and not same_setting(getattr(key, field), value)
    ]
    if differs:
        log.warning(
            "The reused key differs from this task's settings (%s); UpdateApiKeyOperator changes them.",
            "; ".join(differs),
        )


def delivery_failed(
    hook: OpenRouterHook,
    created: CreatedApiKey,
    destination: str,
    exc: Exception,
    delivered: list[str],
    *,
    replacing: bool,
) -> PlaintextDeliveryError:
    """The error for a delivery that failed, after deleting the new key again."""
    # The destination's error may quote what it was given: keep the plaintext out of our message.
    reason = f"{type(exc).__name__}: {exc}".replace(created.plaintext, "***")
    message = f"Delivering the plaintext of new key {created.name!r} to {destination} failed ({reason}). "
    problem = _undo(hook, created.hash)
    if problem is not None:
        message += (
            f"Deleting the new key (hash {created.hash}) again failed too ({problem}): it exists and nobody "
            "has its plaintext. Its provisional name marks it undelivered: a run after its lease deletes it "
            "(or delete it yourself)."
        )
    else:
        message += "The new key was deleted again; no new key was left behind" + (
            " and the old key is untouched." if replacing else "."
        )
    deleted = problem is None
    if delivered:
        message += f" {', '.join(delivered)} had already received the plaintext of the new key" + (
            ", which no longer works." if deleted else "."
        )
    return PlaintextDeliveryError(message, key_hash=created.hash, key_deleted=deleted, delivered_to=delivered)
