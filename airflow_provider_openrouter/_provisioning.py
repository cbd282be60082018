"""Creating a key under a name so that it stays one key, delivered, on a parallel and failing Airflow.

The API has no idempotency key, no lock and no conditional write, and it shows a plaintext once. So a key
is created under a *claim*: a provisional name that says which name it is for, which try made it, and until
when that try holds it (its lease)::

    tenant-acme [pending delivery 3f9a1c2b07 until 1767225600]

Only a claim that wins is delivered, and only a delivered claim is renamed to the real name. So a key under
the real name has always reached its destinations, and a key whose plaintext went nowhere is recognisable by
its name. A claim past its lease and a grace is *collectable*: its owner can no longer deliver it (delivery
must end within the lease) nor rename it (the rename starts before the lease ends and one call ends within
the grace), so any run that reads it again by hash and finds it still under its provisional name deletes it.

Winning. Right after its key is created, a try lists the name again, once the list shows its claim (a list
that trails the writes may not show a rival's either). It wins when it sees no other claim, not yet
collectable, created before or less than :data:`AMBIGUITY` seconds after its own (clocks differ, stamps may
have whole seconds), and no delivered key it did not already know. Of two claims, the one created later
sees the earlier (its list is read after its own create and shows it), so two tries cannot both win; when
both see each other, both withdraw and try again after a random wait. A try that meets another's claim waits
for it, reading it by hash, until it is renamed, deleted or collectable, for at most its lease and grace
(:class:`ClaimHeldError`), and then applies ``if_exists`` to what the name holds.

The steps take an already-walked view of the keys (:func:`view_of`), so that a caller provisioning many names
can share one walk of the account among them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_provider_openrouter._claims import (
    AMBIGUITY,
    Claim,
    Horizon,
    NameView,
    claim_name,
    epoch_of,
    recent,
    view_of,
)
from airflow_provider_openrouter._key_writes import KeyWrites
from airflow_provider_openrouter.exceptions import (
    NO_CLEAR_ANSWER,
    ApiKeyExistsError,
    ClaimHeldError,
    KeyNameNotUniqueError,
    NotFoundError,
    OpenRouterError,
    OpenRouterTransportError,
    OpenRouterValidationError,
    PlaintextDeliveryError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

    from airflow_provider_openrouter._validation import IfExists
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

#: Default lease of a claim, and the grace after it before another run may delete it.
DEFAULT_LEASE: Final = 120.0
DEFAULT_GRACE: Final = 60.0
#: Rounds (create, check) one try makes before giving up on a name that others keep claiming at the same
#: moment. Waiting for another try's claim costs no round.
MAX_ROUNDS: Final = 8


log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """How a name was provisioned: ``created`` (delivered, renamed), or ``reused`` an existing key."""

    action: Literal["created", "replaced", "reused"]
    key: ApiKey
    delivered_to: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)


class Cancelled(BaseException):
    """The task was told to stop (``on_kill``) while provisioning; what it had claimed is withdrawn."""


class Provisioner:
    """The create-and-recover sequence for one try; safe against other tries doing the same at once.

    One function per transition of a name (see :doc:`/guarantees`): :meth:`provision` looks at the name
    (:meth:`_view`, then :meth:`tidy`, which collects claims past lease and grace through :meth:`_collect`),
    waits out another try's claim (:meth:`_await`), or claims it (:meth:`claim`), checks that claim
    (:meth:`_check`), then delivers and renames it or withdraws it (:meth:`settle`, :meth:`withdraw`).

    :param hook: the hook to call OpenRouter with (anything with its ``list_keys``, ``get_key``,
        ``update_key`` and ``delete_key``).
    :param lease: seconds a claim is held: delivery must be done within half of it.
    :param grace: seconds after a lease before another run may delete the claim. Default: half the lease,
        at most a minute, and never less than ``call_budget``. A grace shorter than ``call_budget`` is
        refused: the rename after a delivery may take that long, and a peer must not delete the claim
        while it is on its way.
    :param wait: longest time to wait for another try's claim to be settled before giving up with
        :class:`ClaimHeldError` (default: lease and grace, so that a claim made with the same lease is
        always outlasted).
    :param call_budget: the most one API call may take, all its attempts and waits included (default: what
        the hook's connection allows, when the hook says; ``None``: unknown).
    """

    def __init__(
        self,
        hook: OpenRouterHook,
        *,
        lease: float = DEFAULT_LEASE,
        grace: float | None = None,
        wait: float | None = None,
        call_budget: float | None = None,
        logger: logging.Logger | Any = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.hook = hook
        self.log = logger or log
        self.writes = KeyWrites(hook, self.log)
        self.lease = lease
        self.call_budget = call_budget if call_budget is not None else _call_budget_of(hook)
        budget = self.call_budget or 0.0
        if grace is None:
            grace = max(min(DEFAULT_GRACE, lease / 2), budget)
        elif grace < budget:
            raise OpenRouterValidationError(
                "grace",
                f"{grace:g} s is shorter than one API call may take with this connection ({budget:g} s: "
                "timeout × (max_retries + 1) + max_retry_wait × max_retries), so another run could delete "
                "a delivered key while its rename is on its way; lengthen the grace or shorten the "
                "connection's timeout, retries or retry wait",
            )
        self.grace = grace
        self.wait = lease + self.grace if wait is None else wait
        # Looked up now rather than bound when the module loads: a process may have its clock replaced
        # after import (a test's clock skew).
        self.clock = clock or time.time
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.token = secrets.token_hex(4)  # this try's; each claim adds a round digit
        self.cancelled = False
        self.collected: list[str] = []
        # How far each claim being settled got, for the clean-up after a failure (threads of a batch share
        # it): "delivered" (the old keys may still carry the name: withdraw it), "clear" (they do not: finish
        # its rename), "named" (nothing left to undo).
        self._stage: dict[str, Literal["delivered", "clear", "named"]] = {}

    # -- views ---------------------------------------------------------------------------------------------

    def walk(
        self,
        names: Iterable[str] | None,
        workspace_id: str | None,
        *,
        since: frozenset[str] | None = None,
        expect: Collection[str] = (),
        known: Mapping[str, ApiKey] | None = None,
        also: Iterable[str] = (),
    ) -> tuple[dict[str, NameView], frozenset[str]]:
        """The views of ``names`` (see :func:`view_of` for ``known`` and ``also``) and this walk's horizon:
        from every key, or with ``since`` (an earlier walk's horizon) only from those created after that walk
        began, ``expect`` (hashes) among them."""
        keys = self.hook.list_keys(include_disabled=True, include_expired=True, workspace_id=workspace_id)
        if since is not None:
            keys = recent(keys, since, expect)
        horizon = Horizon()
        views = view_of(horizon.watch(keys), names, known, also)
        return views, horizon.top

    def _view(
        self,
        name: str,
        workspace_id: str | None,
        *,
        since: frozenset[str] | None = None,
        expect: Collection[str] = (),
    ) -> tuple[NameView, frozenset[str] | None]:
        views, horizon = self.walk([name], workspace_id, since=since, expect=expect)
        return views[name], horizon

    def _mine(self, claim: Claim) -> bool:
        return claim.token.startswith(self.token)

    def tidy(self, view: NameView, workspace_id: str | None = None) -> list[Claim]:
        """Collect this try's own leftovers and the claims past lease and grace; return the others' claims.

        A claim collected from an older view may have been delivered and renamed since: :meth:`_collect`
        reads it again first, and a claim now carrying the real name joins the view's delivered keys."""
        now = self.clock()
        rivals = []
        for claim in view.claims:
            if self._mine(claim) or claim.collectable(now, self.grace):
                renamed = self._collect(claim)
                if renamed is not None and renamed.name == view.name:
                    view.finals.append(renamed)
            else:
                rivals.append(claim)
        view.claims = rivals
        if view.replaced and not rivals:
            self._finish_replaced(view, workspace_id)
        return rivals

    def _finish_replaced(self, view: NameView, workspace_id: str | None) -> None:
        """Settle the old keys a replace took out of the name, once no claim on it can still be renamed.

        A key carrying the name means that replace got as far as renaming its new key: the old ones go. No key
        carrying it means the replace stopped in between (killed, or its rename failed for good): they get the
        name back, as if it had not started, so that the name is never left empty by it."""
        if not view.finals:
            # The view may be older than the new key's rename: look again before giving the name back.
            fresh = self._view(view.name, workspace_id)[0]
            fresh.replaced = []
            if self.tidy(fresh, workspace_id):
                return  # a claim that may still be renamed: settled at a later look
            view.finals.extend(fresh.finals)
        for key in view.replaced:
            if view.finals:
                if self.writes.delete(key.hash):
                    self.collected.append(key.hash)
                    self.log.warning(
                        "Deleted key %r (hash %s): a replace took it out of the name.", key.name, key.hash
                    )
                continue
            try:
                view.finals.append(self.writes.rename(key.hash, view.name))
            except NotFoundError:
                continue
            self.log.warning(
                "Gave key %r (hash %s) its name back: the replace that took it out stopped before its new "
                "key took the name.",
                key.name,
                key.hash,
            )
        view.replaced = []

    def _collect(self, claim: Claim) -> ApiKey | None:
        """Delete a claim nobody can deliver any more: this try's leftover, or one past lease and grace.

        Another try's claim is read again first: its owner renames it only after delivering it, and finishes
        that rename within the grace, so a claim still carrying its provisional name after lease and grace
        is abandoned for good, whereas one renamed since is a delivered key. That key is returned (``None``
        when the claim was deleted or is gone)."""
        if not self._mine(claim):
            try:
                current = self.hook.get_key(claim.key.hash)
            except NotFoundError:
                return None
            if current.name != claim.key.name:
                return current
        if self.writes.delete(claim.key.hash):
            self.collected.append(claim.key.hash)
            self.log.warning(
                "Deleted key %r (hash %s): %s, and its plaintext reached no destination.",
                claim.key.name,
                claim.key.hash,
                "this try's earlier request left it behind" if self._mine(claim) else "its lease has run out",
            )
        return None

    def provision(
        self,
        name: str,
        if_exists: IfExists,
        create: Callable[[str], CreatedApiKey],
        deliver: Callable[[CreatedApiKey], list[str]],
        *,
        workspace_id: str | None = None,
        view: NameView | None = None,
        since: frozenset[str] | None = None,
        retire: Callable[[ApiKey], None] | None = None,
    ) -> Outcome:
        """Make sure one delivered key carries ``name``, following ``if_exists``.

        ``create(provisional_name)`` creates a key; ``deliver(created)`` hands its plaintext on (``created``
        already carries the real name) and returns where it went, raising if it could not. With
        ``if_exists="replace"``, ``retire(old)`` (when given) takes each old key out of the name instead of
        deleting it, after the new key was delivered. A ``view`` given comes from a walk made before, whose
        horizon is ``since`` (``None``: the check reads every page).

        Waiting for another try's claim costs no round: only rounds that end in a withdrawal count towards
        :data:`MAX_ROUNDS`.
        """
        backoff = 0.25
        waiting_since: float | None = None
        round_no = 0
        while True:
            self.check_cancelled()
            if view is None:
                view, since = self._view(name, workspace_id)
            rivals = self.tidy(view, workspace_id)
            finals = list(view.finals)
            if finals and if_exists == "fail":
                raise ApiKeyExistsError(name, [key.hash for key in finals])
            if finals and if_exists == "reuse":
                if len(finals) > 1:
                    raise KeyNameNotUniqueError(name, [key.hash for key in finals])
                return Outcome("reused", finals[0], collected=list(self.collected))
            if rivals:
                waiting_since = self.clock() if waiting_since is None else waiting_since
                self._await(name, rivals, give_up=waiting_since + self.wait)
                view = None
                continue
            if round_no >= MAX_ROUNDS:
                raise OpenRouterError(
                    f"Creating key {name!r}: other tasks kept claiming the name at the same moment for "
                    f"{MAX_ROUNDS} rounds; nothing was left behind. A retry settles it."
                )
            outcome = self._round(
                name,
                round_no,
                olds=finals,
                create=create,
                deliver=deliver,
                workspace_id=workspace_id,
                since=since,
                retire=retire,
            )
            if outcome is not None:
                outcome.collected = list(self.collected)
                return outcome
            # Withdrew in favour of another claim: look again after a random wait, so that tries that saw
            # each other do not meet again.
            round_no += 1
            self.sleep(self.rng.uniform(0, backoff))
            backoff = min(backoff * 2, 4.0)
            view = None

    def _await(self, name: str, rivals: list[Claim], *, give_up: float) -> None:
        """Wait until another try's claims are settled: renamed (delivered), deleted (withdrawn), or past
        lease and grace (then the next look collects them). Each claim is read by its hash, so waiting
        costs a small request per claim and pause rather than a walk of the account. Past ``give_up``:
        :class:`ClaimHeldError`."""
        self.log.info(
            "Another task holds a claim on %r (%s): waiting for it.",
            name,
            ", ".join(claim.key.hash for claim in rivals),
        )
        pending = list(rivals)
        pause = 0.25
        while True:
            self.check_cancelled()
            now = self.clock()
            due = min(claim.until for claim in pending) + self.grace
            if now > due:
                return
            if now >= give_up:
                raise ClaimHeldError(
                    name, [claim.key.hash for claim in pending], max(c.until for c in pending) + self.grace
                )
            # Just past the moment the first claim becomes collectable, or at give_up: no sooner needed.
            self.sleep(min(pause * self.rng.uniform(1.0, 1.5), max(0.0, min(due, give_up) - now) + 0.01))
            pause = min(pause * 2, 2.0)
            still = []
            for claim in pending:
                try:
                    current = self.hook.get_key(claim.key.hash)
                except NotFoundError:
                    continue
                if current.name != claim.key.name:
                    return  # delivered (or renamed by a person): the next look says what the name holds
                still.append(claim)
            if not still:
                return
            pending = still

    def _round(
        self,
        name: str,
        round_no: int,
        *,
        olds: list[ApiKey],
        create: Callable[[str], CreatedApiKey],
        deliver: Callable[[CreatedApiKey], list[str]],
        workspace_id: str | None,
        since: frozenset[str] | None,
        retire: Callable[[ApiKey], None] | None = None,
    ) -> Outcome | None:
        claimed = self.claim(name, round_no, create)
        if claimed is None:
            return None
        created, until = claimed
        with self.settled_or_undone(name, created):
            return self.settle(
                name,
                created,
                until=until,
                olds=olds,
                deliver=deliver,
                workspace_id=workspace_id,
                since=since,
                retire=retire,
            )

    def claim(
        self, name: str, round_no: int, create: Callable[[str], CreatedApiKey]
    ) -> tuple[CreatedApiKey, float] | None:
        """Create a claim on ``name``; ``None`` when the answer was lost (the next look deletes it)."""
        until = self.clock() + self.lease
        token = f"{self.token}{round_no:02d}"
        try:
            return create(claim_name(name, token, until)), until
        except NO_CLEAR_ANSWER as exc:
            if isinstance(exc, OpenRouterTransportError) and exc.reached_server is False:
                raise
            self.log.warning("Creating a claim on %r got no usable answer (%s); looking again.", name, exc)
            return None

    @contextlib.contextmanager
    def settled_or_undone(self, name: str, created: CreatedApiKey) -> Iterator[None]:
        """Around settling a claim: on any failure, leave no key that nobody has."""
        try:
            yield
        except BaseException:
            # A failure, a timeout (AirflowTaskTimeout), a kill asked for. Before delivery: delete the key,
            # so none is left that nobody has. After: finish the rename if possible, so that the name carries
            # the key the destinations hold.
            stage = self._stage.get(created.hash)
            if stage == "clear":
                self.writes.rename_quietly(created.hash, name, only_from=created.api_key.name)
            elif stage != "named":
                self.withdraw(created.hash)
            raise
        finally:
            self._stage.pop(created.hash, None)  # settled either way: a batch need not keep it

    def _check(
        self,
        name: str,
        created: CreatedApiKey,
        *,
        until: float,
        workspace_id: str | None,
        since: frozenset[str] | None,
        view: NameView | None,
    ) -> NameView | None:
        """The name as listed after this try's claim was made, once the list shows that claim; ``None`` when
        it never does in time, or the claim is gone.

        A list that does not show the claim yet trails the writes (OpenRouter promises nothing either way),
        and may be missing a rival's claim made just before too: deciding on it could let two tries win.
        So the list is read again until it shows the claim. The create's answer already said it exists; a
        claim the list leaves out and a read by hash does not find was deleted by someone."""
        pause = 0.1
        while True:
            if view is None:
                view = self._view(name, workspace_id, since=since, expect=[created.hash])[0]
            if any(claim.key.hash == created.hash for claim in view.claims):
                return view
            try:
                self.hook.get_key(created.hash)
            except NotFoundError:
                return None
            if self.clock() + pause > until - self.lease / 2:
                return None
            self.log.info("The list does not show the claim on %r yet: reading it again.", name)
            self.sleep(pause)
            pause = min(pause * 2, 2.0)
            view = None

    def settle(
        self,
        name: str,
        created: CreatedApiKey,
        *,
        until: float,
        olds: list[ApiKey],
        deliver: Callable[[CreatedApiKey], list[str]],
        workspace_id: str | None,
        since: frozenset[str] | None = None,
        view: NameView | None = None,
        retire: Callable[[ApiKey], None] | None = None,
    ) -> Outcome | None:
        """Decide this try's claim: withdraw it (``None``), or deliver it, rename it, retire the old keys."""
        self.check_cancelled()
        mine = created.api_key
        seen = self._check(name, created, until=until, workspace_id=workspace_id, since=since, view=view)
        if seen is None:
            self.log.info(
                "The list did not show the claim on %r in time, or it is gone: withdrawing it.", name
            )
            self.withdraw(mine.hash)
            return None
        [listed] = [claim.key for claim in seen.claims if claim.key.hash == mine.hash]
        if listed.disabled:
            self.withdraw(mine.hash)
            raise OpenRouterError(
                f"The new key for {name!r} (hash {mine.hash}) was disabled by someone before it was "
                "delivered: it was deleted, and nothing was delivered. Rerun the task to create it again."
            )
        now = self.clock()
        stamp = epoch_of(mine.created_at)
        # A claim inside its grace may still be renamed by its owner, so it counts until it is collectable.
        ahead = [
            claim
            for claim in seen.claims
            if claim.key.hash != mine.hash
            and not self._mine(claim)
            and not claim.collectable(now, self.grace)
            and (stamp is None or (epoch_of(claim.key.created_at) or 0.0) < stamp + AMBIGUITY)
        ]
        known = {key.hash for key in olds}
        # A key another replace took out of the name is the name's until that replace is settled either way.
        newcomers = [key for key in [*seen.finals, *seen.replaced] if key.hash not in known]
        if ahead or newcomers:
            self.log.info(
                "Another task claimed %r at the same moment (%s): withdrawing this try's claim.",
                name,
                ", ".join(key.hash for key in [*(c.key for c in ahead), *newcomers]),
            )
            self.withdraw(mine.hash)
            return None
        if self.clock() > until - self.lease / 2:
            self.log.warning("The claim on %r has less than half its lease left: withdrawing it.", name)
            self.withdraw(mine.hash)
            return None
        real = dataclasses.replace(created, api_key=dataclasses.replace(mine, name=name))
        delivered = deliver(real)
        if self.clock() >= until:
            raise PlaintextDeliveryError(
                f"Key {name!r} was delivered to {', '.join(delivered)} only after its claim's lease ran out, "
                "so another run may delete it at any moment: it was withdrawn, and those destinations hold a "
                "key that no longer works. Rerun the task; a longer lease gives delivery more time.",
                key_hash=mine.hash,
                key_deleted=True,
                delivered_to=delivered,
            )
        self._stage[mine.hash] = "delivered"
        # At most one key carries the name at any moment: the old keys leave it before the new key takes it.
        try:
            out = self.writes.take_out(name, olds, retire=retire, at=self.clock())
        except OpenRouterError as exc:
            raise PlaintextDeliveryError(
                f"Key {name!r} was delivered to {', '.join(delivered)}, but taking the old key out of the "
                f"name failed: {exc}. The new key was withdrawn and the old one kept its name: those "
                "destinations hold a key that no longer works. Rerun the task.",
                key_hash=mine.hash,
                key_deleted=True,
                delivered_to=delivered,
            ) from exc
        if self.clock() >= until:
            # The rename must start within the lease to land before any run may collect the claim.
            self.writes.put_back(name, out)
            raise PlaintextDeliveryError(
                f"Key {name!r} was delivered to {', '.join(delivered)}, but its claim's lease ran out while "
                "the old key was taken out of the name: the new key was withdrawn and the old one given its "
                "name back, and those destinations hold a key that no longer works. Rerun the task; a longer "
                "lease gives delivery more time.",
                key_hash=mine.hash,
                key_deleted=True,
                delivered_to=delivered,
            )
        self._stage[mine.hash] = "clear"
        key = self.writes.rename(mine.hash, name)
        self._stage[mine.hash] = "named"
        if retire is None:
            self.writes.delete_replaced(name, key, out, delivered)
        return Outcome("replaced" if out else "created", key, delivered, [old.hash for old in out])

    def withdraw(self, key_hash: str) -> None:
        try:
            self.writes.delete(key_hash)
        except BaseException as exc:  # best effort: the error that brought us here matters more
            self.log.warning(
                "Could not delete this try's claim (hash %s): %s. Its name marks it undelivered; a run after "
                "its lease deletes it.",
                key_hash,
                exc,
            )

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("the task was told to stop while provisioning")

    # -- many names at once --------------------------------------------------------------------------------


def _call_budget_of(hook: Any) -> float | None:
    """The most one call through ``hook`` may take (its connection's timeout, retries and waits), or
    ``None`` for a hook-like object that does not say."""
    config_of = getattr(hook, "_get_config", None)
    if not callable(config_of):
        return None
    from airflow_provider_openrouter._retry import policy_for

    return policy_for(config_of(), None).budget
