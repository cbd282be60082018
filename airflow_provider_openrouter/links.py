"""Extra link from a key operator's task instance to the key in OpenRouter's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where OpenRouter lists an account's API keys.
OPENROUTER_KEYS_URL: Final = "https://openrouter.ai/settings/keys"

#: Attribute the key operators set on themselves once they know which key they acted on.
KEY_HASH_ATTR: Final = "openrouter_key_hash"


def key_url(key_hash: str) -> str:
    """Address of a key in OpenRouter's settings.

    OpenRouter publishes no per-key address: the link opens the account's key list, and carries the key's hash
    in the fragment so that the link still names the key it belongs to.
    """
    return f"{OPENROUTER_KEYS_URL}#{key_hash}"


class OpenRouterKeyLink(BaseOperatorLink):
    """Button "OpenRouter key" on the task instance: opens the key the task created, changed or deleted.

    Airflow 3 computes the link once, on the worker, when the task finishes, and stores it as the XCom
    ``_link_OpenRouterKeyLink`` of the task instance; the UI reads it from there. The hash comes from the
    operator (which records it as soon as it knows the key, so that a task that fails after creating a
    key still links to it) or else from the ``hash`` of the task's return value. A task that touched no key
    gets no link.
    """

    name = "OpenRouter key"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        key_hash = getattr(operator, KEY_HASH_ATTR, None)
        if not key_hash:
            key_hash = _hash_from_return_value(ti_key)
        return key_url(key_hash) if key_hash else ""


def _hash_from_return_value(ti_key: TaskInstanceKey) -> str | None:
    # The configured XCom backend, as the task runner uses it.
    from airflow.sdk.execution_time.xcom import XCom

    try:
        value: Any = XCom.get_value(ti_key=ti_key, key="return_value")
    except Exception:
        # A link is a convenience: never let reading it break the finishing task.
        return None
    if isinstance(value, dict) and isinstance(value.get("hash"), str):
        return str(value["hash"])
    return None
