"""Masking many plaintexts costs the same per key whatever their number, and nothing is unmasked for it.

Each test runs a process set up as Airflow sets up a task process (its logging configured to send to a
supervisor; a channel to the supervisor that records what it is sent), on the Airflow line under test. What
the task sends the supervisor is then handed to a masker of Airflow's own, as the supervisor does. The
growth is caught by counting (messages, pattern compilations, patterns), never by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

TASK_PROCESS = textwrap.dedent(
    """
    import io, json, logging, re, secrets, sys

    from airflow.sdk.log import configure_logging

    channel = io.BytesIO()
    configure_logging(json_output=True, output=channel, sending_to_supervisor=True)

    import structlog
    from airflow.sdk._shared.secrets_masker import SecretsMasker
    from airflow.sdk.execution_time import task_runner

    from airflow_provider_openrouter._masking import mask_plaintexts

    sent = []

    class Comms:
        def send(self, msg):
            sent.append(msg)

    task_runner.SUPERVISOR_COMMS = Comms()
    compiled = 0
    real_compile = re.compile

    # The maskers' own compilations only (not those of the logging libraries the first log line wakes).
    MASKERS = {SecretsMasker.__module__, mask_plaintexts.__module__}

    def counting_compile(*args, **kwargs):
        global compiled
        compiled += sys._getframe(1).f_globals.get("__name__") in MASKERS
        return real_compile(*args, **kwargs)

    def counted(call):
        global compiled
        compiled = 0
        re.compile = counting_compile
        try:
            call()
        finally:
            re.compile = real_compile
        return compiled

    def plaintext():
        return f"sk-or-v1-{secrets.token_hex(32)}"

    result = {"sizes": {}}
    for size in json.loads(sys.argv[2]):
        del sent[:]
        chunks = [[plaintext() for _ in range(100)] for _ in range(size // 100)]
        task_compiles = [counted(lambda chunk=chunk: mask_plaintexts(chunk)) for chunk in chunks]
        bodies = [m for m in sent if type(m).__name__ == "MaskSecret"]
        # What the supervisor does with each: add it to its own masker (mask_secret -> add_mask).
        supervisor = SecretsMasker()
        supervisor_compiles = counted(lambda: [supervisor.add_mask(m.value, m.name) for m in bodies])
        told = sum(len(m.value) if isinstance(m.value, list) else 1 for m in bodies)
        result["sizes"][str(size)] = {
            "task_compiles_per_chunk": sorted(set(task_compiles)),
            "messages": len(sent),
            "plaintexts_told": told,
            "supervisor_compiles": supervisor_compiles,
            "supervisor_patterns": len(supervisor.patterns),
        }

    # Everything a task might write a plaintext with, after the plaintexts are masked.
    keys = chunks[-1]
    odd = "odd-secret-" + secrets.token_hex(12)
    mask_plaintexts([odd])
    structlog.get_logger("task").info("created %s", keys[0], extra=keys[1])
    logging.getLogger("airflow.task").warning("stdlib %s and %s", keys[2], odd)
    try:
        raise ValueError(f"failed with {keys[3]}")
    except ValueError:
        structlog.get_logger("task").exception("structlog traceback")
        logging.getLogger("airflow.task").exception("stdlib traceback")
    print("printed", keys[4])
    sys.stdout.write(keys[5][:14])
    sys.stdout.write(keys[5][14:] + "\\n")
    print("on stderr", keys[6], file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    result["written"] = [*keys[:7], odd]
    result["log_channel"] = channel.getvalue().decode()
    with open(sys.argv[1], "w") as out:
        json.dump(result, out)
    """
)


def run_task_process(tmp_path: Path, sizes: list[int], **env: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-c", TASK_PROCESS, str(out), json.dumps(sizes)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    # What the supervisor reads from the task's stdout and stderr.
    result["streams"] = proc.stdout + proc.stderr
    return result


def test_the_cost_per_key_stays_flat_as_keys_grow(tmp_path: Path) -> None:
    result = run_task_process(tmp_path, [200, 2000])
    small, large = result["sizes"]["200"], result["sizes"]["2000"]

    # The task's masker compiles at most once per batch of plaintexts, however many came before.
    assert small["task_compiles_per_chunk"] in ([0], [1], [0, 1])
    assert large["task_compiles_per_chunk"] in ([0], [1], [0, 1])
    # The supervisor's masker recompiles every pattern it holds for each secret it is told of: told of
    # none, it neither compiles nor grows, whatever the number of keys.
    for size in (small, large):
        assert size["messages"] == 0
        assert size["plaintexts_told"] == 0
        assert size["supervisor_compiles"] == 0
        assert size["supervisor_patterns"] == 0


def test_nothing_a_task_writes_reaches_the_supervisor_unmasked(tmp_path: Path) -> None:
    result = run_task_process(tmp_path, [100])

    outgoing = result["log_channel"] + result["streams"]
    # Count, never list: a failing assertion must not print a key.
    leaked = sum(
        secret in outgoing or secret.removeprefix("sk-or-v1-") in outgoing for secret in result["written"]
    )
    assert leaked == 0
    assert outgoing.count("***") >= len(result["written"])
    for event in ("created", "stdlib", "structlog traceback", "stdlib traceback"):
        assert event in result["log_channel"]
    assert "printed ***" in result["streams"]
    assert "on stderr ***" in result["streams"]


def test_at_debug_level_the_supervisor_is_told_of_every_plaintext(tmp_path: Path) -> None:
    # At DEBUG the supervisor logs the body of each message it receives (a Variable's new value among them),
    # so it must be able to mask each plaintext itself, whatever that costs.
    result = run_task_process(tmp_path, [200], AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")
    size = result["sizes"]["200"]

    assert size["plaintexts_told"] == 200
    assert size["messages"] == 2
    assert size["supervisor_patterns"] >= 200
