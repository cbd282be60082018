"""CreateApiKeyOperator's ``guardrail_id`` against the local OpenRouter: the key it delivers holds the
guardrail before the task succeeds, a key that cannot take it is deleted again, a reused key takes it too, and
a bad id fails before any request."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter.exceptions import GuardrailAssignmentError, OpenRouterValidationError
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator
from airflow_provider_openrouter.testing import Status

if TYPE_CHECKING:
    from airflow_provider_openrouter.models import CreatedApiKey
    from airflow_provider_openrouter.testing import LocalOpenRouter


@pytest.fixture
def fake(openrouter_conn_env: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch) -> LocalOpenRouter:
    for name, value in openrouter_conn_env.airflow_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    return openrouter_conn_env


def held() -> dict[str, str]:
    return {a.key_hash: a.guardrail_id for a in OpenRouterHook().list_key_assignments()}


def create(guardrail_id: Any, seen: list[dict[str, str]] | None = None, **kwargs: Any) -> dict[str, Any]:
    def deliver(created: CreatedApiKey, context: Any) -> None:
        # What the account holds at delivery: the guardrail must be there before the plaintext leaves.
        if seen is not None:
            seen.append(held())

    op = CreateApiKeyOperator(
        task_id="create", name="tenant-a", guardrail_id=guardrail_id, deliver_to_callable=deliver, **kwargs
    )
    return op.execute({})  # type: ignore[arg-type]


def test_the_delivered_key_holds_the_guardrail(fake: LocalOpenRouter) -> None:
    tier = OpenRouterHook().create_guardrail("tier", limit_usd=1, reset_interval="daily")
    seen: list[dict[str, str]] = []
    result = create(tier.id, seen)
    assert seen == [{result["hash"]: tier.id}]  # assigned while still a claim, before delivery
    assert held() == {result["hash"]: tier.id}


def test_a_key_that_cannot_take_the_guardrail_is_deleted(fake: LocalOpenRouter) -> None:
    tier = OpenRouterHook().create_guardrail("tier")
    fake.inject(Status(400, message="no"), method="POST", path=re.compile(r".*/assignments/keys"))
    seen: list[dict[str, str]] = []
    with pytest.raises(GuardrailAssignmentError, match="deleted again") as raised:
        create(tier.id, seen)
    assert raised.value.key_deleted
    assert seen == []  # never delivered
    assert fake.keys() == []


def test_reuse_assigns_the_existing_key(fake: LocalOpenRouter) -> None:
    hook = OpenRouterHook()
    tier = hook.create_guardrail("tier")
    first = create(None)
    assert held() == {}
    again = create(str(tier.id).upper(), if_exists="reuse")
    assert again["action"] == "reused"
    assert held() == {first["hash"]: tier.id}
    assert create(tier.id, if_exists="reuse")["hash"] == first["hash"]  # a repeat changes nothing


@pytest.mark.parametrize("bad", ["not-a-uuid", "", 42])
def test_a_bad_guardrail_id_fails_before_any_request(fake: LocalOpenRouter, bad: Any) -> None:
    with pytest.raises(OpenRouterValidationError, match="guardrail_id"):
        create(bad)
    op = CreateApiKeyOperator(
        task_id="t", name="tenant-a", guardrail_id="{{ params.g }}", push_plaintext_to_xcom=True
    )
    op.guardrail_id = bad if bad != "" else "   "  # as rendered
    with pytest.raises(OpenRouterValidationError, match="guardrail_id"):
        op.execute({})  # type: ignore[arg-type]
    assert fake.requests == []
