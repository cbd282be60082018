"""Defaults shared by the hook, the operators, the sensor, the trigger and the local OpenRouter.

Constants only: the modules that DAG files import read them at no cost.
"""

from __future__ import annotations

from typing import Final

#: The connection used when none is named (``OpenRouterHook.default_conn_name``).
DEFAULT_CONN_ID: Final = "openrouter_default"
