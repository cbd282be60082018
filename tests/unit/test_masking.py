"""The batch masking of new plaintexts, against the real secrets masker of the Airflow line under test."""

from __future__ import annotations

import secrets
from typing import Any

from airflow.sdk._shared.secrets_masker import _secrets_masker

from airflow_provider_openrouter._masking import mask_plaintexts


def masker() -> Any:
    return _secrets_masker()


def new_plaintext() -> str:
    return f"sk-or-v1-{secrets.token_hex(32)}"


def test_a_thousand_plaintexts_add_one_pattern_and_every_one_is_masked() -> None:
    before = set(masker().patterns)
    plaintexts = [new_plaintext() for _ in range(1000)]

    mask_plaintexts(plaintexts)

    # One pattern for the whole batch, whatever its size: the masker's expression does not grow per key
    # (per-key patterns made a sync apply's masking quadratic). Counted, not timed.
    assert len(set(masker().patterns) - before) <= 1
    line = f"created {plaintexts[0]} and {plaintexts[499]}, last {plaintexts[-1]}"
    redacted = masker().redact(line)
    assert all(plaintext not in redacted for plaintext in plaintexts)
    assert redacted.startswith("created ")


def test_a_plaintext_of_another_shape_is_masked_as_itself() -> None:
    odd = f"odd-secret-{secrets.token_hex(12)}"
    usual = new_plaintext()

    mask_plaintexts([odd, usual])

    redacted = masker().redact(f"one {odd} two {usual} three")
    assert odd not in redacted
    assert usual not in redacted
    assert redacted.startswith("one ")
    assert "three" in redacted
