"""Redaction: the one function that makes a value safe to quote in an error message or a log line.

Three kinds of secret are replaced by ``***`` before any text built from user input is shown:

- anything shaped like an OpenRouter key (``sk-or-v1-…``, ``sk-or-mgmt-…``), whether it is a management key,
  a plaintext just issued, or a key pasted into the wrong field;
- the secrets this process has been told of (:func:`remember_secret`): the management key of every connection
  the provider has read, whatever its shape, so that a gateway's key of another form is covered too;
- credentials inside URLs (``https://user:password@host``).

Standard library only, so that :mod:`~airflow_provider_openrouter.exceptions` can use it for every message.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Final

MASK: Final = "***"
# A prefix and at least eight more characters: a masked label such as "sk-or-v1-abc...123" shows only three
# characters of the key and stays readable, while a whole key, or a key cut short, does not survive.
KEY_PATTERN: Final = re.compile(r"sk-or-[A-Za-z0-9]+-[A-Za-z0-9_\-]{8,}")
_URL_CREDENTIALS_RE: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_QUOTE_MAX = 80
# Shorter values are not worth remembering: masking them would blank out ordinary words.
_MIN_SECRET_LENGTH = 8

_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secret(secret: str | None) -> None:
    """Redact ``secret`` from every message from now on (called for each connection's management key)."""
    if secret and len(secret) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(secret)


def looks_like_key(text: str) -> bool:
    """Whether ``text`` holds something shaped like an OpenRouter key."""
    return bool(KEY_PATTERN.search(text))


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret in it (see the module docstring, plus ``secrets``) replaced by ``***``."""
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in (*(s for s in secrets if s), *known):
        # As written, and as repr() writes it (a quote or backslash in a key is escaped there).
        for form in {secret, repr(secret)[1:-1]}:
            if form in text:
                text = text.replace(form, MASK)
    text = KEY_PATTERN.sub(MASK, text)
    return _URL_CREDENTIALS_RE.sub(lambda m: m.group(1) + MASK + "@", text)


def quoted(value: Any, *secrets: str | None) -> str:
    """``repr(value)`` redacted, then shortened to fit in one line of an error message.

    Redaction comes first, so that shortening cannot leave a secret's head behind in a form the key pattern
    no longer recognises.
    """
    text = redact(repr(value), *secrets)
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."
