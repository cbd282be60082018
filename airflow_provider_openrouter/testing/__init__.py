"""A local OpenRouter: a stateful fake of the key-management API served over real HTTP on loopback."""

from __future__ import annotations
