"""Provider metadata read by Airflow's provider manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_openrouter import __version__

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-openrouter",
        "name": "OpenRouter",
        "description": "Manage `OpenRouter <https://openrouter.ai/>`__ API keys: provision a key per tenant, "
        "set and reset spending limits, disable, rotate and delete keys, and wait on a key's usage.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "OpenRouter",
                "external-doc-url": "https://openrouter.ai/docs/api-reference/api-keys",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "OpenRouter",
                "python-modules": ["airflow_provider_openrouter.hooks.openrouter"],
            }
        ],
        "operators": [
            {
                "integration-name": "OpenRouter",
                "python-modules": [
                    "airflow_provider_openrouter.operators.api_key",
                    "airflow_provider_openrouter.operators.sync",
                    "airflow_provider_openrouter.operators.fleet_alerts",
                    "airflow_provider_openrouter.operators.retire",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "OpenRouter",
                "python-modules": ["airflow_provider_openrouter.sensors.key_usage"],
            }
        ],
        "triggers": [
            {
                "integration-name": "OpenRouter",
                "python-modules": [
                    "airflow_provider_openrouter.triggers.key_usage",
                    "airflow_provider_openrouter.triggers.retired_keys",
                ],
            }
        ],
        "extra-links": ["airflow_provider_openrouter.links.OpenRouterKeyLink"],
        # One asset per key name, openrouter://<connection id>/keys/<name>, which the key operators' events
        # go to: the handler makes the ways of writing a name one URI.
        "asset-uris": [
            {
                "schemes": ["openrouter"],
                "handler": "airflow_provider_openrouter.assets.normalize_key_uri",
                "factory": "airflow_provider_openrouter.assets.key_asset",
            }
        ],
        "plugins": [
            {
                "name": "openrouter_keys",
                "plugin-class": "airflow_provider_openrouter.plugins.keys_page.OpenRouterKeysPlugin",
            }
        ],
        "connection-types": [
            {
                "connection-type": "openrouter",
                "hook-class-name": "airflow_provider_openrouter.hooks.openrouter.OpenRouterHook",
                "hook-name": "OpenRouter",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "Management key", "host": "Base URL"},
                    "placeholders": {
                        "password": "sk-or-v1-… (a management key)",
                        "host": DEFAULT_BASE_URL,
                    },
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
    }


# Declared once here: Airflow 3.2 and later read it above; the hook's get_connection_form_widgets, which only
# Airflow 3.1 calls (later ones skip it when conn-fields is declared), is built from it too.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "http_referer": {
        "label": "HTTP-Referer",
        "description": "Your app's URL, sent as HTTP-Referer for OpenRouter's app attribution.",
        "schema": {"type": ["string", "null"]},
    },
    "app_title": {
        "label": "App title",
        "description": "Your app's name, sent as X-OpenRouter-Title for OpenRouter's app attribution.",
        "schema": {"type": ["string", "null"]},
    },
    "app_categories": {
        "label": "App categories",
        "description": "Comma-separated categories, sent as X-OpenRouter-Categories.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Timeout for each HTTP request to OpenRouter.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0.1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "How many times a failed request that is safe to repeat is retried "
        "(rate limits, server errors, connection failures).",
        "schema": {"type": ["integer", "null"], "default": 3, "minimum": 0, "maximum": 20},
    },
    "max_retry_wait": {
        "label": "Max retry wait (seconds)",
        "description": "Upper bound on any single wait between retries, "
        "including one asked for by Retry-After.",
        "schema": {"type": ["number", "null"], "default": 60, "minimum": 0},
    },
    "workspace_id": {
        "label": "Default workspace ID",
        "description": "Workspace (UUID) used to list and create keys when a task names none. "
        "Empty means the account's default workspace.",
        "schema": {"type": ["string", "null"]},
    },
    "pages_in_flight": {
        "label": "Pages in flight",
        "description": "How many pages of a long key listing may be asked for at once "
        "(at most 10, the size of the hook's connection pool). 1 asks for one page at a time.",
        "schema": {"type": ["integer", "null"], "default": 8, "minimum": 1, "maximum": 10},
    },
}
