"""Provisioning many names of one workspace at once: one walk checks every claim of a chunk.

The steps are :class:`~airflow_provider_openrouter._provisioning.Provisioner`'s, so a name in a batch has the
guarantees of a name on its own (see :doc:`/guarantees`); what a batch adds is sharing the walks, and keeping
the workers busy while a check walks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from airflow_provider_openrouter._claims import merge_views
from airflow_provider_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from airflow_provider_openrouter._claims import NameView
    from airflow_provider_openrouter._provisioning import Outcome, Provisioner
    from airflow_provider_openrouter._validation import IfExists
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey

    #: A name's first-round claim: its key and the lease's end, the exception that ended it, or let go.
    Claimed = tuple[CreatedApiKey, float] | BaseException | None

#: Names claimed per check: each name's key and claim are held until its chunk is settled (about 2.5 KB), and
#: each check reads the keys created since the one before, about a page per chunk.
CHUNK: Final = 100


@dataclass(slots=True)
class Request:
    """One name for :func:`provision_many`: how to create its key and where to deliver it."""

    name: str
    create: Callable[[str], CreatedApiKey]
    deliver: Callable[[CreatedApiKey], list[str]]
    if_exists: IfExists = "fail"
    view: NameView | None = None
    retire: Callable[[ApiKey], None] | None = None


@dataclass(slots=True)
class _Chunk:
    """One chunk's names on their way: those claimed in the first round (with the old keys a replace takes
    out), their claims, and the views their check gave them."""

    #: The horizon of the walk its names' views come from (see :func:`provision_many`'s ``since``).
    since: frozenset[str] | None
    fresh: list[tuple[int, list[ApiKey]]] = field(default_factory=list)
    claims: list[Claimed] = field(default_factory=list)
    views: dict[str, NameView] = field(default_factory=dict)


def provision_many(
    provisioner: Provisioner,
    requests: Sequence[Request],
    *,
    workspace_id: str | None = None,
    since: frozenset[str] | None = None,
    chunk: int = CHUNK,
    workers: int = 8,
    mask: Callable[[list[str]], None] | None = None,
    report: Callable[[int, Outcome | BaseException], None] | None = None,
) -> list[Outcome | BaseException]:
    """:meth:`Provisioner.provision` for many names of one workspace, ``chunk`` names at a time, with one walk
    checking each chunk's claims.

    Each name's claim is created (``workers`` at a time), the chunk's new plaintexts are registered with
    ``mask`` in one go, one walk of the account decides every claim of the chunk, and the winners are
    delivered and renamed. A name that meets anything but a clean first round (a rival, a lost answer, a
    withdrawal) goes through :meth:`Provisioner.provision` on its own once every chunk is settled, so the
    guarantees are the same as one name at a time.

    The requests' views come from one walk whose horizon is ``since`` (``None``: the first check reads every
    page). Each check stops at the horizon of the check before, so that it reads only the keys created since,
    and what it sees of the names of later chunks is added to their views.

    The chunks overlap: a chunk's claims are made while the chunk before is delivered and renamed, and its
    check walks while that goes on. A chunk's claims are made only after the check before has walked, so no
    check sees this run's claims on a later chunk's names. Rate limits are the hook's (its gate holds every
    thread after a 429).

    The result has one entry per request, in order: its outcome, or the exception that ended it. With
    ``report``, each is handed to ``report(index, result)`` as soon as it is known instead (from the worker
    threads), and the result is empty: nothing of a name (its key, its plaintext) is kept once it is done.
    """
    from concurrent.futures import ThreadPoolExecutor

    results: list[Outcome | BaseException | None] = [None] * (0 if report else len(requests))

    def done(index: int, result: Outcome | BaseException) -> None:
        if report is not None:
            report(index, result)
        else:
            results[index] = result

    batch = _Batch(provisioner, requests, workspace_id, done)
    size = max(1, chunk)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="provision") as pool:
        settling: Iterator[None] = iter(())
        previous: _Chunk | None = None
        for start in range(0, len(requests), size):
            current = batch.classify(range(start, min(start + size, len(requests))), since)
            claiming = pool.map(batch.claim, current.fresh)
            # The chunk before the previous one has long been settled; waiting for it bounds what is held.
            list(settling)
            if previous is not None:
                # Submitted after this chunk's claims, so that this chunk's check walks while these settle.
                settling = pool.map(batch.finish, *_settle_args(previous))
            current.claims = list(claiming)
            since = batch.check(current, later=start + size, mask=mask)
            previous = current
        list(settling)
        if previous is not None:
            list(pool.map(batch.finish, *_settle_args(previous)))
        careful = batch.careful
        for (index, _), result in zip(careful, pool.map(batch.single, careful), strict=True):
            done(index, result)
    return [r if r is not None else OpenRouterError("not provisioned") for r in results]


def _settle_args(chunk: _Chunk) -> tuple[list[_Chunk], range]:
    """:meth:`_Batch.finish`'s arguments for each name of ``chunk``, as ``map`` takes them."""
    return [chunk] * len(chunk.fresh), range(len(chunk.fresh))


