"""Registering plaintexts with Airflow's secrets masker, by the thousand.

The one place that reaches into the masker's private state (its pattern set, its compiled replacer and its
``_adaptations``) rather than calling ``mask_secret`` once per secret: a sync apply creates thousands of keys,
and each ``mask_secret`` recompiles one expression of every secret so far. Where the masker does not look as
expected (another Airflow version), every secret goes through ``mask_secret``: slower, never unmasked.
``tests/test_masking.py`` runs on every supported Airflow line.
"""

from __future__ import annotations

import re
from contextlib import suppress
from typing import Any


def mask_plaintexts(plaintexts: list[str]) -> None:
    """Register many new plaintexts with Airflow's secrets masker for the price of one.

    The masker keeps one regular expression of every secret masked so far and recompiles all of it whenever
    one is added: per key, about 0.65 KB kept and 6 KB while compiling, and O(n²) time when keys are masked
    one by one. OpenRouter's plaintexts all have one shape (``sk-or-v1-`` and 64 hex digits), and the
    provider already treats anything of that shape as a secret (its ``_redaction`` module), so the masker is
    given that shape once: every plaintext that the shape covers completely is masked by it,
    whatever their number, and any other (a key of another form) is added as itself. The supervisor is told
    of every plaintext in one message. Where the masker does not look as expected (another Airflow version),
    each secret goes through ``mask_secret``: slower, never unmasked.
    """
    from airflow.sdk import log as sdk_log

    from airflow_provider_openrouter._redaction import KEY_PATTERN

    try:  # the masker that mask_secret itself adds to, on every supported Airflow line
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    except ImportError:
        masker = None
    else:
        masker = _secrets_masker()
    patterns = getattr(masker, "patterns", None)
    adaptations = getattr(masker, "_adaptations", None)
    if not isinstance(patterns, set) or not hasattr(masker, "replacer") or not callable(adaptations):
        for secret in plaintexts:
            sdk_log.mask_secret(secret)
        return
    minimum = int(getattr(masker, "min_length_to_mask", 0) or 0)
    shape = KEY_PATTERN.pattern
    added = False
    for secret in plaintexts:
        for form in adaptations(secret):
            if not form or len(form) < minimum:
                continue
            # The shape matches greedily, so a form it matches whole is replaced whole wherever it appears.
            pattern = shape if KEY_PATTERN.fullmatch(form) else re.escape(form)
            if pattern not in patterns:
                patterns.add(pattern)
                added = True
    if added:
        masker.replacer = re.compile("|".join(patterns))  # type: ignore[union-attr]
    with suppress(Exception):
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import MaskSecret

        comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
        if comms is not None:
            comms.send(MaskSecret(value=list[Any](plaintexts), name=None))
