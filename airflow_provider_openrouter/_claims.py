"""The names a provisioning try writes on the account, and what one walk of the account says about a name.

A key is created under a *claim*: a provisional name that says which name it is for, which try made it, and
until when that try holds it (its lease)::

    tenant-acme [pending delivery 3f9a1c2b07 until 1767225600]

A replace takes the old key out of the name before the new key takes it, under a name that marks it for
deletion by any later run of the name::

    tenant-acme [replaced 1767225600]

Checking reads only what is new. A claim can only be beaten by keys created after the walk that found the
name free: anything older, that walk saw. The API lists newest first by ``created_at``, so the check walk
reads down to the first key of that walk's first page (its :class:`Horizon`) and on through the keys stamped
within :data:`ORDER_SLACK` of it (ties, clocks, a create stamped on arrival but listed on commit), once it has
seen this try's own claims: in a big account it reads a page or two instead of all of them. Should the list
ever come out of order, or every key of that page be gone, the check reads to the end.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

    from airflow_provider_openrouter.models import ApiKey

#: Seconds within which two claims' ``created_at`` cannot be ordered: whole seconds, plus clock differences
#: between OpenRouter's servers.
AMBIGUITY: Final = 2.0
#: Seconds by which ``created_at`` may run backwards down a list before it counts as out of order, and by
#: which a key created after a walk began may be stamped before that walk's newest key (whole seconds,
#: clocks, a create stamped when it arrives but listed only when it commits).
ORDER_SLACK: Final = 2 * AMBIGUITY

_CLAIM = re.compile(r"^(?P<name>.+) \[pending delivery (?P<token>[0-9a-f]{10}) until (?P<until>\d{9,12})\]$")
_REPLACED = re.compile(r"^(?P<name>.+) \[replaced (?P<at>\d{9,12})\]$")
_RETIRED = re.compile(r"^(?P<name>.+) \[retired (?P<at>\d{9,12})\]$")

log = logging.getLogger("airflow_provider_openrouter._provisioning")


def claim_name(name: str, token: str, until: float) -> str:
    return f"{name} [pending delivery {token} until {int(until)}]"


def replaced_name(name: str, at: float) -> str:
    """The name an old key carries between a replace taking it out of ``name`` and deleting it."""
    return f"{name} [replaced {int(at)}]"


def retired_name(name: str, at: float) -> str:
    """The name the sync's rotation gives an old key at ``at``: it keeps working through the overlap."""
    return f"{name} [retired {int(at)}]"


def retired_of(key_name: str) -> tuple[str, float] | None:
    """The name a rotation took the key named ``key_name`` out of, and when; or ``None``."""
    match = _RETIRED.match(key_name)
    return None if match is None else (match["name"], float(match["at"]))


def replaced_of(key_name: str) -> str | None:
    """The name a replace took the key named ``key_name`` out of, or ``None``."""
    match = _REPLACED.match(key_name)
    return None if match is None else match["name"]


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
    """What one walk saw of one name: its delivered keys (``finals``), its claims, and the old keys a
    replace took out of it and has not deleted (``replaced``)."""

    name: str
    finals: list[ApiKey] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    replaced: list[ApiKey] = field(default_factory=list)


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
        out = replaced_of(key.name) if claim is None and key.name.endswith("]") else None
        name = claim.name if claim is not None else out if out is not None else key.name
        if wanted is not None and name not in wanted:
            continue
        view = views.get(name) or views.setdefault(name, NameView(name))
        if claim is not None:
            view.claims.append(claim)
        elif out is not None:
            view.replaced.append(key)
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
        stamp = epoch_of(key.created_at)
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
    have = {key.hash for key in [*view.finals, *view.replaced]} | {claim.key.hash for claim in view.claims}
    view.finals.extend(key for key in seen.finals if key.hash not in have)
    view.claims.extend(claim for claim in seen.claims if claim.key.hash not in have)
    view.replaced.extend(key for key in seen.replaced if key.hash not in have)


def epoch_of(stamp: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp, or ``None`` when there is none or it cannot be read."""
    from airflow_provider_openrouter._validation import parse_instant

    moment = parse_instant(stamp) if stamp else None
    return None if moment is None else moment.timestamp()
