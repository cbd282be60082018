"""Registering plaintexts with Airflow's secrets masker, by the thousand, at a flat cost per key.

Two processes mask a task's secrets. The task process's masker redacts what it sends the API server itself
(its rendered template fields); its supervisor's masker redacts every log line and every line of stdout and
stderr the task process sends it. Airflow's ``mask_secret`` adds a secret to both, and both keep one regular
expression of every secret so far, recompiled whole each time one is added: a task that creates n keys pays
for n compilations of up to n patterns, O(n²).

The task process's masker is reached directly: it is given the shape of OpenRouter's plaintexts once (see
:func:`mask_plaintexts`), which covers them all. The supervisor cannot be reached that way: it hears of
secrets only through messages, and compiles once per secret in any message. So rather than telling it of
each plaintext, this process redacts everything it sends the supervisor before it leaves (its structured
logs, its standard library logs, its stdout and stderr) with its own masker, the one holding the shape. The
supervisor is still told of every plaintext where this cannot be done, or where it would not be enough:
another Airflow whose logging does not look as expected, or DEBUG logging, at which the supervisor logs the
body of each message it receives (a Variable's value among them).

The module reaches into the masker's private state (its pattern set, its compiled replacer, its
``_adaptations``) and into the task process's logging configuration; ``tests/unit/test_masking.py`` and
``tests/unit/test_masking_scale.py`` run on every supported Airflow line.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from contextlib import suppress
from typing import Any, TextIO

# The supervisor logs the body of every message it receives at this level (a plaintext being delivered to a
# Variable among them), so there it must know every plaintext whatever the cost.
_BODIES_LOGGED = "debug"
_install_lock = threading.Lock()


def mask_plaintexts(plaintexts: list[str]) -> None:
    """Register many new plaintexts with Airflow's secrets masking for the price of one.

    OpenRouter's plaintexts all have one shape (``sk-or-v1-`` and 64 hex digits), and the provider already
    treats anything of that shape as a secret (its ``_redaction`` module), so this process's masker is given
    that shape once: every plaintext that the shape covers completely is masked by it, whatever their
    number, and any other (a key of another form) is added as itself. The supervisor is told of none of them
    when this process redacts all it sends the supervisor (see the module docstring), and of all of them, in
    one message, otherwise. Where the masker does not look as expected (another Airflow version), each secret
    goes through ``mask_secret``: slower, never unmasked.
    """
    masker = _task_masker()
    if masker is None:
        from airflow.sdk import log as sdk_log

        for secret in plaintexts:
            sdk_log.mask_secret(secret)
        return
    _add_patterns(masker, plaintexts)
    comms = _supervisor_comms()
    if comms is None or (_supervisor_logs_bodies() is False and _redact_outgoing(masker)):
        return
    with suppress(Exception):
        from airflow.sdk.execution_time.comms import MaskSecret

        comms.send(MaskSecret(value=list[Any](plaintexts), name=None))


def _task_masker() -> Any:
    """The masker that ``mask_secret`` adds to, if it looks as this module expects."""
    try:  # its home on every supported Airflow line
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    except ImportError:
        return None
    masker = _secrets_masker()
    patterns = getattr(masker, "patterns", None)
    adaptations = getattr(masker, "_adaptations", None)
    if not isinstance(patterns, set) or not hasattr(masker, "replacer") or not callable(adaptations):
        return None
    return masker


def _add_patterns(masker: Any, plaintexts: list[str]) -> None:
    from airflow_provider_openrouter._redaction import KEY_PATTERN

    patterns: set[str] = masker.patterns
    minimum = int(getattr(masker, "min_length_to_mask", 0) or 0)
    shape = KEY_PATTERN.pattern
    added = False
    for secret in plaintexts:
        for form in masker._adaptations(secret):
            if not form or len(form) < minimum:
                continue
            # The shape matches greedily, so a form it matches whole is replaced whole wherever it appears.
            pattern = shape if KEY_PATTERN.fullmatch(form) else re.escape(form)
            if pattern not in patterns:
                patterns.add(pattern)
                added = True
    if added:
        masker.replacer = re.compile("|".join(patterns))


def _supervisor_comms() -> Any:
    with suppress(Exception):
        from airflow.sdk.execution_time import task_runner

        return getattr(task_runner, "SUPERVISOR_COMMS", None)
    return None


def _supervisor_logs_bodies() -> bool | None:
    """Whether the supervisor may log message bodies (``None``: unknown, so assume it does)."""
    try:
        try:  # a worker with the Task SDK alone has no airflow.configuration
            from airflow.sdk.configuration import conf
        except ImportError:
            from airflow.configuration import conf

        level = str(conf.get("logging", "logging_level", fallback="INFO"))
        namespaces = str(conf.get("logging", "namespace_levels", fallback="") or "")
    except Exception:
        return None
    return _BODIES_LOGGED in f"{level} {namespaces}".lower()


def _redact_outgoing(masker: Any) -> bool:
    """Make this process redact, with ``masker``, everything it sends its supervisor; ``False`` if it cannot.

    Idempotent, and checked on every call: a logging reconfiguration replaces what was installed.
    """
    try:
        import structlog
        from structlog.stdlib import ProcessorFormatter
    except ImportError:
        return False
    with _install_lock:
        processors = structlog.get_config().get("processors")
        # Airflow ends the chain with the renderer that writes to the supervisor: redaction goes just before
        # it, where Airflow puts its own masking in a process that writes its logs itself.
        if not isinstance(processors, list) or not processors:
            return False
        if _mask_event not in processors:
            processors.insert(len(processors) - 1, _mask_event)
        for handler in _stdlib_handlers():
            formatter = handler.formatter
            chain = getattr(formatter, "processors", None)
            if isinstance(formatter, ProcessorFormatter) and isinstance(chain, list) and chain:
                if _mask_event not in chain:
                    chain.insert(len(chain) - 1, _mask_event)
            elif isinstance(masker, logging.Filter):
                if masker not in handler.filters:
                    handler.addFilter(masker)
            else:
                return False
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _RedactingStream):
                setattr(sys, name, _RedactingStream(stream))
    return True


def _mask_event(logger: Any, method_name: str, event_dict: Any) -> Any:
    from airflow.sdk._shared.secrets_masker import redact

    return redact(event_dict)


def _stdlib_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        candidate
        for candidate in logging.root.manager.loggerDict.values()
        if isinstance(candidate, logging.Logger)
    ]
    seen: dict[int, logging.Handler] = {}
    for each in loggers:
        for handler in each.handlers:
            seen.setdefault(id(handler), handler)
    return list(seen.values())


class _RedactingStream:
    """A text stream that writes whole lines, redacted, to another: a secret written in pieces is masked
    all the same, as the supervisor would mask the line it makes of them."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                complete, _, self._pending = self._pending.rpartition("\n")
                self._target.write(_redact_text(complete + "\n"))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._target.write(_redact_text(self._pending))
                self._pending = ""
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _redact_text(text: str) -> str:
    from airflow.sdk._shared.secrets_masker import redact

    return str(redact(text))
