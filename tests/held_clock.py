"""One moment for an operator and the local OpenRouter alike, for tests of rules counted in hours and days."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    import pytest

    from airflow_provider_openrouter.testing import LocalOpenRouter


class HeldClock:
    """A module's ``time`` with its wall clock held at one moment; the rest (``monotonic``, ``sleep``) as it
    is, so that timeouts and pacing still run in real time."""

    def __init__(self, moment: float) -> None:
        self.moment = moment

    def time(self) -> float:
        return self.moment

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def holding(
    module: ModuleType, fake: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> Callable[[float], None]:
    """``at(moment)``: ``module``'s wall clock and the local OpenRouter's both at ``moment`` (epoch
    seconds)."""

    def at(moment: float) -> None:
        monkeypatch.setattr(module, "time", HeldClock(moment))
        fake.set_clock(dt.datetime.fromtimestamp(moment, dt.timezone.utc), frozen=True)

    return at
