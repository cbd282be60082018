"""The writes the provisioning sequence makes on keys it knows by hash, each safe to repeat: a rename is
checked by reading the key when its answer is lost, and a delete means "ensure absent"."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter._claims import replaced_name, retired_name
from airflow_provider_openrouter.exceptions import NO_CLEAR_ANSWER, OpenRouterError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey


class KeyWrites:
    """Renames and deletes by hash through ``hook`` (anything with ``get_key``, ``update_key`` and
    ``delete_key``), logging to ``log``."""

    def __init__(self, hook: OpenRouterHook, log: Any) -> None:
        self.hook = hook
        self.log = log

    def delete(self, key_hash: str) -> bool:
        return self.hook.delete_key(key_hash, missing_ok=True)

    def take_out(
        self, name: str, olds: list[ApiKey], *, retire: Callable[[ApiKey], None] | None, at: float
    ) -> list[ApiKey]:
        """Rename the old keys out of the name: through ``retire``, or to :func:`replaced_name`, which any
        later run of the name deletes. On a failure, give back the name to those already out."""
        out: list[ApiKey] = []
        try:
            for old in olds:
                if retire is not None:
                    retire(old)
                else:
                    self.rename(old.hash, replaced_name(name, at))
                out.append(old)
        except BaseException:
            self.put_back(name, out)
            raise
        return out

    def retire(self, name: str, old: ApiKey, *, at: float) -> ApiKey:
        """Rename ``old`` out of ``name`` to :func:`retired_name`: it keeps working until a later run
        (the sync's, or ``RetireApiKeysOperator``) retires it by :mod:`._sync_retirement`'s rule."""
        key = self.rename(old.hash, retired_name(name, at))
        self.log.info(
            "Rotated key %r (hash %s) out as %r: it keeps working until it is retired.",
            old.name,
            old.hash,
            key.name,
        )
        return key

    def put_back(self, name: str, olds: list[ApiKey]) -> None:
        for old in olds:
            self.rename_quietly(old.hash, name)

    def delete_replaced(self, name: str, key: ApiKey, olds: list[ApiKey], delivered: list[str]) -> None:
        for old in olds:
            try:
                self.delete(old.hash)
            except OpenRouterError as exc:
                raise OpenRouterError(
                    f"The new key {name!r} (hash {key.hash}) was created, delivered to "
                    f"{', '.join(delivered)} and carries the name, but deleting the old key (hash "
                    f"{old.hash}) failed: {exc}. The old key still works, its name marked '[replaced …]';"
                    " the next run of this name deletes it, whatever its if_exists."
                ) from exc
            self.log.info("Deleted the old key %r (hash %s).", old.name, old.hash)

    def rename(self, key_hash: str, name: str) -> ApiKey:
        try:
            return self.hook.update_key(key_hash, name=name)
        except NO_CLEAR_ANSWER:
            # The rename may have been made: the key says.
            key = self.hook.get_key(key_hash)
            if key.name != name:
                raise
            return key

    def rename_quietly(self, key_hash: str, name: str, *, only_from: str | None = None) -> None:
        """:meth:`rename`, logging a failure rather than raising it. With ``only_from``, only a key that still
        carries that name is renamed: a delivered claim whose earlier rename landed unseen may since have been
        taken out of the name by a replace, and renaming it back would give the name two keys."""
        try:
            if only_from is None or self.hook.get_key(key_hash).name == only_from:
                self.rename(key_hash, name)
        except BaseException as exc:  # best effort: the error that brought us here matters more
            self.log.warning(
                "Could not rename the delivered key (hash %s) to %r: %s. A run after its lease replaces it.",
                key_hash,
                name,
                exc,
            )


def retirer(
    hook: OpenRouterHook, name: str, log: Any, *, clock: Callable[[], float] | None = None
) -> Callable[[ApiKey], None]:
    """The ``retire`` of :meth:`~._provisioning.Provisioner.provision` for a rotation with overlap: each old
    key of ``name`` is renamed ``<name> [retired <epoch>]`` (at ``clock()``) instead of being deleted. One
    place for the tenant sync's rotation and ``CreateApiKeyOperator(keep_old_key=True)``, so that the name
    they leave is the one ``retired_of`` and the retirement rule read."""
    writes = KeyWrites(hook, log)

    def retire(old: ApiKey) -> None:
        # time.time looked up per call, not bound at import: a test may hold the wall clock.
        writes.retire(name, old, at=(clock or time.time)())

    return retire
