"""The ``openrouter`` Airflow connection: parsing it into a validated, immutable configuration.

The connection may come from the UI form, from ``AIRFLOW_CONN_<ID>`` in URI or JSON form, or from any secrets
backend. Whatever the source, the same rules apply and a bad field is reported by name before any request:

- ``password``: the management key (required);
- ``host``: the base URL, ``https://openrouter.ai/api/v1`` when empty. A bare host gets ``https://``
  (``http://`` for loopback addresses) and, without a path, ``/api/v1``; ``port`` and ``schema`` (the path
  part of a URI-form connection) are folded in when given;
- extras: see :data:`~airflow_provider_openrouter.get_provider_info.CONN_FIELDS`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_openrouter import _validation as v
from airflow_provider_openrouter._redaction import looks_like_key, quoted, redact, remember_secret
from airflow_provider_openrouter.exceptions import OpenRouterConnectionConfigError, OpenRouterValidationError
from airflow_provider_openrouter.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import Connection

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 60.0
DEFAULT_PAGES_IN_FLIGHT = 8
DEFAULT_PATH = "/api/v1"
# Older forms stored widget values under prefixed names; accept them so such connections keep working.
_LEGACY_PREFIX = "extra__openrouter__"


@dataclass(frozen=True, slots=True)
class OpenRouterConnectionConfig:
    """A validated ``openrouter`` connection. The management key is kept out of ``repr``."""

    conn_id: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    http_referer: str | None = None
    app_title: str | None = None
    app_categories: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT
    workspace_id: str | None = None
    pages_in_flight: int = DEFAULT_PAGES_IN_FLIGHT

    @classmethod
    def from_connection(cls, conn: Connection) -> OpenRouterConnectionConfig:
        """Validate a connection; :class:`OpenRouterConnectionConfigError` names the bad field."""
        conn_id = str(conn.conn_id)
        password = conn.password if isinstance(conn.password, str) else None
        # Known from now on, so that no message of this process can quote it, whatever its shape.
        remember_secret((password or "").strip())
        with _field_errors(conn_id):
            api_key = _api_key(password)
            base_url = _base_url(conn.host, port=conn.port, path=conn.schema, api_key=api_key)
            extras = _extras(conn_id, conn.extra)
            return cls(
                conn_id=conn_id,
                api_key=api_key,
                base_url=base_url,
                http_referer=_header_text(extras, "http_referer"),
                app_title=_header_text(extras, "app_title"),
                app_categories=_categories(extras),
                timeout=_seconds(extras, "timeout", DEFAULT_TIMEOUT),
                max_retries=_integer(extras, "max_retries", DEFAULT_MAX_RETRIES),
                max_retry_wait=_seconds(extras, "max_retry_wait", DEFAULT_MAX_RETRY_WAIT),
                workspace_id=v.validate_workspace_id(_present(extras, "workspace_id")),
                pages_in_flight=_integer(extras, "pages_in_flight", DEFAULT_PAGES_IN_FLIGHT),
            )


@contextmanager
def _field_errors(conn_id: str) -> Iterator[None]:
    """The field checks of :mod:`._validation` raise field errors; here they are errors of this connection."""
    try:
        yield
    except OpenRouterValidationError as exc:
        raise OpenRouterConnectionConfigError(conn_id, exc.field, exc.problem) from None


def _api_key(password: str | None) -> str:
    key = (password or "").strip()
    if not key:
        v.fail("password", "no management key: put an OpenRouter management key in the password field")
    # A key with whitespace or control characters inside would corrupt (or split) the Authorization header.
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        v.fail("password", "the management key contains whitespace or control characters")
    return key


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url_from(conn_id: str, host: str | None, *, port: int | None = None, path: str | None = None) -> str:
    """The API's base URL from a connection's host, port and schema (which a URI-form connection fills with
    the path), without a trailing slash."""
    with _field_errors(conn_id):
        return _base_url(host, port=port, path=path)


def _base_url(
    host: str | None, *, port: int | None = None, path: str | None = None, api_key: str | None = None
) -> str:
    if host is not None and not isinstance(host, str):
        v.fail("host", f"must be a URL (got {type(host).__name__})")
    text = (host or "").strip()
    if not text:
        if port or path:
            v.fail("host", "a port or path was given without a host")
        return DEFAULT_BASE_URL
    if looks_like_key(text) or (api_key and api_key in text):
        v.fail(
            "host",
            "holds an API key, not a URL: put the management key in the password field and leave the base "
            "URL empty for openrouter.ai",
        )
    shown = quoted(text, api_key)
    if "://" not in text:
        hostname = urlsplit("//" + text).hostname or ""
        text = ("http://" if _is_loopback(hostname) else "https://") + text
    try:
        parts = urlsplit(text)
        parsed_port = parts.port
    except ValueError as exc:
        v.fail("host", f"not a valid URL ({redact(str(exc), api_key)}): {shown}")
    if parts.scheme not in ("http", "https"):
        v.fail("host", f"the base URL must use http or https (got scheme {quoted(parts.scheme)})")
    if parts.username or parts.password:
        v.fail("host", "the base URL must not carry credentials; put the key in the password field")
    if not parts.hostname:
        v.fail("host", f"the base URL has no host name: {shown}")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        v.fail("host", f"the base URL must not contain spaces or control characters: {shown}")
    if parts.query or parts.fragment:
        v.fail("host", "the base URL must not have a query or fragment")
    netloc = parts.netloc
    if port is not None and parsed_port is None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            v.fail("port", f"must be a TCP port number from 1 to 65535 (got {quoted(port)})")
        netloc = f"{netloc}:{port}"
    url_path = parts.path.rstrip("/")
    extra_path = (path or "").strip().strip("/")
    if extra_path:
        url_path = f"{url_path}/{extra_path}"
    elif not parts.path:
        # OpenRouter serves its API under /api/v1; a bare host cannot be the base URL.
        url_path = DEFAULT_PATH
    return urlunsplit((parts.scheme, netloc, url_path, "", "")).rstrip("/")


def _extras(conn_id: str, raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        data: Any = dict(raw)
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            # The decoder's message names a position, never the text around it.
            v.fail("extra", f"not valid JSON ({exc.args[0]})")
    if not isinstance(data, dict):
        v.fail("extra", f"must be a JSON object (got {type(data).__name__})")
    extras: dict[str, Any] = {}
    for name, value in data.items():
        bare = str(name).removeprefix(_LEGACY_PREFIX)
        extras[bare] = value
        if bare not in CONN_FIELDS:
            close = difflib.get_close_matches(bare, CONN_FIELDS, n=1, cutoff=0.75)
            if close:
                log.warning(
                    "Connection %r: unknown extra field %s is ignored; did you mean %r?",
                    conn_id,
                    quoted(bare),
                    close[0],
                )
    return extras


def _present(extras: Mapping[str, Any], name: str) -> Any:
    """The value, or ``None`` when absent or empty: the connection form saves an untouched field as ``""``, so
    in the extras (and only there) an empty value means "use the default"."""
    value = extras.get(name)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _header_text(extras: Mapping[str, Any], name: str) -> str | None:
    value = _present(extras, name)
    return None if value is None else v.validate_header_text(value, field=name)


def _categories(extras: Mapping[str, Any]) -> str | None:
    value = _present(extras, "app_categories")
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            v.fail("app_categories", "a list of categories must hold strings")
        value = ",".join(value)
    text = _header_text({"app_categories": value}, "app_categories")
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    return ",".join(items) or None


def _seconds(extras: Mapping[str, Any], name: str, default: float) -> float:
    """A number of seconds within the bounds the connection form declares for it."""
    value = _present(extras, name)
    if value is None:
        return default
    schema = CONN_FIELDS[name]["schema"]
    return v.validate_seconds(
        value, field=name, minimum=schema.get("minimum", 0.0), maximum=schema.get("maximum", v.MAX_SECONDS)
    )


def _integer(extras: Mapping[str, Any], name: str, default: int) -> int:
    value = _present(extras, name)
    if value is None:
        return default
    schema = CONN_FIELDS[name]["schema"]
    return v.validate_int(value, field=name, minimum=schema.get("minimum", 0), maximum=schema.get("maximum"))


def connection_form_widgets() -> dict[str, Any]:
    """wtforms fields for the extras, built from :data:`CONN_FIELDS` (what Airflow 3.1 renders).

    wtforms and flask_appbuilder are imported here only: Airflow calls this where they are installed, and a
    missing one surfaces as the ``ImportError`` Airflow expects.
    """
    from wtforms import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        BooleanField,
        IntegerField,
        PasswordField,
        StringField,
    )
    from wtforms.validators import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        NumberRange,
        Optional,
    )

    try:
        from flask_appbuilder.fieldwidgets import (  # type: ignore[import-not-found,unused-ignore]
            BS3PasswordFieldWidget,
            BS3TextFieldWidget,
        )

        text_widget: Any = BS3TextFieldWidget()
        password_widget: Any = BS3PasswordFieldWidget()
    except ImportError:
        text_widget = password_widget = None

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        schema = spec.get("schema", {})
        types = schema.get("type", "string")
        types = [types] if isinstance(types, str) else list(types)
        common: dict[str, Any] = {"description": spec.get("description", "")}
        if "default" in schema:
            common["default"] = schema["default"]
        if "boolean" in types:
            widgets[name] = BooleanField(spec["label"], **common)
            continue
        if "integer" in types:
            bounds = NumberRange(min=schema.get("minimum"), max=schema.get("maximum"))
            common["validators"] = [Optional(), bounds]
            field_class: Any = IntegerField
        elif schema.get("format") == "password":
            field_class = PasswordField
        else:
            # Airflow accepts no FloatField: numbers are entered as text.
            field_class = StringField
            if "default" in common:
                common["default"] = str(common["default"])
        widget = password_widget if field_class is PasswordField else text_widget
        if widget is not None:
            common["widget"] = widget
        widgets[name] = field_class(spec["label"], **common)
    return widgets


def ui_field_behaviour() -> dict[str, Any]:
    """The provider info's ``ui-field-behaviour``, with the key names the hook method form uses."""
    from airflow_provider_openrouter.get_provider_info import get_provider_info

    for conn in get_provider_info()["connection-types"]:
        if conn["connection-type"] == "openrouter":
            return {key.replace("-", "_"): value for key, value in conn["ui-field-behaviour"].items()}
    return {}
