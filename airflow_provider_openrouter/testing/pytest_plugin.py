"""pytest fixtures for testing DAGs against a local OpenRouter."""

from __future__ import annotations
