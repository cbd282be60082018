"""Errors raised by the OpenRouter provider.

::

    OpenRouterError
     ├─ OpenRouterValidationError        bad input, found before any request (also a ValueError)
     ├─ OpenRouterConnectionConfigError  the Airflow connection is unusable (also a ValueError)
     ├─ KeyNameNotUniqueError            a name matches more than one key
     ├─ ApiKeyExistsError                a create with if_exists="fail" found the name taken
     ├─ ApiKeyNotFoundError              no key has the hash or name an operator targets
     ├─ PlaintextDeliveryError           a new key's plaintext could not be delivered (says what became of it)
     ├─ ClaimHeldError                   another task is still creating the key under that name
     ├─ SyncRefusedError                 a sync would change more than allowed, or the account moved on
     ├─ OpenRouterKeyUnavailableError    a watched key is disabled, expired or deleted (fails without retry)
     ├─ OpenRouterTransportError         no usable HTTP answer: connect failure, timeout, dropped connection
     └─ OpenRouterAPIError               OpenRouter answered with an error status
         ├─ BadRequestError            400
         ├─ AuthenticationError        401
         ├─ PaymentRequiredError       402
         ├─ ForbiddenError             403
         ├─ NotFoundError              404
         ├─ ConflictError              409
         ├─ RateLimitedError           429 (``retry_after`` in seconds, when the server said)
         ├─ ServerError                5xx
         └─ UnreadableResponseError    a body that is not the JSON the API promises

Messages carry the HTTP method, the path, the status and OpenRouter's own message, and never a credential:
requests are identified by method and path only, the path of the key endpoints holds only key hashes, and
every message passes through :func:`~airflow_provider_openrouter._redaction.redact` (anything shaped like an
OpenRouter key, the management keys this process has read, credentials inside URLs) on its way in.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter._redaction import quoted, redact

if TYPE_CHECKING:
    from collections.abc import Mapping

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowException,
        AirflowFailException,
    )


class OpenRouterError(AirflowException):
    """Base class of every error this provider raises. Its message is redacted of secrets."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class OpenRouterValidationError(OpenRouterError, ValueError):
    """An argument is invalid; raised before any request is made."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class OpenRouterConnectionConfigError(OpenRouterError, ValueError):
    """The Airflow connection cannot be used (no key, malformed extras, ...)."""

    def __init__(self, conn_id: str, field: str, problem: str) -> None:
        self.conn_id = conn_id
        self.field = field
        self.problem = problem
        super().__init__(f"Connection {conn_id!r}, field {field!r}: {problem}")


class KeyNameNotUniqueError(OpenRouterError):
    """More than one key carries the name that was asked for."""

    def __init__(self, name: str, hashes: list[str]) -> None:
        self.name = name
        self.hashes = hashes
        super().__init__(
            f"{len(hashes)} keys are named {quoted(name)} ({', '.join(h[:12] + '…' for h in hashes)}); "
            "target one by its hash instead"
        )


class ApiKeyExistsError(OpenRouterError):
    """``if_exists="fail"`` and a key with the requested name already exists."""

    def __init__(self, name: str, hashes: list[str]) -> None:
        self.name = name
        self.hashes = hashes
        super().__init__(
            f"A key named {quoted(name)} already exists (hash {', '.join(hashes)}) and if_exists='fail'. "
            "Use if_exists='reuse' to keep it or if_exists='replace' to rotate it."
        )


class ApiKeyNotFoundError(OpenRouterError):
    """No key carries the name an operator was asked to act on."""

    def __init__(self, *, key_hash: str | None = None, key_name: str | None = None) -> None:
        self.key_hash = key_hash
        self.key_name = key_name
        super().__init__(
            f"No key with hash {key_hash} exists" if key_hash else f"No key named {quoted(key_name)} exists"
        )


class PlaintextDeliveryError(OpenRouterError):
    """A new key's plaintext could not be delivered; the message says what became of the key.

    ``key_hash`` is the key that was created, ``key_deleted`` whether it was deleted again (so that no key
    exists whose plaintext nobody has), ``delivered_to`` the destinations that had already received it.
    """

    def __init__(self, message: str, *, key_hash: str, key_deleted: bool, delivered_to: list[str]) -> None:
        self.key_hash = key_hash
        self.key_deleted = key_deleted
        self.delivered_to = delivered_to
        super().__init__(message)


class GuardrailAssignmentError(OpenRouterError):
    """A key could not be assigned to its guardrail. ``key_deleted``: a new key was deleted again before its
    plaintext was delivered (a reused key is never deleted)."""

    def __init__(self, message: str, *, key_hash: str, key_deleted: bool) -> None:
        super().__init__(message)
        self.key_hash = key_hash
        self.key_deleted = key_deleted


class ClaimHeldError(OpenRouterError):
    """Another try holds a claim on the name (it is creating and delivering that key) past this try's wait."""

    def __init__(self, name: str, holders: list[str], until: float) -> None:
        self.name = name
        self.holders = holders
        self.until = until
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
        super().__init__(
            f"Another task is creating the key {name!r} right now (claim {', '.join(holders)}, held until "
            f"{moment} at the latest): not creating a second one. A retry after that time finds the key, "
            "or, if that task died, removes its claim."
        )


