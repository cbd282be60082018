"""Shift this interpreter's ``time.time()`` when a test asks for it (see ``testing/clock_skew.py``)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_SECONDS = os.environ.get("OPENROUTER_TEST_CLOCK_SKEW_SECONDS")
if _SECONDS:
    # Loaded from its file rather than imported through the package: importing the package would import the
    # provider before the clock is shifted.
    _spec = importlib.util.spec_from_file_location(
        "_openrouter_clock_skew", Path(__file__).resolve().parent.parent / "clock_skew.py"
    )
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        _module.install(float(_SECONDS))
