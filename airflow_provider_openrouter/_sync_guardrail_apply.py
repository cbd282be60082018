"""The tenant sync's guardrail changes made: the apply's side of :mod:`._sync_guardrails`.

The order is what makes a green run leave every tenant key on its row's guardrail: guardrails are created and
updated first (an assignment needs the id), deletes and unassigns go with the key disables and deletes, the
kept keys are assigned next, and each chunk of new keys is assigned right after the chunk is created, before
the next one starts. Keys are sent in bulk, one request per guardrail per hundred keys; a key that fails to be
assigned fails the run, and a rerun assigns it (assigning is safe to repeat).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._sync_guardrails import GUARDRAIL_ACTIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_openrouter._sync_guardrails import DesiredGuardrail, GuardrailAction
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

#: Keys per assignment request: the most OpenRouter takes in one.
BULK: Final = 100


class GuardrailApply:
    """One apply's guardrail work; ``fail(message)`` records a change that failed (the run then fails)."""

    def __init__(
        self,
        hook: OpenRouterHook,
        actions: Iterable[GuardrailAction],
        desired: Mapping[str, DesiredGuardrail],
        fail: Callable[[str], None],
    ) -> None:
        self.hook = hook
        self.actions = list(actions)
        self.desired = desired
        self.fail = fail
        #: Each declared guardrail's id, as planned or once created.
        self.ids: dict[str, str] = {}
        self.done: dict[str, int] = dict.fromkeys(GUARDRAIL_ACTIONS, 0)
        self._lock = threading.Lock()
        # New keys by guardrail, waiting to fill an assignment request (new_key).
        self._new: dict[str, list[str]] = {}
        for action in self.actions:
            if action["guardrail_id"] is not None and action["guardrail"] in desired:
                self.ids[action["guardrail"]] = action["guardrail_id"]

    def _of(self, *kinds: str) -> list[GuardrailAction]:
        return [action for action in self.actions if action["action"] in kinds]

    def _count(self, action: str, n: int = 1) -> None:
        with self._lock:
            self.done[action] += n

    def _run(self, what: str, action: str, n: int, call: Callable[[], Any]) -> bool:
        try:
            call()
        except Exception as exc:
            self.fail(f"{action} {what}: {type(exc).__name__}: {exc}")
            return False
        self._count(action, n)
        return True

    def prepare(self, pool: ThreadPoolExecutor) -> None:
        """Create the missing guardrails and update the drifted ones."""

        def one(action: GuardrailAction) -> None:
            name, want = action["guardrail"], self.desired[action["guardrail"]]
            if action["action"] == "create":

                def create() -> None:
                    made = self.hook.create_guardrail(
                        name, workspace_id=want.workspace_id, **want.create_settings
                    )
                    with self._lock:
                        self.ids[name] = made.id

                self._run(f"guardrail {name}", "create", 1, create)
            else:
                changes = {field: new for field, (_, new) in action["changes"].items()}
                gid = action["guardrail_id"]
                assert gid is not None  # an update is planned for a guardrail found
                self._run(
                    f"guardrail {name}", "update", 1, lambda: self.hook.update_guardrail(gid, **changes)
                )

        list(pool.map(one, self._of("create", "update")))

    def destructive(self) -> list[Callable[[], None]]:
        """The deletes and unassigns, as calls for the pool that runs the key disables and deletes."""
        calls: list[Callable[[], None]] = []
        for action in self._of("delete"):
            gid = action["guardrail_id"]
            assert gid is not None
            calls.append(
                lambda gid=gid, name=action["guardrail"]: self._delete(gid, name)  # type: ignore[misc]
            )
        for action in self._of("unassign"):
            gid = action["guardrail_id"]
            assert gid is not None
            hashes = [h for h in action["key_hashes"] if h is not None]
            for start in range(0, len(hashes), BULK):
                part = hashes[start : start + BULK]
                calls.append(
                    lambda gid=gid, part=part, name=action["guardrail"]: self._bulk(  # type: ignore[misc]
                        "unassign", name, gid, part
                    )
                )
        return calls

    def _delete(self, gid: str, name: str) -> None:
        self._run(f"guardrail {name}", "delete", 1, lambda: self.hook.delete_guardrail(gid, missing_ok=True))

    def _bulk(self, action: str, name: str, gid: str | None, hashes: list[str]) -> None:
        if gid is None:
            self.fail(f"{action} {len(hashes)} key(s) to guardrail {name}: the guardrail was not created")
            return
        send = (
            self.hook.assign_keys_to_guardrail
            if action == "assign"
            else self.hook.unassign_keys_from_guardrail
        )
        self._run(f"{len(hashes)} key(s), guardrail {name}", action, len(hashes), lambda: send(gid, hashes))

    def assign_kept(self, pool: ThreadPoolExecutor) -> None:
        """Assign the keys that stay (the new ones are assigned chunk by chunk, :meth:`assign_new`)."""
        parts: list[tuple[str, list[str]]] = []
        for action in self._of("assign"):
            hashes = [h for h in action["key_hashes"] if h is not None]
            parts.extend(
                (action["guardrail"], hashes[start : start + BULK]) for start in range(0, len(hashes), BULK)
            )
        list(pool.map(lambda part: self._bulk("assign", part[0], self.ids.get(part[0]), part[1]), parts))

    def new_key(self, guardrail: str, key_hash: str) -> None:
        """Assign a new key to its tenant's guardrail: with the next ones, once there are ``BULK`` of them
        (sent from the calling thread), or at :meth:`assign_new`."""
        with self._lock:
            waiting = self._new.setdefault(guardrail, [])
            waiting.append(key_hash)
            full = self._new.pop(guardrail) if len(waiting) >= BULK else None
        if full is not None:
            self._bulk("assign", guardrail, self.ids.get(guardrail), full)

    def assign_new(self) -> None:
        """Assign the new keys :meth:`new_key` still holds: a request per guardrail."""
        with self._lock:
            waiting, self._new = self._new, {}
        for name, hashes in waiting.items():
            self._bulk("assign", name, self.ids.get(name), hashes)
