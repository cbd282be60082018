"""Fleet alerts: what one walk finds, which of it is new, the one message, and the operator end to end
against a local OpenRouter and a real SMTP server on loopback (through Airflow's SMTP provider)."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from airflow_provider_openrouter import _fleet
from airflow_provider_openrouter._fleet import FleetChecks, Scan, mark_new, message, next_state, read_state
from airflow_provider_openrouter.exceptions import OpenRouterError, OpenRouterValidationError
from airflow_provider_openrouter.models import ApiKey, Credits
from airflow_provider_openrouter.operators.fleet_alerts import ApiKeyAlertsOperator, StateStore
from tests.smtp_server import running_smtp_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from tests.smtp_server import SmtpServer

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
DAY = 86400.0


def make_key(name: str, **fields: Any) -> ApiKey:
    data: dict[str, Any] = {
        "hash": (name.encode().hex() + "0" * 64)[:64],
        "name": name,
        "label": "sk-or-v1-abc...xyz",
        "disabled": False,
        "limit": None,
        "limit_remaining": None,
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": 0.0,
        "usage_daily": 0.0,
        "usage_weekly": 0.0,
        "usage_monthly": 0.0,
        "byok_usage": 0.0,
        "byok_usage_daily": 0.0,
        "byok_usage_weekly": 0.0,
        "byok_usage_monthly": 0.0,
        "created_at": "2026-11-01T00:00:00Z",
    }
    data.update(fields)
    return ApiKey.from_api(data)


def scan(keys: list[ApiKey], now: dt.datetime = NOW, **checks: Any) -> Scan:
    result = Scan(FleetChecks(**checks), now)
    for key in keys:
        result.add(key)
    return result


# ------------------------------------------------------------------------------------------- finding ---


def test_usage_is_measured_in_the_window_the_limit_resets_in() -> None:
    keys = [
        make_key("daily-hot", limit=10.0, limit_reset="daily", usage_daily=8.0, usage_monthly=8.0, usage=8.0),
        make_key("monthly-cool", limit=100.0, limit_reset="monthly", usage_daily=9.0, usage_monthly=50.0),
        make_key("lifetime-hot", limit=20.0, usage=19.0),
        make_key(
            "byok-counted",
            limit=10.0,
            limit_reset="weekly",
            include_byok_in_limit=True,
            usage_weekly=5.0,
            byok_usage_weekly=3.5,
        ),
        make_key("no-limit", usage=1e6),
    ]
    found = scan(keys, limit_fraction_at_least=0.8).findings
    assert [(f["key_name"], f["usage_window"], f["window"]) for f in found] == [
        ("daily-hot", "daily", "2026-12-07"),
        ("lifetime-hot", "lifetime", "lifetime"),
        ("byok-counted", "weekly", "week-of-2026-12-07"),
    ]
    assert found[2]["usage"] == pytest.approx(8.5)
    assert found[2]["fraction"] == pytest.approx(0.85)


def test_expiry_disabled_and_credits_findings() -> None:
    soon = (NOW + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (NOW + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gone = (NOW - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    keys = [
        make_key("soon", expires_at=soon),
        make_key("later", expires_at=later),
        make_key("gone", expires_at=gone, limit=1.0, usage=1.0),
        make_key("off", disabled=True, limit=1.0, usage=1.0),
        make_key("t [pending delivery abc until 1]", disabled=True),
    ]
    result = scan(
        keys,
        limit_fraction_at_least=0.5,
        expires_within=dt.timedelta(days=7),
        report_disabled=True,
        credits_below=10,
    )
    result.add_credits(Credits.from_api({"total_credits": 100.0, "total_usage": 95.0}))
    summary = [(f["condition"], f.get("key_name")) for f in result.findings]
    # The expired and the disabled key spend no more: their state is reported, not their usage.
    assert summary == [("expiring", "soon"), ("expiring", "gone"), ("disabled", "off"), ("credits", None)]
    assert result.keys_checked == 4
    assert result.findings[1]["expired"] is True
    assert result.findings[0]["seconds_left"] == pytest.approx(3 * DAY)
    assert result.findings[3]["remaining"] == pytest.approx(5.0)


def test_window_ids() -> None:
    sunday = dt.datetime(2026, 12, 13, 23, 59, tzinfo=dt.timezone.utc)
    assert _fleet.window_id("weekly", sunday) == "week-of-2026-12-07"
    assert _fleet.window_id("monthly", sunday) == "2026-12"
    assert _fleet.window_id("daily", sunday) == "2026-12-13"
    assert _fleet.window_id(None, sunday) == "lifetime"


# ------------------------------------------------------------------------------------------ deduplication ---


def run_once(
    state: dict[str, Any], keys: list[ApiKey], run_id: str, now: dt.datetime = NOW, **checks: Any
) -> tuple[list[str], dict[str, Any]]:
    result = scan(keys, now, **checks)
    to_send = mark_new(result.findings, state, run_id)
    new_state = next_state(state, to_send, result.live, run_id=run_id, walked_at=now, now=now)
    return [f["key_name"] for f in to_send], new_state


def test_an_occurrence_is_reported_once_per_window_and_again_in_the_next() -> None:
    hot = make_key("hot", limit=10.0, limit_reset="daily", usage_daily=9.0)
    sent, state = run_once(_fleet.empty_state(), [hot], "r1", limit_fraction_at_least=0.8)
    assert sent == ["hot"]
    sent, state = run_once(state, [hot], "r2", limit_fraction_at_least=0.8)
    assert sent == []
    # The next day is a new window: the old occurrence is forgotten, the new one reported.
    sent, state = run_once(state, [hot], "r3", NOW + dt.timedelta(days=1), limit_fraction_at_least=0.8)
    assert sent == ["hot"]
    assert list(state["reported"]) == [f"usage:{hot.hash}:2026-12-08:10"]


def test_a_raised_limit_crossed_again_is_a_new_occurrence() -> None:
    sent, state = run_once(
        _fleet.empty_state(), [make_key("k", limit=10.0, usage=9.0)], "r1", limit_fraction_at_least=0.8
    )
    sent, state = run_once(state, [make_key("k", limit=20.0, usage=17.0)], "r2", limit_fraction_at_least=0.8)
    assert sent == ["k"]


def test_a_key_disabled_again_after_being_enabled_is_reported_again() -> None:
    off, on = make_key("k", disabled=True), make_key("k")
    sent, state = run_once(_fleet.empty_state(), [off], "r1", report_disabled=True)
    assert sent == ["k"]
    assert run_once(state, [off], "r2", report_disabled=True)[0] == []
    _, state = run_once(state, [on], "r3", report_disabled=True)
    assert state["reported"] == {}
    assert run_once(state, [off], "r4", report_disabled=True)[0] == ["k"]


def test_an_expiry_is_reported_once_and_once_more_after_it_is_moved() -> None:
    soon = (NOW + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    moved = (NOW + dt.timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _sent, state = run_once(
        _fleet.empty_state(), [make_key("k", expires_at=soon)], "r1", expires_within=7 * DAY
    )
    # Still the same expiry, now passed: no second alert for it.
    later = NOW + dt.timedelta(days=3)
    assert run_once(state, [make_key("k", expires_at=soon)], "r2", later, expires_within=7 * DAY)[0] == []
    assert run_once(state, [make_key("k", expires_at=moved)], "r3", expires_within=7 * DAY)[0] == ["k"]


def test_a_retry_of_the_same_run_does_not_send_again_but_returns_its_findings_as_new() -> None:
    hot = make_key("hot", limit=10.0, usage=9.0)
    _, state = run_once(_fleet.empty_state(), [hot], "r1", limit_fraction_at_least=0.8)
    result = scan([hot], limit_fraction_at_least=0.8)
    assert mark_new(result.findings, state, "r1") == []
    assert result.findings[0]["new"] is True
    mark_new(result.findings, state, "r2")
    assert result.findings[0]["new"] is False


def test_overlapping_runs_keep_each_others_records() -> None:
    walked = NOW
    mine = {"version": 1, "reported": {}}
    # Another run recorded a key this walk never saw (created after it began); an ended one is dropped.
    latest = {
        "version": 1,
        "reported": {
            "usage:new:2026-12-07:5": {"run_id": "other", "at": "2026-12-07T12:00:05.000000Z"},
            "disabled:ended": {"run_id": "old", "at": "2026-12-01T00:00:00.000000Z"},
        },
    }
    finding = {"fingerprint": "expiring:x:2026-12-09T00:00:00Z"}
    state = next_state(latest, [finding], {finding["fingerprint"]}, run_id="me", walked_at=walked, now=walked)
    assert set(state["reported"]) == {"usage:new:2026-12-07:5", "expiring:x:2026-12-09T00:00:00Z"}
    assert mine["reported"] == {}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, None),
        ("{", "not JSON"),
        ("[]", "not a version 1"),
        ('{"version": 2, "reported": {}}', "version"),
    ],
)
def test_an_unreadable_state_starts_empty(raw: str | None, problem: str | None) -> None:
    state, found = read_state(raw)
    assert state == _fleet.empty_state()
    assert (found is None) if problem is None else (problem in str(found))


def test_the_message_lists_keys_and_figures_and_escapes_names() -> None:
    keys = [make_key("<b>hot</b>", limit=10.0, usage=9.0)]
    result = scan(keys, limit_fraction_at_least=0.8)
    alert = message(result.findings, scope="keys named t*", checked_at=NOW)
    assert alert["subject"] == "OpenRouter alerts for keys named t*: 1 key at or near the limit"
    assert "$9.00 used in the lifetime window (lifetime) is 90 % of its $10.00 limit" in alert["text"]
    assert "&lt;b&gt;hot&lt;/b&gt;" in alert["html"]
    assert "<b>hot</b>" not in alert["html"]
    assert keys[0].hash[:12] in alert["text"]
    json.dumps(alert)


# ------------------------------------------------------------------------------------------- bad input ---


class Recorder(BaseNotifier):
    template_fields = ("subject",)

    def __init__(self, subject: str = "{{ fleet_alerts.subject }}") -> None:
        super().__init__()
        self.subject = subject
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def notify(self, context: Any) -> None:
        # Copies share this list with the original: what every copy sent is seen here.
        self.sent.append((self.subject, context["fleet_alerts"]))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"notifier": "smtp"}, "notifier"),
        ({"notifier": []}, "notifier"),
        ({"limit_fraction_at_least": 1.5}, "limit_fraction_at_least"),
        ({"limit_fraction_at_least": 0}, "limit_fraction_at_least"),
        ({"limit_fraction_at_least": "lots"}, "limit_fraction_at_least"),
        ({"expires_within": -1}, "expires_within"),
        ({"expires_within": float("nan")}, "expires_within"),
        ({"credits_below": -5}, "credits_below"),
        ({"report_disabled": "yes"}, "report_disabled"),
        ({"name_prefix": ""}, "name_prefix"),
        ({"name_prefix": "a\nb"}, "name_prefix"),
        ({"workspace_id": "not-a-uuid"}, "workspace_id"),
        ({"state_variable": ""}, "state_variable"),
        ({"openrouter_conn_id": "bad id"}, "openrouter_conn_id"),
        ({"limit_fraction_at_least": None}, "limit_fraction_at_least/expires_within"),
    ],
)
def test_bad_input_is_refused_at_parse_time_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    arguments = {"task_id": "alerts", "notifier": Recorder(), "limit_fraction_at_least": 0.8, **kwargs}
    with pytest.raises(OpenRouterValidationError) as info:
        ApiKeyAlertsOperator(**arguments)
    assert info.value.field.startswith(field)


def test_a_template_is_checked_once_rendered_before_any_request(local_openrouter: LocalOpenRouter) -> None:
    operator = ApiKeyAlertsOperator(
        task_id="alerts", notifier=Recorder(), limit_fraction_at_least="{{ params.share }}"
    )
    operator.limit_fraction_at_least = "2"  # what the template rendered to
    before = len(local_openrouter.requests)
    with pytest.raises(OpenRouterValidationError, match="limit_fraction_at_least"):
        operator.execute({"run_id": "r"})
    assert len(local_openrouter.requests) == before


# ------------------------------------------------------------------------------------ against a real SMTP ---


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


class MemoryStore(StateStore):
    def __init__(self, name: str, texts: dict[str, str], fail_writes: bool = False) -> None:
        super().__init__(name)
        self.texts, self.fail_writes = texts, fail_writes

    def read(self) -> str | None:
        return self.texts.get(self.name)

    def write(self, text: str) -> None:
        if self.fail_writes:
            raise RuntimeError("the metadata database is down")
        self.texts[self.name] = text


class Alerts(ApiKeyAlertsOperator):
    """The operator with its state in memory: the Variable API needs a task runner."""

    texts: dict[str, str]
    fail_writes = False

    def state_store(self, name: str) -> StateStore:
        return MemoryStore(name, self.texts, self.fail_writes)


@pytest.fixture
def fleet(local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Any:
    for name, value in {**local_openrouter.airflow_env(), **smtp_server.airflow_env()}.items():
        monkeypatch.setenv(name, value)
    fake = local_openrouter
    hot = fake.add_key("tenant-hot", limit=10.0, limit_reset="daily")
    fake.add_usage(hot.api_key.hash, 8.5)
    expiring = fake.add_key("tenant-expiring", expires_at=fake.now + dt.timedelta(days=3))
    quiet = fake.add_key("tenant-quiet", limit=10.0, limit_reset="daily")
    fake.add_usage(quiet.api_key.hash, 1.0)
    other = fake.add_key("other-hot", limit=1.0)
    fake.add_usage(other.api_key.hash, 1.0)
    return {"hot": hot, "expiring": expiring, "quiet": quiet, "other": other}


def smtp_alerts(texts: dict[str, str], **kwargs: Any) -> Alerts:
    operator = Alerts(
        task_id="alerts",
        notifier=SmtpNotifier(
            to="platform@example.com",
            subject="{{ fleet_alerts.subject }}",
            html_content="{{ fleet_alerts.html }}",
            smtp_conn_id="smtp_default",
        ),
        name_prefix="tenant-",
        limit_fraction_at_least=0.8,
        expires_within=dt.timedelta(days=7),
        **kwargs,
    )
    operator.texts = texts
    return operator


def test_one_e_mail_per_run_naming_the_keys_then_none(
    fleet: dict[str, Any], smtp_server: SmtpServer, local_openrouter: LocalOpenRouter
) -> None:
    texts: dict[str, str] = {}
    first = smtp_alerts(texts).execute({"run_id": "run-1"})
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["platform@example.com"]
    assert "1 key at or near the limit" in mail.subject
    assert "1 key expiring" in mail.subject
    assert "tenant-hot" in mail.body
    assert "85 %" in mail.body
    assert "$10.00 limit" in mail.body
    assert "tenant-expiring" in mail.body
    assert "tenant-quiet" not in mail.body
    assert "other-hot" not in mail.body
    for plaintext in local_openrouter.issued_plaintexts:
        assert plaintext not in mail.body
        assert plaintext not in json.dumps(first)
    assert first["sent"] == 2
    assert first["keys_checked"] == 3
    assert {(f["condition"], f["key_name"], f["new"]) for f in first["findings"]} == {
        ("usage", "tenant-hot", True),
        ("expiring", "tenant-expiring", True),
    }
    json.dumps(first)

    second = smtp_alerts(texts).execute({"run_id": "run-2"})
    assert second["sent"] == 0
    assert all(not f["new"] for f in second["findings"])
    time.sleep(0.3)
    assert len(smtp_server.received()) == 1


def test_a_new_occurrence_is_sent_alone(
    fleet: dict[str, Any], smtp_server: SmtpServer, local_openrouter: LocalOpenRouter
) -> None:
    texts: dict[str, str] = {}
    smtp_alerts(texts).execute({"run_id": "run-1"})
    local_openrouter.add_usage(fleet["quiet"].api_key.hash, 8.0)
    smtp_alerts(texts).execute({"run_id": "run-2"})
    _first, second = smtp_server.wait_for(2)
    assert "tenant-quiet" in second.body
    assert "tenant-hot" not in second.body
    assert "tenant-expiring" not in second.body


def test_a_failed_send_records_nothing_and_the_retry_sends(
    fleet: dict[str, Any], smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: dict[str, str] = {}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        "smtp://127.0.0.1:9/?disable_ssl=true&disable_tls=true"
        "&from_email=a%40example.com&timeout=2&retry_limit=0",
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the SMTP provider raises
        smtp_alerts(texts).execute({"run_id": "run-1"})
    assert texts == {}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_uri())
    assert smtp_alerts(texts).execute({"run_id": "run-1"})["sent"] == 2
    assert len(smtp_server.wait_for(1)) == 1


def test_a_failed_state_write_after_a_send_says_the_retry_sends_again(
    fleet: dict[str, Any], smtp_server: SmtpServer
) -> None:
    texts: dict[str, str] = {}
    operator = smtp_alerts(texts)
    operator.fail_writes = True
    with pytest.raises(
        OpenRouterError, match=r"were sent, but recording them .* a retry will send them again"
    ):
        operator.execute({"run_id": "run-1"})
    assert len(smtp_server.wait_for(1)) == 1
    # At least once: the retry sends the same alert again rather than lose it.
    assert smtp_alerts(texts).execute({"run_id": "run-1"})["sent"] == 2
    assert len(smtp_server.wait_for(2)) == 2


def test_any_notifier_gets_the_message_and_is_not_consumed(fleet: dict[str, Any]) -> None:
    recorder = Recorder()
    operator = Alerts(
        task_id="alerts", notifier=[recorder], name_prefix="tenant-", limit_fraction_at_least=0.8
    )
    operator.texts = {}
    operator.execute({"run_id": "run-1"})
    [(subject, alert)] = recorder.sent
    assert subject.startswith("OpenRouter alerts for keys named tenant-*")
    assert alert["count"] == 1
    # The notifier the DAG holds still has its template, for the next run.
    assert recorder.subject == "{{ fleet_alerts.subject }}"


def test_credits_below_the_floor(fleet: dict[str, Any], local_openrouter: LocalOpenRouter) -> None:
    local_openrouter.total_credits = 15.0
    recorder = Recorder()
    operator = Alerts(task_id="alerts", notifier=recorder, name_prefix="nobody-", credits_below=50)
    operator.texts = {}
    result = operator.execute({"run_id": "run-1"})
    [finding] = result["findings"]
    assert finding["condition"] == "credits"
    assert finding["floor"] == 50
    assert "account credits" in recorder.sent[0][1]["text"]


# ------------------------------------------------------------------------------ the local OpenRouter ---


def test_spending_sets_last_used_at_and_the_controls_set_it(openrouter_conn_env: LocalOpenRouter) -> None:
    from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

    fake = openrouter_conn_env
    key = fake.add_key("k").api_key
    assert fake.get_key_state(key.hash)["last_used_at"] is None
    fake.add_usage(key.hash, 0.5)
    hook = OpenRouterHook()
    assert hook.get_key(key.hash).last_used_at == fake.get_key_state(key.hash)["last_used_at"] is not None
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert fake.set_usage(key.hash, last_used_at=when)["last_used_at"].startswith("2026-01-02T03:04:05")
    control = LocalOpenRouterControl(fake.base_url)
    used = control.set_usage(key.hash, last_used_at="2026-02-03T00:00:00Z")["last_used_at"]
    assert used.startswith("2026-02-03T00:00:00")
    assert hook.get_key(key.hash).last_used_at == used
    # None: a key never used; the counters are set in the same call.
    state = control.set_usage(key.hash, usage=2.0, last_used_at=None)
    assert state["last_used_at"] is None
    assert state["usage"] == 2.0
    assert hook.get_key(key.hash).last_used_at is None
    # Simulated spend goes through the same path: a key that spends is used now.
    fake.set_spend_per_second(1.0)
    time.sleep(0.05)
    assert hook.get_key(key.hash).last_used_at is not None
    fake.set_spend_per_second(0.0)
    hook.close()


def test_importing_the_operator_stays_cheap() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, airflow_provider_openrouter.operators.fleet_alerts; "
        "print([m for m in ('requests', 'aiohttp', 'airflow_provider_openrouter.testing', "
        "'airflow_provider_openrouter.hooks.openrouter') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_run_with_nothing_new_and_nothing_ended_writes_nothing(fleet: dict[str, Any]) -> None:
    texts: dict[str, str] = {}
    smtp_alerts(texts).execute({"run_id": "run-1"})
    operator = smtp_alerts(texts)
    operator.fail_writes = True  # a write would fail the task
    assert operator.execute({"run_id": "run-2"})["sent"] == 0
