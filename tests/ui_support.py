"""Driving Airflow's API server and its React UI from tests.

``ApiServer`` runs ``airflow api-server`` (one worker) against an :class:`AirflowInstance` home with the
settings that make the UI usable without a login page; ``launch_chromium`` starts Debian's Chromium through
playwright (playwright's own browser download does not work offline). ``Screenshots`` writes numbered PNGs
into ``artifacts/screenshots/`` at the repository root, the folder CI keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scripts.deployment import rest_call
from tests.airflow_runner import AIRFLOW_BIN, ROOT, AirflowInstance

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from playwright.sync_api import Browser, Locator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, closed on the way out (a module-scoped fixture holds one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ApiServer:
    """``airflow api-server`` on a free loopback port; stop it with :meth:`stop` (SIGTERM to its own PID)."""

    instance: AirflowInstance
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.instance.home / "api-server.log"

    def start(self, timeout: float = 120) -> None:
        env = {
            **os.environ,
            **self.instance.env,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__BASE_URL": self.url,
            **self.extra_env,
        }
        with self.log_path.open("wb") as log:
            # A session of its own, so stopping it reaches the uvicorn worker it forks and nothing else.
            self.process = subprocess.Popen(
                [
                    str(AIRFLOW_BIN),
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"api-server exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"api-server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # the leader of the session started above
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # --- REST API -------------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=10) as resp:
                self._token = str(json.load(resp)["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the REST API with a token: ``(status, decoded JSON or text)``, not raising on 4xx."""
        return rest_call(self.url, self.token(), method, path, body)


class Screenshots:
    """Numbered screenshots of one test run in one folder (emptied first, so it only holds this run's)."""

    def __init__(self, folder: Path = SCREENSHOTS) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        self.taken: list[Path] = []

    def take(self, target: Any, name: str, **kwargs: Any) -> Path:
        """Screenshot a playwright Page or Locator as ``NN-name.png``."""
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.folder / f"{len(self.taken) + 1:02d}-{slug}.png"
        target.screenshot(path=str(path), **kwargs)
        self.taken.append(path)
        return path


def extra_field_input(dialog: Locator, name: str) -> Locator:
    """An extra field's input in the connection dialog (string fields are not reachable by their label)."""
    return dialog.locator(f"[name=element_{name}]")
