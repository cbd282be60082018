"""A local OpenRouter served from a child process (its own interpreter lock), driven over HTTP."""

from __future__ import annotations

import subprocess
import sys

from airflow_provider_openrouter.testing._local import ServedFake
from airflow_provider_openrouter.testing.control import LocalOpenRouterControl
from airflow_provider_openrouter.testing.realism import Realism


class LocalOpenRouterProcess(ServedFake):
    """``python -m airflow_provider_openrouter.testing`` in a child process, for benchmarks and demos.

    ::

        with LocalOpenRouterProcess() as fake:
            fake.base_url, fake.management_key
            fake.control.add_usage(key_hash, 1.5)   # the LocalOpenRouter helpers, over HTTP

    A benchmark measures its client better this way: a server in the same process competes with the client
    for the interpreter lock. ``realism`` is the child's :class:`~airflow_provider_openrouter.testing.Realism`
    (``fake.control.set_realism`` changes it later).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        management_key: str | None = None,
        spend_per_second: float = 0.0,
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        realism: Realism | None = None,
    ) -> None:
        self._args = [sys.executable, "-m", "airflow_provider_openrouter.testing", "--port", str(port)]
        if management_key is not None:
            self._args += ["--management-key", management_key]
        if spend_per_second:
            self._args += ["--spend-per-second", str(spend_per_second)]
        self._args += _realism_flags(realism or Realism())
        self._env = env
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.management_key = ""

    def start(self) -> LocalOpenRouterProcess:
        """Start the child process and wait until it serves (it prints its base URL and management key)."""
        if self._proc is not None:
            return self
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self._env
        )
        printed: dict[str, str] = {}
        assert self._proc.stdout is not None
        while "management_key" not in printed:
            line = self._proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("the local OpenRouter process exited before it started serving")
            name, sep, value = line.strip().partition("=")
            if sep:
                printed[name] = value
        self.base_url, self.management_key = printed["base_url"], printed["management_key"]
        return self

    def stop(self) -> None:
        """Stop the child process (SIGTERM, then SIGKILL if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __repr__(self) -> str:
        return f"LocalOpenRouterProcess({self.base_url or 'not started'})"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def control(self) -> LocalOpenRouterControl:
        """The test helpers (usage, clock, faults, request log, ...) over the control endpoints."""
        return LocalOpenRouterControl(self.base_url)


def _realism_flags(realism: Realism) -> list[str]:
    """The command-line flags that give the child ``realism``, every knob spelled out."""
    return [
        "--list-order",
        realism.list_order,
        "--shuffle-ties" if realism.shuffle_ties else "--no-shuffle-ties",
        "--commit-gap",
        repr(realism.commit_gap),
        "--list-lag",
        repr(realism.list_lag),
        "--name-max-length",
        str(realism.name_max_length or 0),
        "--trim-stamp-zeros" if realism.trim_stamp_zeros else "--no-trim-stamp-zeros",
    ]
