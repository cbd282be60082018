"""What the local OpenRouter's API and control layers share: the :class:`Backend` they act on, and its
request log."""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_openrouter.testing._state import OpenRouterState
    from airflow_provider_openrouter.testing.faults import FaultPlan


# -- the request log -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the local OpenRouter saw it. Never holds the ``Authorization`` header.

    ``status`` is ``None`` when a fault dropped the connection instead of answering; ``fault`` names the fault
    that decided the answer, if any; ``key_hash`` is the hash of the bearer key the request carried.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int | None
    fault: str | None
    key_hash: str | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedRequest:
        return cls(**data)


class RequestLog:
    """The API requests served, oldest first, bounded so that a long benchmark does not grow memory."""

    def __init__(self, maxlen: int) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[RecordedRequest] = collections.deque(maxlen=maxlen)

    def append(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Backend:
    """What the API and control layers act on: the state, the armed faults and the request log."""

    def __init__(self, state: OpenRouterState, faults: FaultPlan, log: RequestLog) -> None:
        self.state = state
        self.faults = faults
        self.log = log
        self.base_url = ""
