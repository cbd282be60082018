"""Asset events for key changes: one asset per key name, ``openrouter://<connection id>/keys/<key name>``.

The key operators and the tenant sync declare an asset alias as an outlet and, once a change is made, add an
event through it for the key's asset, which Airflow creates on the first event. A DAG scheduled on the alias
runs after any change; one scheduled on :func:`key_asset` runs after a change to that key. The events' extra
names the key (hash, name, workspace) and the change; a plaintext never goes in it.

The URI names the connection and the key's name, not its workspace: a task that names no workspace uses the
connection's default, a key found by hash reports the workspace's id and a sync's delete knows only the
workspace it walked, so a workspace in the URI would give one key different assets depending on which task
changed it. The connection is always known and says which account the name belongs to.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Asset, Context

    from airflow_provider_openrouter.models import ApiKey

__all__ = ["DEFAULT_ASSET_ALIAS", "KEY_URI_SCHEME", "key_asset", "key_uri", "normalize_key_uri"]

#: The URI scheme of a key's asset, registered by the provider with :func:`normalize_key_uri`.
KEY_URI_SCHEME: Final = "openrouter"
#: The asset alias the key operators and the sync add their events through unless given another.
DEFAULT_ASSET_ALIAS: Final = "openrouter_keys"

_KEYS: Final = "/keys/"


def key_uri(name: str, openrouter_conn_id: str = DEFAULT_CONN_ID) -> str:
    """The URI of the asset of the key named ``name`` on the connection ``openrouter_conn_id``."""
    if not name:
        raise ValueError("A key's asset needs the key's name.")
    return f"{KEY_URI_SCHEME}://{openrouter_conn_id}{_KEYS}{urllib.parse.quote(name, safe='')}"


def key_asset(
    name: str, openrouter_conn_id: str = DEFAULT_CONN_ID, *, extra: dict[str, Any] | None = None
) -> Asset:
    """The asset of the key named ``name``: schedule a DAG on it to run after each change to that key.

    Also the provider's asset factory for the ``openrouter`` scheme.
    """
    from airflow.sdk import Asset

    return Asset(uri=key_uri(name, openrouter_conn_id), extra=extra)


def normalize_key_uri(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult:
    """Airflow's normaliser for ``openrouter://`` URIs: ``/keys/`` and one name, quoted one way.

    A name typed unquoted (``tenant a``, ``team/a``) and the quoted form :func:`key_uri` makes name one asset.
    """
    if not parts.netloc:
        raise ValueError(
            f"An {KEY_URI_SCHEME}:// asset URI names the connection: {KEY_URI_SCHEME}://<conn id>/..."
        )
    if not parts.path.startswith(_KEYS) or len(parts.path) == len(_KEYS):
        raise ValueError(
            f"An {KEY_URI_SCHEME}:// asset URI names one key: {KEY_URI_SCHEME}://<conn id>/keys/<name>"
        )
    name = urllib.parse.unquote(parts.path[len(_KEYS) :])
    return parts._replace(path=_KEYS + urllib.parse.quote(name, safe=""), query="", fragment="")


def alias_outlet(asset_alias: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for ``BaseOperator`` with the alias added to the task's outlets (none when ``None``)."""
    if asset_alias is None:
        return kwargs
    from airflow.sdk import AssetAlias

    given = kwargs.get("outlets")
    outlets = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
    return {**kwargs, "outlets": [*outlets, AssetAlias(asset_alias)]}


def action_of(changed: Mapping[str, Any]) -> str:
    """What an update did, by the fields it changed (``{field: new value}``)."""
    if "disabled" in changed:
        return "disabled" if changed["disabled"] else "enabled"
    return "updated"