class _Batch:
    """The steps of :func:`provision_many`, each run by a worker thread for one name, or for one chunk."""

    def __init__(
        self,
        provisioner: Provisioner,
        requests: Sequence[Request],
        workspace_id: str | None,
        done: Callable[[int, Outcome | BaseException], None],
    ) -> None:
        self.provisioner = provisioner
        self.requests = requests
        self.workspace_id = workspace_id
        self.done = done
        self.names = frozenset(request.name for request in requests)
        self.index = {request.name: index for index, request in enumerate(requests)}
        #: The names for the careful path, taken one at a time once every chunk is settled: a worker waiting
        #: for another run's claim would hold up this run's own winning claims, and that run may be waiting
        #: for them in turn.
        #: Each with the horizon its view comes from.
        self.careful: list[tuple[int, frozenset[str] | None]] = []

    def classify(self, indices: range, since: frozenset[str] | None) -> _Chunk:
        """A chunk whose names start clean (no rival claim; a key to keep only where it is replaced); the
        others go the careful way."""
        chunk = _Chunk(since)
        for index in indices:
            request = self.requests[index]
            view = request.view
            if view is None:
                self.careful.append((index, since))
                continue
            try:
                rivals = self.provisioner.tidy(view, self.workspace_id)
            except Exception:
                # The chunk before holds claims still to settle: an error here must not end the batch and
                # leave them behind. The careful path tidies the name again and reports what it meets.
                self.careful.append((index, since))
                continue
            finals = list(view.finals)
            if rivals or (finals and request.if_exists != "replace"):
                self.careful.append((index, since))
            else:
                chunk.fresh.append((index, finals))
        return chunk

    def claim(self, item: tuple[int, list[ApiKey]]) -> Claimed:
        request = self.requests[item[0]]
        try:
            self.provisioner.check_cancelled()
            return self.provisioner.claim(request.name, 0, request.create)
        except Exception as exc:
            return exc

    def check(
        self, chunk: _Chunk, *, later: int, mask: Callable[[list[str]], None] | None
    ) -> frozenset[str] | None:
        """One walk deciding the chunk's claims; returns where the next chunk's check may stop."""
        claims, since = chunk.claims, chunk.since
        made = [claimed[0] for claimed in claims if isinstance(claimed, tuple)]
        if not made:
            return since
        mine = {created.hash: created.api_key for created in made}
        names = [
            self.requests[index].name
            for (index, _), claimed in zip(chunk.fresh, claims, strict=True)
            if isinstance(claimed, tuple)
        ]
        provisioner = self.provisioner
        try:
            if mask is not None:
                mask([created.plaintext for created in made])
            del made
            views, horizon = provisioner.walk(
                names,
                self.workspace_id,
                since=since,
                expect=mine,
                known=mine,
                also=self.names,
            )
        except BaseException as exc:
            # Nothing was decided, so nothing was delivered: every claim of the chunk goes. Nothing may end
            # the batch before that, nor while the chunk before still settles (see classify).
            for position, claimed in enumerate(claims):
                if isinstance(claimed, tuple):
                    provisioner.withdraw(claimed[0].hash)
                    claims[position] = exc if isinstance(exc, Exception) else None
            if not isinstance(exc, Exception):
                raise
            return since
        for name, seen in views.items():
            index = self.index.get(name)
            if index is not None and index >= later:
                # A later chunk's name: its view comes from a walk that stopped before these keys.
                view = self.requests[index].view
                if view is not None:
                    merge_views(view, seen)
        chunk.views = views
        return horizon

    def finish(self, chunk: _Chunk, position: int) -> None:
        (index, olds), claimed = chunk.fresh[position], chunk.claims[position]
        chunk.claims[position] = None  # the plaintext and key are let go as soon as this name is settled
        request = self.requests[index]
        view = chunk.views.pop(request.name, None)
        if isinstance(claimed, BaseException):
            self.done(index, claimed)
            return
        outcome: Outcome | None = None
        if claimed is not None:
            created, until = claimed
            provisioner = self.provisioner
            try:
                with provisioner.settled_or_undone(request.name, created):
                    outcome = provisioner.settle(
                        request.name,
                        created,
                        until=until,
                        olds=olds,
                        deliver=request.deliver,
                        workspace_id=self.workspace_id,
                        since=chunk.since,
                        view=view,
                        retire=request.retire,
                    )
            except Exception as exc:
                self.done(index, exc)
                return
        if outcome is None:
            # Withdrawn or lost: the careful path, which looks again before each round.
            request.view = None
            self.careful.append((index, None))
        else:
            self.done(index, outcome)

    def single(self, item: tuple[int, frozenset[str] | None]) -> Outcome | BaseException:
        index, since = item
        request = self.requests[index]
        try:
            return self.provisioner.provision(
                request.name,
                request.if_exists,
                request.create,
                request.deliver,
                workspace_id=self.workspace_id,
                view=request.view,
                since=since,
                retire=request.retire,
            )
        except Exception as exc:
            return exc
