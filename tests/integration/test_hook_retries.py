"""The retry policy end to end: which answers and faults are retried for which methods, how long it waits.

Waits are kept tiny (``max_retry_wait``) and the jitter is pinned through the hook's ``retry_jitter``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_openrouter._retry import RetryPolicy, is_retryable
from airflow_provider_openrouter.exceptions import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OpenRouterError,
    OpenRouterTransportError,
    RateLimitedError,
    ServerError,
)
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.testing import (
    DropAfterCommit,
    DropBeforeCommit,
    HtmlError,
    Latency,
    Status,
    Trickle,
)
from tests.relay import pump

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_openrouter.testing import LocalOpenRouter
    from airflow_provider_openrouter.testing.pytest_plugin import ConnectOpenRouter

LOGGER = "airflow_provider_openrouter.transport"


class TcpRelay:
    """Forwards every TCP connection on ``port`` to ``target``: a port that starts accepting on demand."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", port))
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=pump, args=(src, dst), daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        self._stopped = True
        self.listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def key_names(fake: LocalOpenRouter) -> list[str]:
    return [key["name"] for key in fake.keys(include_management=False)]


def use_connection(monkeypatch: pytest.MonkeyPatch, fake: LocalOpenRouter, **extras: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", fake.connection_json(**extras))


@pytest.fixture
def fake(openrouter_connection: ConnectOpenRouter) -> LocalOpenRouter:
    return openrouter_connection(max_retries=3, max_retry_wait=0.01)


@pytest.fixture
def hook(fake: LocalOpenRouter) -> OpenRouterHook:
    return OpenRouterHook(retry_jitter=lambda delay: delay)


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------------------- the matrix ---

OPERATIONS: dict[str, tuple[str, Callable[[OpenRouterHook, str], Any]]] = {
    "GET": ("/keys/*", lambda hook, key_hash: hook.get_key(key_hash)),
    "PATCH": ("/keys/*", lambda hook, key_hash: hook.update_key(key_hash, limit=2)),
    "DELETE": ("/keys/*", lambda hook, key_hash: hook.delete_key(key_hash)),
    "POST": ("/keys", lambda hook, key_hash: hook.create_key("new-key")),
}

# fault id -> (fault, retried for methods that are safe to repeat, retried for POST, error if not retried)
FAULTS: dict[str, tuple[Any, bool, bool, type[OpenRouterError]]] = {
    "429": (Status(429), True, True, RateLimitedError),
    "429-retry-after": (Status(429, retry_after=0.001), True, True, RateLimitedError),
    "500": (Status(500), True, False, ServerError),
    "502-html-page": (HtmlError(502), True, False, ServerError),
    "503": (Status(503), True, False, ServerError),
    "504": (Status(504), True, False, ServerError),
    "drop-before-commit": (DropBeforeCommit(), True, False, OpenRouterTransportError),
    "drop-after-commit": (DropAfterCommit(), True, False, OpenRouterTransportError),
    "400": (Status(400), False, False, BadRequestError),
    "403": (Status(403), False, False, ForbiddenError),
    "404": (Status(404), False, False, NotFoundError),
    "409": (Status(409), False, False, ConflictError),
}


@pytest.mark.parametrize("method", list(OPERATIONS))
@pytest.mark.parametrize("fault_id", list(FAULTS))
def test_retry_matrix(
    hook: OpenRouterHook,
    fake: LocalOpenRouter,
    retry_log: pytest.LogCaptureFixture,
    fault_id: str,
    method: str,
) -> None:
    fault, retried_if_safe, retried_if_post, error_class = FAULTS[fault_id]
    path, action = OPERATIONS[method]
    key = fake.add_key("existing")
    fake.inject(fault, method=method, path=path)
    retried = retried_if_post if method == "POST" else retried_if_safe

    if retried:
        result = action(hook, key.hash)
        assert result is not None
        assert len(retries_logged(retry_log)) == 1
        assert f"{method} " in retries_logged(retry_log)[0]
    else:
        with pytest.raises(error_class):
            action(hook, key.hash)
        assert retries_logged(retry_log) == []
    seen = [r for r in fake.requests if r.method == method]
    assert len(seen) == (2 if retried else 1)


def test_post_dropped_after_commit_is_not_repeated(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.inject(DropAfterCommit(), method="POST", path="/keys")
    with pytest.raises(OpenRouterTransportError) as exc:
        hook.create_key("once-only")
    assert exc.value.reached_server is None  # the key may exist: the caller must look before trying again
    assert (exc.value.method, exc.value.path) == ("POST", "/keys")
    assert key_names(fake).count("once-only") == 1  # created by the first attempt, no twin


def test_post_dropped_before_commit_is_not_repeated_either(
    hook: OpenRouterHook, fake: LocalOpenRouter
) -> None:
    # The client cannot tell the two drops apart: both look like "sent, then no answer".
    fake.inject(DropBeforeCommit(), method="POST", path="/keys")
    with pytest.raises(OpenRouterTransportError) as exc:
        hook.create_key("never-made")
    assert exc.value.reached_server is None
    assert "never-made" not in key_names(fake)
    assert len(fake.requests) == 1


def test_post_after_429_is_repeated_and_creates_one_key(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.inject(Status(429, retry_after=0), method="POST")
    created = hook.create_key("after-429")
    assert key_names(fake).count("after-429") == 1
    assert fake.has_key(created.hash)
    assert [r.status for r in fake.requests] == [429, 201]


@pytest.mark.parametrize("missing_ok", [False, True], ids=["missing_ok=False", "missing_ok=True"])
def test_delete_whose_answer_was_lost_counts_as_deleted(
    hook: OpenRouterHook, fake: LocalOpenRouter, missing_ok: bool
) -> None:
    key = fake.add_key("doomed")
    fake.inject(DropAfterCommit(), method="DELETE")
    assert hook.delete_key(key.hash, missing_ok=missing_ok) is True
    assert [r.status for r in fake.requests] == [
        None,
        404,
    ]  # the retry found it gone: our first attempt did it
    assert not fake.has_key(key.hash)


@pytest.mark.parametrize("code", [500, 502, 504])
def test_delete_whose_5xx_came_after_the_change_counts_as_deleted(
    hook: OpenRouterHook, fake: LocalOpenRouter, code: int
) -> None:
    # A gateway may answer 5xx after the API went ahead: the retry's 404 is then our own doing.
    key = fake.add_key("doomed")
    fake.inject(Status(code, after_commit=True), method="DELETE")
    assert hook.delete_key(key.hash) is True
    assert [r.status for r in fake.requests] == [code, 404]
    assert not fake.has_key(key.hash)


def test_delete_404_without_an_earlier_attempt_is_not_found(
    hook: OpenRouterHook, fake: LocalOpenRouter
) -> None:
    with pytest.raises(NotFoundError):
        hook.delete_key("b" * 64)


def test_gives_up_after_max_retries(
    hook: OpenRouterHook, fake: LocalOpenRouter, retry_log: pytest.LogCaptureFixture
) -> None:
    fake.inject(Status(503), times=None)
    with pytest.raises(ServerError) as exc:
        hook.get_current_key()
    assert exc.value.status == 503
    assert len(fake.requests) == 4  # 1 + max_retries
    logged = retries_logged(retry_log)
    assert [re.search(r"retry (\d) of 3", line).group(1) for line in logged[:3]] == ["1", "2", "3"]  # type: ignore[union-attr]
    assert "giving up after 4 attempts" in logged[-1]


def test_max_retries_zero_means_one_attempt(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, local_openrouter, max_retries=0)
    local_openrouter.inject(Status(503))
    with pytest.raises(ServerError):
        OpenRouterHook().get_current_key()
    assert len(local_openrouter.requests) == 1


def test_backoff_doubles_and_is_capped(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, local_openrouter, max_retries=4, max_retry_wait=1.5)
    local_openrouter.inject(Status(500), times=None)
    asked: list[float] = []

    def jitter(delay: float) -> float:
        asked.append(delay)
        return 0.0

    with pytest.raises(ServerError):
        OpenRouterHook(retry_jitter=jitter).get_credits()
    assert asked == [0.5, 1.0, 1.5, 1.5]


@pytest.mark.parametrize(
    ("retry_after", "max_retry_wait", "logged_wait"),
    [
        pytest.param(0.03, 5, "0.03", id="retry-after-seconds-honoured"),
        pytest.param(0.02, 0.02, "0.02", id="retry-after-equal-to-max_retry_wait"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 5, "0.00", id="retry-after-date-in-past"),
    ],
)
def test_retry_after(
    local_openrouter: LocalOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
    retry_log: pytest.LogCaptureFixture,
    retry_after: Any,
    max_retry_wait: float,
    logged_wait: str,
) -> None:
    use_connection(monkeypatch, local_openrouter, max_retry_wait=max_retry_wait)
    local_openrouter.inject(Status(429, retry_after=retry_after))
    jitter_calls: list[float] = []
    hook = OpenRouterHook(retry_jitter=lambda delay: jitter_calls.append(delay) or delay)
    assert hook.get_current_key().is_management_key
    [line] = retries_logged(retry_log)
    assert line.endswith(f"in {logged_wait} s")
    assert "HTTP 429" in line
    assert jitter_calls == []  # the server's wait replaces the computed backoff


@pytest.mark.parametrize(
    "retry_after", [86400, 5.5, "Fri, 31 Dec 2199 23:59:59 GMT"], ids=["a-day", "just-over", "http-date"]
)
def test_retry_after_beyond_max_retry_wait_fails_at_once_with_the_wait(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, retry_after: Any, caplog: Any
) -> None:
    # Airflow's retry_delay (or a deferred sensor) does such waiting, not a worker slot.
    use_connection(monkeypatch, local_openrouter, max_retry_wait=5, max_retries=3)
    local_openrouter.inject(Status(429, retry_after=retry_after))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as exc:
        OpenRouterHook().get_current_key()
    # Waiting even the largest allowed wait would take 5 s: far more than an answer on loopback.
    assert time.monotonic() - started < 5
    assert exc.value.retry_after is not None
    assert exc.value.retry_after > 5
    assert [r.status for r in local_openrouter.requests] == [429]
    assert "longer than max_retry_wait (5 s): not waiting" in caplog.text


def test_timeout_after_send_retries_reads_only(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, local_openrouter, timeout=0.5, max_retries=3, max_retry_wait=0.01)
    key = local_openrouter.add_key("slow")
    hook = OpenRouterHook(retry_jitter=lambda delay: delay)
    local_openrouter.inject(Latency(2.0), method="GET")
    assert hook.get_key(key.hash).name == "slow"
    local_openrouter.inject(Latency(2.0), method="POST")
    with pytest.raises(OpenRouterTransportError) as exc:
        hook.create_key("slow-create")
    assert exc.value.reached_server is None
    assert len([r for r in local_openrouter.requests if r.method == "POST"]) <= 1


def test_connect_failure_retries_even_post(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        local_openrouter.connection_json().replace(str(local_openrouter.port), str(port)),
    )
    relays: list[TcpRelay] = []

    def open_port_while_waiting(delay: float) -> float:
        # Called as the hook decides its wait after the refused connection: the server "comes up" meanwhile.
        relays.append(TcpRelay(port, ("127.0.0.1", local_openrouter.port)))
        return 0.0

    try:
        created = OpenRouterHook(retry_jitter=open_port_while_waiting).create_key("after-refusal")
    finally:
        for relay in relays:
            relay.close()
    assert len(relays) == 1
    assert key_names(local_openrouter).count("after-refusal") == 1
    assert local_openrouter.has_key(created.hash)
    [line] = retries_logged(retry_log)
    assert line.startswith("POST /keys: ConnectionRefusedError")


def test_unreachable_server_is_a_transport_error(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        local_openrouter.connection_json(max_retries=2, max_retry_wait=0).replace(
            str(local_openrouter.port), str(port)
        ),
    )
    with pytest.raises(OpenRouterTransportError) as exc:
        OpenRouterHook().create_key("nowhere")
    assert exc.value.reached_server is False
    assert exc.value.path == "/keys"
    assert "ConnectionRefusedError" in str(exc.value)
    assert exc.value.__cause__ is not None  # the client's own error, for the traceback
    assert getattr(exc.value.__cause__, "request", None) is None  # which held the Authorization header
    rendered = "".join(traceback.format_exception(exc.value))
    assert "ConnectionRefusedError" in rendered
    assert local_openrouter.management_key not in rendered


# ---------------------------------------------------------------------------------------------- async ---


async def test_async_retries_follow_the_same_policy(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    key = fake.add_key("async")
    fake.inject(Status(503), method="GET")
    fake.inject(DropBeforeCommit(), method="GET")
    fake.inject(Status(429, retry_after=0), method="GET")
    assert (await hook.aget_key(key.hash)).name == "async"
    assert [r.status for r in fake.requests] == [503, None, 429, 200]


async def test_async_gives_up_like_sync(hook: OpenRouterHook, fake: LocalOpenRouter) -> None:
    fake.inject(HtmlError(502), times=None)
    with pytest.raises(ServerError) as exc:
        await hook.aget_current_key()
    assert exc.value.status == 502
    assert len(fake.requests) == 4


async def test_async_unreachable_is_not_reached(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        local_openrouter.connection_json(max_retries=1, max_retry_wait=0).replace(
            str(local_openrouter.port), str(port)
        ),
    )
    with pytest.raises(OpenRouterTransportError) as exc:
        await OpenRouterHook().aget_current_key()
    assert exc.value.reached_server is False


async def test_async_timeout_retries_get(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, local_openrouter, timeout=0.5, max_retries=3, max_retry_wait=0)
    key = local_openrouter.add_key("slow")
    local_openrouter.inject(Latency(2.0), method="GET")
    assert (await OpenRouterHook().aget_key(key.hash)).name == "slow"
    await asyncio.sleep(0)


# ------------------------------------------------------------------------------------ the pure policy ---


@pytest.mark.parametrize(
    ("method", "status", "reached_server", "expected"),
    [
        pytest.param("POST", 429, None, True, id="POST-429"),
        pytest.param("GET", 429, None, True, id="GET-429"),
        pytest.param("POST", 503, None, False, id="POST-503"),
        pytest.param("GET", 503, None, True, id="GET-503"),
        pytest.param("PATCH", 500, None, True, id="PATCH-500"),
        pytest.param("DELETE", 502, None, True, id="DELETE-502"),
        pytest.param("GET", 404, None, False, id="GET-404"),
        pytest.param("GET", 400, None, False, id="GET-400"),
        pytest.param("POST", None, False, True, id="POST-never-connected"),
        pytest.param("POST", None, None, False, id="POST-sent-no-answer"),
        pytest.param("GET", None, None, True, id="GET-sent-no-answer"),
        pytest.param("DELETE", None, None, True, id="DELETE-sent-no-answer"),
    ],
)
def test_is_retryable(method: str, status: int | None, reached_server: bool | None, expected: bool) -> None:
    assert is_retryable(method, status=status, reached_server=reached_server) is expected


def test_default_jitter_stays_within_half_to_full_delay() -> None:
    policy = RetryPolicy(max_retries=5, max_wait=60)
    for attempt in range(5):
        wait = policy.delay(attempt)
        assert 0.25 * 2**attempt <= wait <= 0.5 * 2**attempt
    assert policy.delay(20) <= 60
    assert policy.delay(0, retry_after=120) == 60


# -- time bounds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_trickling_answer_is_cut_at_the_attempt_timeout(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # One byte every 0.2 s never trips a 0.5 s read timeout; the attempt's own deadline ends it.
    use_connection(monkeypatch, local_openrouter, timeout=0.5, max_retries=0, max_retry_wait=0)
    local_openrouter.inject(Trickle(0.2), method="GET", path="/key")
    hook = OpenRouterHook()
    call = hook.get_current_key if path == "sync" else lambda: asyncio.run(hook.aget_current_key())
    started = time.monotonic()
    with pytest.raises(OpenRouterTransportError) as exc:
        call()
    # Unbounded, the ~600-byte answer would take two minutes; the margin is for a loaded machine.
    assert time.monotonic() - started < 10
    assert exc.value.reached_server is None


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_call_ends_within_its_budget_however_many_attempts_trickle(
    local_openrouter: LocalOpenRouter, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    use_connection(monkeypatch, local_openrouter, timeout=0.3, max_retries=2, max_retry_wait=0.05)
    local_openrouter.inject(Trickle(0.1), method="GET", path="/key", times=None)
    hook = OpenRouterHook(retry_jitter=lambda delay: delay)
    budget = 0.3 * 3 + 0.05 * 2
    call = hook.get_current_key if path == "sync" else lambda: asyncio.run(hook.aget_current_key())
    started = time.monotonic()
    with pytest.raises(OpenRouterTransportError):
        call()
    # Unbounded, each attempt would trickle for minutes; the margin is for a loaded machine.
    assert time.monotonic() - started < budget + 3
    local_openrouter.clear_faults()
    assert hook.get_current_key().is_management_key  # the cut connection left the pool usable


def test_retry_policy_budget() -> None:
    assert RetryPolicy(max_retries=3, max_wait=60, attempt_timeout=30).budget == 30 * 4 + 60 * 3
    assert RetryPolicy(max_retries=0, max_wait=60, attempt_timeout=5).budget == 5
    assert RetryPolicy().budget is None


@pytest.mark.parametrize(
    ("status", "reached_server", "expected"),
    [(503, None, True), (None, True, True), (None, None, True), (400, None, False), (409, None, False)],
    ids=["5xx", "answer-lost", "unknown", "400", "409"],
)
def test_a_post_marked_repeatable_is_retried_like_a_patch(
    status: int | None, reached_server: bool | None, expected: bool
) -> None:
    assert is_retryable("POST", status=status, reached_server=reached_server, repeatable=True) is expected
    assert is_retryable("POST", status=status, reached_server=reached_server) is False