class KeyEvents:
    """One task's events, collected from any thread and added to its outlet in one go by :meth:`emit`.

    Collected first because the task context's outlet accessors are not made for threads: the sync changes
    keys from a pool.
    """

    def __init__(self, asset_alias: str | None, openrouter_conn_id: str) -> None:
        self.asset_alias = asset_alias
        self.openrouter_conn_id = openrouter_conn_id
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def add(
        self,
        action: str,
        *,
        key_hash: str | None,
        key_name: str | None,
        workspace_id: str | None,
        **details: Any,
    ) -> None:
        """One change to one key; ``details`` are JSON values and never a plaintext."""
        if self.asset_alias is None or not key_name:
            return
        from airflow_provider_openrouter._claims import retired_of

        # A sync's rotated-out key: its events go to its tenant's asset, not one more asset per rotation.
        retired = retired_of(key_name)
        extra: dict[str, Any] = {
            "action": action,
            "key_hash": key_hash,
            "key_name": key_name,
            "workspace_id": workspace_id,
            "openrouter_conn_id": self.openrouter_conn_id,
            **({"retired": True} if retired else {}),
            **details,
        }
        with self._lock:
            self.events.append((retired[0] if retired else key_name, extra))

    def add_key(self, action: str, key: ApiKey, **details: Any) -> None:
        self.add(action, key_hash=key.hash, key_name=key.name, workspace_id=key.workspace_id, **details)

    def add_planned(self, item: Mapping[str, Any]) -> None:
        """A sync's update, disable or delete, made as planned (``item``: the plan's action)."""
        changed = {field: new for field, (_, new) in item["changes"].items()}
        action = {"update": action_of(changed), "disable": "disabled", "delete": "deleted"}[item["action"]]
        self.add(
            action,
            key_hash=item["key_hash"],
            key_name=item["tenant"] or item.get("key_name"),
            workspace_id=item["workspace_id"],
            **({"changed_fields": list(changed)} if item["action"] == "update" else {}),
        )

    def add_outcome(self, outcome: Any) -> None:
        """A new key, delivered (``outcome``: the provisioning's): ``created``, or ``rotated`` when it
        replaced the name's key."""
        self.add_key(
            "rotated" if outcome.action == "replaced" else "created",
            outcome.key,
            plaintext_delivered_to=list(outcome.delivered_to),
            replaced_key_hashes=list(outcome.replaced),
        )

    def emit(self, context: Context) -> int:
        """Add the collected events to the task's outlet; how many there were."""
        with self._lock:
            events, self.events = self.events, []
        # ``execute`` called outside a task (a test, a script) has no outlets to add to.
        accessors = context.get("outlet_events")
        if self.asset_alias is None or not events or accessors is None:
            return 0
        from airflow.sdk import AssetAlias

        outlet = accessors[AssetAlias(self.asset_alias)]
        for name, extra in events:
            outlet.add(key_asset(name, self.openrouter_conn_id), extra=extra)
        return len(events)


def key_created(task: Any, context: Context, outcome: Any) -> None:
    """The event of a key operator's new key (``outcome``: the provisioning's); none for a reused key."""
    events = KeyEvents(task.asset_alias, task.openrouter_conn_id)
    events.add_outcome(outcome)
    events.emit(context)


def key_updated(
    task: Any, context: Context, key: ApiKey, changed: Mapping[str, Any], previous: Mapping[str, Any]
) -> None:
    """The event of a key an update changed (``changed``: the fields sent; ``previous``: their old values).

    A rename also tells the asset of the name the key had.
    """
    events = KeyEvents(task.asset_alias, task.openrouter_conn_id)
    action = action_of(changed)
    events.add_key(action, key, changed_fields=list(changed))
    old_name = previous.get("name")
    if old_name is not None and old_name != key.name:
        events.add(
            action,
            key_hash=key.hash,
            key_name=old_name,
            workspace_id=key.workspace_id,
            changed_fields=list(changed),
            renamed_to=key.name,
        )
    events.emit(context)


def key_deleted(task: Any, context: Context, key: ApiKey) -> None:
    """The event of a key a key operator deleted."""
    events = KeyEvents(task.asset_alias, task.openrouter_conn_id)
    events.add_key("deleted", key)
    events.emit(context)
