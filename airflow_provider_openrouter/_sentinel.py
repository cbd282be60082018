"""The "argument not given" sentinel (re-exported by :mod:`airflow_provider_openrouter.models`)."""

from __future__ import annotations

import enum
from typing import Final


class Unset(enum.Enum):
    """Type of :data:`UNSET`: "this argument was not given", as opposed to ``None`` ("clear this field")."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = Unset.UNSET
