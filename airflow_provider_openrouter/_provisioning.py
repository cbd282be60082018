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

Checking reads only what is new. A claim can only be beaten by keys created after the walk that found the
name free: anything older, that walk saw. The API lists newest first by ``created_at``, so the check walk
reads down to the first key of that walk's first page (its :class:`Horizon`) and on through the keys stamped
within :data:`ORDER_SLACK` of it (ties, clocks, a create stamped on arrival but listed on commit), once it has
seen this try's own claims: in a big account it reads a page or two instead of all of them. Should the list
ever come out of order, or every key of that page be gone, the check reads to the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_provider_openrouter.exceptions import (
    ApiKeyExistsError,
    ClaimHeldError,
    KeyNameNotUniqueError,
    NotFoundError,
    OpenRouterError,
    OpenRouterTransportError,
    OpenRouterValidationError,
    PlaintextDeliveryError,
    ServerError,
    UnreadableResponseError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

IfExists = Literal["fail", "reuse", "replace"]

#: Seconds within which two claims' ``created_at`` cannot be ordered: whole seconds, plus clock differences
#: between OpenRouter's servers.
AMBIGUITY: Final = 2.0
#: Default lease of a claim, and the grace after it before another run may delete it.
DEFAULT_LEASE: Final = 120.0
DEFAULT_GRACE: Final = 60.0
#: Seconds by which ``created_at`` may run backwards down a list before it counts as out of order, and by
#: which a key created after a walk began may be stamped before that walk's newest key (whole seconds,
#: clocks, a create stamped when it arrives but listed only when it commits).
ORDER_SLACK: Final = 2 * AMBIGUITY
#: Rounds (create, check) one try makes before giving up on a name that others keep claiming at the same
#: moment. Waiting for another try's claim costs no round.
MAX_ROUNDS: Final = 8

_CLAIM = re.compile(r"^(?P<name>.+) \[pending delivery (?P<token>[0-9a-f]{10}) until (?P<until>\d{9,12})\]$")
_UNKNOWN_OUTCOME = (OpenRouterTransportError, ServerError, UnreadableResponseError)

log = logging.getLogger(__name__)


def claim_name(name: str, token: str, until: float) -> str:
    return f"{name} [pending delivery {token} until {int(until)}]"


@dataclass(frozen=True, slots=True)
class Claim:
    """A key under a provisional name: for which name, made by which try, held until when (epoch seconds)."""

    key: ApiKey
    name: str
    token: str
    until: float

    @classmethod
    def parse(cls, key: ApiKey) -> Claim | None:
        match = _CLAIM.match(key.name)
        if match is None:
            return None
        return cls(key, match["name"], match["token"], float(match["until"]))

    def collectable(self, now: float, grace: float) -> bool:
        """Whether the try that made it can no longer rename it: its lease and the grace have passed."""
        return now > self.until + grace

    def live(self, now: float) -> bool:
        return now <= self.until


@dataclass(slots=True)
class NameView:
    """What one walk saw of one name: its delivered keys (``finals``) and its claims."""

    name: str
    finals: list[ApiKey] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


def view_of(
    keys: Iterable[ApiKey],
    names: Iterable[str] | None = None,
    known: Mapping[str, ApiKey] | None = None,
    also: Iterable[str] = (),
) -> dict[str, NameView]:
    """Group one walk of the account by name (only ``names`` when given, each with a view, and ``also``,
    those with keys): one walk serves many names. A key in ``known`` (by hash: the claims a batch holds) is
    kept as that object, not as a second copy."""
    names = None if names is None else list(names)
    wanted = None if names is None else {*names, *also}
    views: dict[str, NameView] = {}
    for walked in keys:
        key = walked if known is None else known.get(walked.hash, walked)
        claim = Claim.parse(key)
        name = claim.name if claim is not None else key.name
        if wanted is not None and name not in wanted:
            continue
        view = views.get(name) or views.setdefault(name, NameView(name))
        if claim is not None:
            view.claims.append(claim)
        else:
            view.finals.append(key)
    if names is not None:
        for name in names:
            views.setdefault(name, NameView(name))
    return views


class Horizon:
    """The hashes of the keys on the first page of a walk: the newest keys when it began. A key created after
    that is listed above every one of them that still exists."""

    __slots__ = ("top",)

    def __init__(self) -> None:
        self.top: frozenset[str] = frozenset()

    def watch(self, keys: Iterable[ApiKey]) -> Iterator[ApiKey]:
        """``keys``, noting the first page's."""
        from airflow_provider_openrouter._endpoints import PAGE_SIZE

        keys = iter(keys)
        first = list(itertools.islice(keys, PAGE_SIZE))
        self.top = frozenset(key.hash for key in first)
        yield from first
        del first
        yield from keys


def recent(keys: Iterable[ApiKey], since: frozenset[str], expect: Collection[str] = ()) -> Iterator[ApiKey]:
    """The keys of a walk (newest first) down to those an earlier walk already saw (``since``: its
    :class:`Horizon`): every key created after that walk began is among them.

    That walk began after the keys of its first page were created, so a key created since carries a
    ``created_at`` no earlier than theirs, give or take :data:`ORDER_SLACK` (clocks, whole-second stamps, a
    create stamped when it arrives but listed only when it commits). The list is ordered by ``created_at``
    with ties in any order, so this walk goes past the first key of ``since`` it meets, down to a key older
    than that one by more than the slack: a newer key tied with it, or listed just below it, is still read.

    It stops only once every hash in ``expect`` (keys known to be newer: this try's claims) has come by and
    the order has held so far: a key created well after one listed before it, or one without a
    ``created_at``, means the list is not in the documented order, and then the whole walk is read.
    """
    keys = iter(keys)
    missing = set(expect)
    lowest = math.inf
    floor: float | None = None  # no key created after the earlier walk began is stamped below this
    for key in keys:
        stamp = _epoch(key.created_at)
        if floor is not None and not missing and stamp is not None and stamp < floor:
            return
        yield key
        missing.discard(key.hash)
        if stamp is None or stamp > lowest + ORDER_SLACK:
            log.warning(
                "GET /keys did not come newest first (key %s, created %s): reading every page.",
                key.hash,
                key.created_at,
            )
            yield from keys
            return
        lowest = min(lowest, stamp)
        if floor is None and key.hash in since:
            floor = stamp - ORDER_SLACK


def merge_views(view: NameView, seen: NameView) -> None:
    """Add to ``view`` the keys a later walk saw of its name (created since the walk behind ``view``)."""
    have = {key.hash for key in view.finals} | {claim.key.hash for claim in view.claims}
    view.finals.extend(key for key in seen.finals if key.hash not in have)
    view.claims.extend(claim for claim in seen.claims if claim.key.hash not in have)


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
    (:meth:`_view`, then :meth:`_tidy`, which collects claims past lease and grace through :meth:`_collect`),
    waits out another try's claim (:meth:`_await`), or claims it (:meth:`_claim`), checks that claim
    (:meth:`_check`), then delivers and renames it or withdraws it (:meth:`_settle`, :meth:`_withdraw`).

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
        self.log = logger or log
        # Looked up now rather than bound when the module loads: a process may have its clock replaced
        # after import (a test's clock skew).
        self.clock = clock or time.time
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.token = secrets.token_hex(4)  # this try's; each claim adds a round digit
        self.cancelled = False
        self.collected: list[str] = []
        # Hashes of claims whose plaintext reached its destinations (threads of a batch share the set).
        self._delivered: set[str] = set()
        #: After :meth:`provision_many`: the horizon of its check, and what it saw of the ``later`` names.
        self.horizon: frozenset[str] | None = None
        self.later_views: dict[str, NameView] = {}

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

    def _tidy(self, view: NameView) -> list[Claim]:
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
        return rivals

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
        if self._delete(claim.key.hash):
            self.collected.append(claim.key.hash)
            self.log.warning(
                "Deleted key %r (hash %s): %s, and its plaintext reached no destination.",
                claim.key.name,
                claim.key.hash,
                "this try's earlier request left it behind" if self._mine(claim) else "its lease has run out",
            )
        return None

    def _delete(self, key_hash: str) -> bool:
        return self.hook.delete_key(key_hash, missing_ok=True)

    # -- the sequence --------------------------------------------------------------------------------------

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
            self._check_cancelled()
            if view is None:
                view, since = self._view(name, workspace_id)
            rivals = self._tidy(view)
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
            self._check_cancelled()
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
        claimed = self._claim(name, round_no, create)
        if claimed is None:
            return None
        created, until = claimed
        with self._settled_or_undone(name, created):
            return self._settle(
                name,
                created,
                until=until,
                olds=olds,
                deliver=deliver,
                workspace_id=workspace_id,
                since=since,
                retire=retire,
            )

    def _claim(
        self, name: str, round_no: int, create: Callable[[str], CreatedApiKey]
    ) -> tuple[CreatedApiKey, float] | None:
        """Create a claim on ``name``; ``None`` when the answer was lost (the next look deletes it)."""
        until = self.clock() + self.lease
        token = f"{self.token}{round_no:02d}"
        try:
            return create(claim_name(name, token, until)), until
        except _UNKNOWN_OUTCOME as exc:
            if isinstance(exc, OpenRouterTransportError) and exc.reached_server is False:
                raise
            self.log.warning("Creating a claim on %r got no usable answer (%s); looking again.", name, exc)
            return None

    @contextlib.contextmanager
    def _settled_or_undone(self, name: str, created: CreatedApiKey) -> Iterator[None]:
        """Around settling a claim: on any failure, leave no key that nobody has."""
        try:
            yield
        except BaseException:
            # A failure, a timeout (AirflowTaskTimeout), a kill asked for. Before delivery: delete the key,
            # so none is left that nobody has. After: finish the rename if possible, so that the name carries
            # the key the destinations hold.
            if created.hash in self._delivered:
                self._rename_quietly(created.hash, name)  # a second rename to the same name is harmless
            else:
                self._withdraw(created.hash)
            raise
        finally:
            self._delivered.discard(created.hash)  # settled either way: a batch need not keep it

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

    def _settle(
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
        self._check_cancelled()
        mine = created.api_key
        seen = self._check(name, created, until=until, workspace_id=workspace_id, since=since, view=view)
        if seen is None:
            self.log.info(
                "The list did not show the claim on %r in time, or it is gone: withdrawing it.", name
            )
            self._withdraw(mine.hash)
            return None
        [listed] = [claim.key for claim in seen.claims if claim.key.hash == mine.hash]
        if listed.disabled:
            self._withdraw(mine.hash)
            raise OpenRouterError(
                f"The new key for {name!r} (hash {mine.hash}) was disabled by someone before it was "
                "delivered: it was deleted, and nothing was delivered. Rerun the task to create it again."
            )
        now = self.clock()
        stamp = _epoch(mine.created_at)
        # A claim inside its grace may still be renamed by its owner, so it counts until it is collectable.
        ahead = [
            claim
            for claim in seen.claims
            if claim.key.hash != mine.hash
            and not self._mine(claim)
            and not claim.collectable(now, self.grace)
            and (stamp is None or (_epoch(claim.key.created_at) or 0.0) < stamp + AMBIGUITY)
        ]
        known = {key.hash for key in olds}
        newcomers = [key for key in seen.finals if key.hash not in known]
        if ahead or newcomers:
            self.log.info(
                "Another task claimed %r at the same moment (%s): withdrawing this try's claim.",
                name,
                ", ".join(key.hash for key in [*(c.key for c in ahead), *newcomers]),
            )
            self._withdraw(mine.hash)
            return None
        if self.clock() > until - self.lease / 2:
            self.log.warning("The claim on %r has less than half its lease left: withdrawing it.", name)
            self._withdraw(mine.hash)
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
        self._delivered.add(mine.hash)
        # The rename comes first: it started before the lease ran out and one call ends within the grace,
        # so it lands before any run may collect the claim, however slow retiring the old keys is.
        key = self._rename(mine.hash, name)
        replaced, failed = self._retire_olds(olds, retire=retire)
        if failed is not None:
            left = [old.hash for old in olds if old.hash not in replaced]
            raise OpenRouterError(
                f"The new key {name!r} (hash {key.hash}) was created and delivered to "
                f"{', '.join(delivered)}, but deleting the old key (hash {', '.join(left)}) failed: "
                f"{failed}. Both keys exist now; "
                "rerunning with if_exists='replace' rotates again and removes both old keys."
            ) from failed
        return Outcome("replaced" if replaced else "created", key, delivered, replaced)

    def _retire_olds(
        self, olds: list[ApiKey], *, retire: Callable[[ApiKey], None] | None
    ) -> tuple[list[str], OpenRouterError | None]:
        """Take the old keys out of the name (``replace``) once the new key carries it; stop at a failure."""
        replaced: list[str] = []
        for old in olds:
            try:
                if retire is not None:
                    retire(old)
                else:
                    self._delete(old.hash)
            except OpenRouterError as exc:
                return replaced, exc
            replaced.append(old.hash)
            if retire is None:
                self.log.info("Deleted the old key %r (hash %s).", old.name, old.hash)
        return replaced, None

    def _rename(self, key_hash: str, name: str) -> ApiKey:
        try:
            return self.hook.update_key(key_hash, name=name)
        except _UNKNOWN_OUTCOME:
            # The rename may have been made: the key says.
            key = self.hook.get_key(key_hash)
            if key.name != name:
                raise
            return key

    def _rename_quietly(self, key_hash: str, name: str) -> None:
        try:
            self._rename(key_hash, name)
        except BaseException as exc:  # best effort: the error that brought us here matters more
            self.log.warning(
                "Could not rename the delivered key (hash %s) to %r: %s. A run after its lease replaces it.",
                key_hash,
                name,
                exc,
            )

    def _withdraw(self, key_hash: str) -> None:
        try:
            self._delete(key_hash)
        except BaseException as exc:  # best effort: the error that brought us here matters more
            self.log.warning(
                "Could not delete this try's claim (hash %s): %s. Its name marks it undelivered; a run after "
                "its lease deletes it.",
                key_hash,
                exc,
            )

    def _check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("the task was told to stop while provisioning")

    # -- many names at once --------------------------------------------------------------------------------

    def provision_many(
        self,
        requests: Sequence[Request],
        *,
        workspace_id: str | None = None,
        since: frozenset[str] | None = None,
        later: Collection[str] = (),
        workers: int = 8,
        mask: Callable[[list[str]], None] | None = None,
        report: Callable[[int, Outcome | BaseException], None] | None = None,
    ) -> list[Outcome | BaseException]:
        """:meth:`provision` for many names of one workspace, with one walk checking all their claims.

        Each name's claim is created (``workers`` at a time), the new plaintexts are registered with ``mask``
        in one go, one walk of the account decides every claim, and the winners are delivered and renamed.
        A name that meets anything but a clean first round (a rival, a lost answer, a withdrawal) goes
        through :meth:`provision` on its own, so the guarantees are the same as one name at a time. The
        requests' views come from one walk whose horizon is ``since`` (``None``: the check reads every page).
        ``later``: names a following batch will provision. The check also notes what it sees of them
        (:attr:`later_views`: keys created since the walk behind their views, to be added to those) and where
        the next batch's check may stop (:attr:`horizon`), so that each check reads only the keys created
        since the one before.
        Rate limits are the hook's (its gate holds every thread after a 429). The result has one entry per
        request, in order: its outcome, or the exception that ended it. With ``report``, each is handed to
        ``report(index, result)`` as soon as it is known instead (from the worker threads), and the result is
        empty: nothing of a name (its key, its plaintext) is kept once it is done.
        """
        from concurrent.futures import ThreadPoolExecutor

        results: list[Outcome | BaseException | None] = [None] * (0 if report else len(requests))

        def done(index: int, result: Outcome | BaseException) -> None:
            if report is not None:
                report(index, result)
            else:
                results[index] = result

        fresh: list[tuple[int, list[ApiKey]]] = []
        slow: list[int] = []
        for index, request in enumerate(requests):
            if request.view is None:
                slow.append(index)
                continue
            view = request.view
            rivals = self._tidy(view)
            finals = list(view.finals)
            if rivals or (finals and request.if_exists != "replace"):
                slow.append(index)
            else:
                fresh.append((index, finals))

        def single(index: int) -> Outcome | BaseException:
            request = requests[index]
            try:
                return self.provision(
                    request.name,
                    request.if_exists,
                    request.create,
                    request.deliver,
                    workspace_id=workspace_id,
                    view=request.view,
                    since=since,
                    retire=request.retire,
                )
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="provision") as pool:

            def claim(item: tuple[int, list[ApiKey]]) -> tuple[CreatedApiKey, float] | BaseException | None:
                request = requests[item[0]]
                try:
                    self._check_cancelled()
                    return self._claim(request.name, 0, request.create)
                except Exception as exc:
                    return exc

            claims: list[tuple[CreatedApiKey, float] | BaseException | None] = list(pool.map(claim, fresh))
            plaintexts = [c[0].plaintext for c in claims if isinstance(c, tuple)]
            if mask is not None and plaintexts:
                mask(plaintexts)
            del plaintexts
            names = [
                requests[index].name
                for (index, _), c in zip(fresh, claims, strict=True)
                if isinstance(c, tuple)
            ]
            mine = {c[0].hash: c[0].api_key for c in claims if isinstance(c, tuple)}
            views: dict[str, NameView] = {}
            self.later_views = {}
            self.horizon = None
            if names:
                try:
                    views, self.horizon = self.walk(
                        names, workspace_id, since=since, expect=mine, known=mine, also=later
                    )
                except BaseException as exc:
                    # Nothing was decided, so nothing was delivered: every claim of the chunk goes.
                    for position, claimed in enumerate(claims):
                        if isinstance(claimed, tuple):
                            self._withdraw(claimed[0].hash)
                            claims[position] = exc if isinstance(exc, Exception) else None
                    if not isinstance(exc, Exception):
                        raise
                self.later_views = {name: views.pop(name) for name in later if name in views}
            del mine

            def finish(position: int) -> None:
                (index, olds), claimed = fresh[position], claims[position]
                claims[position] = None  # the plaintext and key are let go as soon as this name is settled
                request = requests[index]
                view = views.pop(request.name, None)
                if isinstance(claimed, BaseException):
                    done(index, claimed)
                    return
                outcome: Outcome | None = None
                if claimed is not None:
                    created, until = claimed
                    try:
                        with self._settled_or_undone(request.name, created):
                            outcome = self._settle(
                                request.name,
                                created,
                                until=until,
                                olds=olds,
                                deliver=request.deliver,
                                workspace_id=workspace_id,
                                since=since,
                                view=view,
                                retire=request.retire,
                            )
                    except Exception as exc:
                        done(index, exc)
                        return
                if outcome is None:
                    # Withdrawn or lost: the careful path, which looks again before each round, once every
                    # claim of the chunk is settled. A worker waiting here for another run's claim would hold
                    # up this run's own winning claims, and that run may be waiting for them in turn.
                    request.view = None
                    retry.append(index)
                else:
                    done(index, outcome)

            retry: list[int] = []
            list(pool.map(finish, range(len(fresh))))
            careful = [*retry, *slow]
            for index, result in zip(careful, pool.map(single, careful), strict=True):
                done(index, result)
        return [r if r is not None else OpenRouterError("not provisioned") for r in results]


@dataclass(slots=True)
class Request:
    """One name for :meth:`Provisioner.provision_many`: how to create its key and where to deliver it."""

    name: str
    create: Callable[[str], CreatedApiKey]
    deliver: Callable[[CreatedApiKey], list[str]]
    if_exists: IfExists = "fail"
    view: NameView | None = None
    retire: Callable[[ApiKey], None] | None = None


def _call_budget_of(hook: Any) -> float | None:
    """The most one call through ``hook`` may take (its connection's timeout, retries and waits), or
    ``None`` for a hook-like object that does not say."""
    config_of = getattr(hook, "_get_config", None)
    if not callable(config_of):
        return None
    from airflow_provider_openrouter._retry import policy_for

    return policy_for(config_of(), None).budget


def _epoch(stamp: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp, or ``None`` when there is none or it cannot be read."""
    from airflow_provider_openrouter._validation import parse_instant

    moment = parse_instant(stamp) if stamp else None
    return None if moment is None else moment.timestamp()


__all__ = [
    "AMBIGUITY",
    "ORDER_SLACK",
    "Claim",
    "ClaimHeldError",
    "Horizon",
    "NameView",
    "Outcome",
    "Provisioner",
    "Request",
    "claim_name",
    "merge_views",
    "recent",
    "view_of",
]