class SyncRefusedError(OpenRouterError):
    """The sync would change more than allowed, or the account changed since the approved plan."""


class OpenRouterKeyUnavailableError(OpenRouterError, AirflowFailException):
    """The watched key is disabled, expired or deleted, so its usage can no longer reach the threshold.

    A failure without retries (the key will not come back by retrying); ``soft_fail`` turns it into a skip.
    ``reason`` is ``"disabled"``, ``"expired"`` or ``"deleted"``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class OpenRouterTransportError(OpenRouterError):
    """The request got no HTTP answer.

    ``reached_server`` is ``False`` when the connection was never established (the server cannot have acted on
    the request), ``None`` when that is unknown (a timeout or a connection dropped after sending).
    """

    def __init__(self, method: str, path: str, detail: str, *, reached_server: bool | None) -> None:
        self.method = method
        self.path = path
        self.detail = detail
        self.reached_server = reached_server
        super().__init__(f"{method} {path} failed: {detail}")


class OpenRouterAPIError(OpenRouterError):
    """OpenRouter answered with an error status."""

    status: int

    def __init__(
        self,
        status: int,
        message: str,
        *,
        method: str,
        path: str,
        code: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        # OpenRouter's message may quote what it was sent.
        self.message = message = redact(message)
        self.method = method
        self.path = path
        self.code = code
        self.metadata = dict(metadata) if metadata else None
        super().__init__(f"{method} {path} returned {status}: {message}")


class BadRequestError(OpenRouterAPIError):
    """400: OpenRouter rejected the request's parameters."""


class AuthenticationError(OpenRouterAPIError):
    """401: the key is missing, invalid or disabled."""


class PaymentRequiredError(OpenRouterAPIError):
    """402: the account or key has run out of credit."""


class ForbiddenError(OpenRouterAPIError):
    """403: the key may not do this (e.g. a regular key calling a management endpoint)."""


class NotFoundError(OpenRouterAPIError):
    """404: no such key."""


class ConflictError(OpenRouterAPIError):
    """409: the change conflicts with the key's current state."""


class RateLimitedError(OpenRouterAPIError):
    """429: too many requests. ``retry_after`` is the server's requested wait in seconds, if it gave one."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(status, message, **kwargs)


class ServerError(OpenRouterAPIError):
    """5xx: OpenRouter (or a proxy in front of it) failed."""


class UnreadableResponseError(OpenRouterAPIError):
    """The answer is not the JSON the API promises (an HTML proxy page, a truncated body, a missing field)."""


#: The failures that say nothing about the request: no answer, a 5xx, or an answer that cannot be read (the
#: network, OpenRouter or a proxy in front of it). A read may go through when asked again; a write may or may
#: not have happened.
NO_CLEAR_ANSWER: tuple[type[OpenRouterError], ...] = (
    OpenRouterTransportError,
    ServerError,
    UnreadableResponseError,
)


_BY_STATUS: dict[int, type[OpenRouterAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}

_EXCERPT = 200


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    ``None`` when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _error_body(body_text: str) -> tuple[str, int | None, Mapping[str, Any] | None] | None:
    try:
        body = json.loads(body_text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    code = error.get("code")
    metadata = error.get("metadata")
    return (
        str(message) if message else "(no message)",
        code if isinstance(code, int) else None,
        metadata if isinstance(metadata, dict) else None,
    )


def _excerpt(body_text: str) -> str:
    text = " ".join(body_text.split())
    return text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")


def api_error_from_response(
    status: int,
    body_text: str,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
) -> OpenRouterAPIError:
    """Map an error answer to the exception that names its meaning. The one place where this is decided.

    The status decides the class even when the body is not JSON: a proxy's HTML page in front of a 502 is
    still a server error (and so retryable), not a parsing bug.
    """
    parsed = _error_body(body_text)
    if parsed is None:
        message = f"non-JSON error body: {_excerpt(body_text)!r}" if body_text.strip() else "empty error body"
        code: int | None = None
        metadata: Mapping[str, Any] | None = None
    else:
        message, code, metadata = parsed
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else OpenRouterAPIError)
    if cls is RateLimitedError:
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        return RateLimitedError(
            status, message, retry_after=retry_after, method=method, path=path, code=code, metadata=metadata
        )
    return cls(status, message, method=method, path=path, code=code, metadata=metadata)
