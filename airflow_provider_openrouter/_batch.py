"""Provisioning many names of one workspace at once: one walk checks every claim of a chunk.

The steps are :class:`~airflow_provider_openrouter._provisioning.Provisioner`'s, so a name in a batch has the
guarantees of a name on its own (see :doc:`/guarantees`); what a batch adds is sharing the walks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from airflow_provider_openrouter._claims import NameView
    from airflow_provider_openrouter._provisioning import Outcome, Provisioner
    from airflow_provider_openrouter._validation import IfExists
    from airflow_provider_openrouter.models import ApiKey, CreatedApiKey


@dataclass(slots=True)
class Request:
    """One name for :meth:`Provisioner.provision_many`: how to create its key and where to deliver it."""

    name: str
    create: Callable[[str], CreatedApiKey]
    deliver: Callable[[CreatedApiKey], list[str]]
    if_exists: IfExists = "fail"
    view: NameView | None = None
    retire: Callable[[ApiKey], None] | None = None


def provision_many(
    provisioner: Provisioner,
    requests: Sequence[Request],
    *,
    workspace_id: str | None = None,
    since: frozenset[str] | None = None,
    later: Collection[str] = (),
    workers: int = 8,
    mask: Callable[[list[str]], None] | None = None,
    report: Callable[[int, Outcome | BaseException], None] | None = None,
) -> list[Outcome | BaseException]:
    """:meth:`Provisioner.provision` for many names of one workspace, with one walk checking all their
    claims.

    Each name's claim is created (``workers`` at a time), the new plaintexts are registered with ``mask``
    in one go, one walk of the account decides every claim, and the winners are delivered and renamed.
    A name that meets anything but a clean first round (a rival, a lost answer, a withdrawal) goes through
    :meth:`Provisioner.provision` on its own, so the guarantees are the same as one name at a time. The
    requests' views come from one walk whose horizon is ``since`` (``None``: the check reads every page).
    ``later``: names a following batch will provision. The check also notes what it sees of them (the
    provisioner's ``later_views``: keys created since the walk behind their views, to be added to those)
    and where the next batch's check may stop (its ``horizon``), so that each check reads only the keys
    created since the one before.
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
        rivals = provisioner.tidy(view, workspace_id)
        finals = list(view.finals)
        if rivals or (finals and request.if_exists != "replace"):
            slow.append(index)
        else:
            fresh.append((index, finals))

    def single(index: int) -> Outcome | BaseException:
        request = requests[index]
        try:
            return provisioner.provision(
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
                provisioner.check_cancelled()
                return provisioner.claim(request.name, 0, request.create)
            except Exception as exc:
                return exc

        claims: list[tuple[CreatedApiKey, float] | BaseException | None] = list(pool.map(claim, fresh))
        plaintexts = [c[0].plaintext for c in claims if isinstance(c, tuple)]
        if mask is not None and plaintexts:
            mask(plaintexts)
        del plaintexts
        names = [
            requests[index].name for (index, _), c in zip(fresh, claims, strict=True) if isinstance(c, tuple)
        ]
        mine = {c[0].hash: c[0].api_key for c in claims if isinstance(c, tuple)}
        views: dict[str, NameView] = {}
        provisioner.later_views = {}
        provisioner.horizon = None
        if names:
            try:
                views, provisioner.horizon = provisioner.walk(
                    names, workspace_id, since=since, expect=mine, known=mine, also=later
                )
            except BaseException as exc:
                # Nothing was decided, so nothing was delivered: every claim of the chunk goes.
                for position, claimed in enumerate(claims):
                    if isinstance(claimed, tuple):
                        provisioner.withdraw(claimed[0].hash)
                        claims[position] = exc if isinstance(exc, Exception) else None
                if not isinstance(exc, Exception):
                    raise
            provisioner.later_views = {name: views.pop(name) for name in later if name in views}
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
                    with provisioner.settled_or_undone(request.name, created):
                        outcome = provisioner.settle(
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
