"""Airflow plugins shipped with the provider (registered through the provider info's ``plugins``).

Nothing here is imported by hooks, operators or sensors: DAG files never pay for it.
"""

from __future__ import annotations

from typing import Final

#: The page's name, in the navigation and as its title. It lives here so that the plugin and the app it
#: builds on first access both read it without importing each other.
PAGE_NAME: Final = "OpenRouter keys"
