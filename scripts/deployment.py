"""A real Airflow deployment on one machine: the provider on PostgreSQL, Redis and Celery.

``make up`` / ``make down`` call this, and so do the deployment tests (``tests/deployment_support.py``).

What runs, each as its own process in a session of its own (so stopping it reaches everything it forked):

* PostgreSQL (Debian's package): a private cluster made with ``initdb`` in the deployment's home, the
  metadata database and the Celery result backend. PostgreSQL refuses to run as root, so as root the
  cluster belongs to ``nobody``;
* Redis (Debian's ``redis-server``): a private instance without persistence, the Celery broker;
* the local OpenRouter (``python -m airflow_provider_openrouter.testing``), whose keys spend on their own;
* Airflow's API server, scheduler, DAG processor, triggerer and two Celery workers (concurrency 4 each).

Every port is chosen free on 127.0.0.1. The ``openrouter_default`` connection is created in the metadata
database through the REST API (so the management key is in no process's command line and in no
environment variable). The deployment writes ``deployment.json`` into its home: the ports, and each
process's PID with its start time, so that ``down`` (another process) stops exactly what ``up`` started.

    python scripts/deployment.py up [--home DIR]      # start, print the UI's URL and login, return
    python scripts/deployment.py down [--home DIR]    # stop everything, leave nothing running
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".deployment"
EXAMPLE_DAGS = ROOT / "example_dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
# Debian installs each PostgreSQL major version under /usr/lib/postgresql/<major>/bin: the newest one.
PG_BIN = Path(
    os.environ.get("PG_BIN")
    or max(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name),
        default=Path("/nonexistent"),
    )
)
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STATE_FILE = "deployment.json"
# Marks a folder as a deployment's home, so that ``up`` never wipes a directory someone else made.
HOME_MARKER = ".openrouter-deployment-home"
CELERY_EXECUTOR = "airflow.providers.celery.executors.celery_executor.CeleryExecutor"
CONN_ID = DEFAULT_CONN_ID
ADMIN_USER = "admin"
WORKERS = 2
WORKER_CONCURRENCY = 4
# USD that every usable key of the local OpenRouter spends per second, so usage sensors have usage to watch.
SPEND_PER_SECOND = 0.5
# How long Airflow waits for a task's heartbeat before it fails the task (and retries it): a killed worker's
# tasks are noticed after this long.
HEARTBEAT_TIMEOUT_SECONDS = 20
AIRFLOW_COMPONENTS = (
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    *tuple(f"worker-{n}" for n in range(1, WORKERS + 1)),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DeploymentError(RuntimeError):
    """A component did not start, or an API call failed."""


def rest_call(
    base_url: str, token: str, method: str, path: str, body: Any = None, *, timeout: float = 60
) -> tuple[int, Any]:
    """One call to Airflow's REST API with a bearer token: ``(status, decoded JSON or text)``, not raising on
    4xx/5xx, so that callers can assert on refusals as well as on answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


@dataclass
class Component:
    """One running process: its PID and start time (``psutil``'s ``create_time``) identify it."""

    name: str
    pid: int
    create_time: float
    log: str
    argv: list[str]
    start_seconds: float = 0.0
    # Where its log file ended when it was started (the log is appended to across restarts).
    log_offset: int = 0

    def process(self) -> Any:
        """The ``psutil.Process`` if it still runs as the process we started, else ``None``."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def running(self) -> bool:
        return self.process() is not None


def _terminate(components: Sequence[Component], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to each component's session and to every descendant; SIGKILL what is left after
    ``timeout``."""
    import psutil

    procs = []
    for comp in components:
        proc = comp.process()
        if proc is None:
            continue
        with contextlib.suppress(psutil.Error):
            procs += [proc, *proc.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(comp.pid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


@dataclass
class Deployment:
    """The deployment in ``home``; :meth:`start` brings it up, :meth:`stop` takes everything down.

    ``dag_files`` go into the DAG folder (default: every example DAG). ``extra_env`` is added to every
    Airflow component's environment.
    """

    home: Path = DEFAULT_HOME
    dag_files: Sequence[Path] = field(default_factory=lambda: sorted(EXAMPLE_DAGS.glob("*.py")))
    extra_env: Mapping[str, str] = field(default_factory=dict)
    spend_per_second: float = SPEND_PER_SECOND
    dags_paused_at_creation: bool = True
    ports: dict[str, int] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Secrets of the deployment, kept out of its repr (tests print it when they fail).
    fernet_key: str = field(default="", repr=False)
    jwt_secret: str = field(default="", repr=False)
    _token: str | None = field(default=None, repr=False)

    # --- addresses ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['openrouter']}/api/v1"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def password_file(self) -> Path:
        return self.home / "passwords.json"

    @property
    def admin_password(self) -> str:
        return str(json.loads(self.password_file.read_text())[ADMIN_USER])

    @property
    def dsn(self) -> str:
        return f"postgresql://airflow@127.0.0.1:{self.ports['postgres']}/airflow"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    # --- state -------------------------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "ports": self.ports,
            "timings": self.timings,
            "components": {name: vars(comp) for name, comp in self.components.items()},
            "fernet_key": self.fernet_key,
            "jwt_secret": self.jwt_secret,
        }
        path = self.home / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, home: Path = DEFAULT_HOME) -> Deployment:
        state = json.loads((home / STATE_FILE).read_text())
        deployment = cls(home=home, ports=state["ports"], timings=state["timings"])
        deployment.components = {n: Component(**c) for n, c in state["components"].items()}
        deployment.fernet_key = state["fernet_key"]
        deployment.jwt_secret = state["jwt_secret"]
        return deployment

    # --- environment -------------------------------------------------------------------------------------
    def airflow_env(self, component: str = "") -> dict[str, str]:
        """The environment of an Airflow process of this deployment (``component`` picks its log port)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(self.dags_paused_at_creation),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.dsn.replace(
                    "postgresql://", "postgresql+psycopg2://"
                ),
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
                + self.dsn.replace("postgresql://", "postgresql+psycopg2://"),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__SECRET_KEY": self.jwt_secret,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["triggerer_logs"]),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(
                    self.ports.get(f"{component}_logs", self.ports["worker-1_logs"])
                ),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                # Celery's own start-up check for root; the deployment runs as whoever starts it.
                "C_FORCE_ROOT": "true",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        env.update(self.extra_env)
        return env

    def airflow_argv(self, name: str) -> list[str]:
        if name == "api-server":
            return [str(AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(self.ports["api"])]
        if name.startswith("worker-"):
            return [
                str(AIRFLOW),
                "celery",
                "worker",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--celery-hostname",
                f"{name}@%h",
                "--pid",
                str(self.home / f"{name}.pid"),
            ]
        return [str(AIRFLOW), name]

    # --- processes ---------------------------------------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None, user: str | None = None
    ) -> Component:
        import psutil

        log = self.log_path(name)
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=dict(env) if env is not None else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                user=user,
                cwd=self.home,
            )
        comp = Component(name, proc.pid, psutil.Process(proc.pid).create_time(), str(log), argv, 0.0, offset)
        self.components[name] = comp
        self.save()
        return comp

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float, started: float) -> None:
        self._wait_all({name: ready}, timeout, started)

    def _wait_all(self, checks: Mapping[str, Callable[[], bool]], timeout: float, started: float) -> None:
        """Poll every readiness check until all pass; each component's start time is when its own did."""
        pending = dict(checks)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name, ready in list(pending.items()):
                comp = self.components[name]
                if not comp.running():
                    raise DeploymentError(f"{name} exited while starting:\n{self.log_tail(name)}")
                with contextlib.suppress(Exception):
                    if ready():
                        comp.start_seconds = round(time.monotonic() - started, 1)
                        self.timings[name] = comp.start_seconds
                        del pending[name]
            self.save()
            if pending:
                time.sleep(0.3)
        if pending:
            tails = "\n".join(f"--- {name} ---\n{self.log_tail(name)}" for name in pending)
            raise DeploymentError(f"not ready within {timeout:.0f} s: {', '.join(pending)}\n{tails}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _run(
        self, argv: Sequence[str], *, user: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        proc = subprocess.run(
            argv, capture_output=True, text=True, user=user, env=env, cwd=self.home, check=False, timeout=600
        )
        if proc.returncode != 0:
            raise DeploymentError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    # --- start -------------------------------------------------------------------------------------------
    def start(self, *, timeout: float = 240) -> Deployment:
        """Start every component and wait until each one serves; on failure stop what had started."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_home(self) -> None:
        if self.home.exists():
            if not (self.home / HOME_MARKER).exists():
                raise DeploymentError(f"{self.home} exists and is not a deployment's home: not touching it")
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        # PostgreSQL runs as another user when we are root: it must reach its data directory.
        self.home.chmod(0o755)
        (self.home / HOME_MARKER).touch()
        for folder in (self.logs_dir, self.airflow_home, self.dags_folder):
            folder.mkdir()
        for dag_file in self.dag_files:
            (self.dags_folder / dag_file.name).symlink_to(dag_file.resolve())
        # What the DAG files read beside them (example_dags/data/), linked the same way.
        for folder in {path.resolve().parent for path in self.dag_files}:
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.name.startswith(("_", ".")):
                    (self.dags_folder / entry.name).symlink_to(entry)
        for name in (
            "postgres",
            "redis",
            "openrouter",
            "api",
            "triggerer_logs",
            *tuple(f"worker-{n}_logs" for n in range(1, WORKERS + 1)),
        ):
            self.ports[name] = free_port()
        from cryptography.fernet import Fernet

        self.fernet_key = Fernet.generate_key().decode()
        self.jwt_secret = secrets.token_urlsafe(32)
        self.password_file.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
        self.password_file.chmod(0o600)
        self.save()

    def _start(self, timeout: float) -> None:
        self._prepare_home()
        with ThreadPoolExecutor(3) as pool:
            for future in [
                pool.submit(self._start_postgres, timeout),
                pool.submit(self._start_redis, timeout),
                pool.submit(self._start_openrouter, timeout),
            ]:
                future.result()
        started = time.monotonic()
        self._run([str(AIRFLOW), "db", "migrate"], env=self.airflow_env())
        self.timings["airflow db migrate"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for name in AIRFLOW_COMPONENTS:
            self.start_component(name, wait=False)
        self._wait("api-server", self._api_healthy, timeout, started)
        self._create_connection()
        self.wait_ready(timeout, started, only=AIRFLOW_COMPONENTS[1:])

    def _pg_user(self) -> str | None:
        return "nobody" if os.geteuid() == 0 else None

    def _start_postgres(self, timeout: float) -> None:
        started = time.monotonic()
        user = self._pg_user()
        self.pgdata.mkdir(mode=0o700)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "airflow",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            user=user,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        self._spawn(
            "postgres",
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.pgdata),
                "-p",
                str(self.ports["postgres"]),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.pgdata}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            user=user,
        )
        isready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.ports["postgres"])]
        self._wait("postgres", lambda: subprocess.run(isready, check=False).returncode == 0, timeout, started)
        self._run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports["postgres"]),
                "-U",
                "airflow",
                "airflow",
            ]
        )
        self.timings["postgres"] = round(time.monotonic() - started, 1)

    def _start_redis(self, timeout: float) -> None:
        started = time.monotonic()
        (self.home / "redis").mkdir()
        self._spawn(
            "redis",
            [
                REDIS_SERVER,
                "--port",
                str(self.ports["redis"]),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.home / "redis"),
                "--protected-mode",
                "yes",
            ],
        )

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        self._wait("redis", pong, timeout, started)

    def _start_openrouter(self, timeout: float) -> None:
        started = time.monotonic()
        self._spawn(
            "openrouter",
            [
                sys.executable,
                "-m",
                "airflow_provider_openrouter.testing",
                "--port",
                str(self.ports["openrouter"]),
                "--spend-per-second",
                str(self.spend_per_second),
            ],
        )
        self._wait("openrouter", lambda: "management_key=" in self.log_tail("openrouter"), timeout, started)

    def start_component(self, name: str, *, wait: bool = True, timeout: float = 180) -> Component:
        """Start (or start again) one Airflow component; with ``wait``, until it serves."""
        started = time.monotonic()
        comp = self._spawn(name, self.airflow_argv(name), self.airflow_env(name))
        if wait:
            self.wait_ready(timeout, started, only=(name,))
        return comp

    def wait_ready(self, timeout: float, started: float, only: Iterable[str] = AIRFLOW_COMPONENTS) -> None:
        checks: dict[str, Callable[[], bool]] = {
            "api-server": self._api_healthy,
            "scheduler": lambda: self._health()["scheduler"]["status"] == "healthy",
            "triggerer": lambda: self._health()["triggerer"]["status"] == "healthy",
            "dag-processor": self._dags_parsed,
        }
        self._wait_all(
            {name: checks.get(name) or self._worker_ready_check(name) for name in only}, timeout, started
        )

    def _worker_ready_check(self, name: str) -> Callable[[], bool]:
        # Celery logs "<hostname> ready." once it consumes from the broker; a restarted worker is ready when
        # its own line is there, after where the log ended when it was started.
        offset = self.components[name].log_offset

        def ready() -> bool:
            with self.log_path(name).open("rb") as log:
                log.seek(offset)
                return b" ready." in log.read()

        return ready

    def _api_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as resp:
            return bool(resp.status == 200)

    def _health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as resp:
            health: dict[str, Any] = json.load(resp)
            return health

    def _dags_parsed(self) -> bool:
        _, body = self.api("GET", "/api/v2/dags?limit=1000")
        parsed = {dag["dag_id"] for dag in body["dags"]}
        return len(parsed) >= self.expected_dag_count()

    def expected_dag_count(self) -> int:
        return sum(1 for path in self.dag_files if "DAG(" in path.read_text() or "@dag" in path.read_text())

    def _create_connection(self) -> None:
        """The ``openrouter_default`` connection, stored in the metadata database through the REST API."""
        from airflow_provider_openrouter.testing.control import LocalOpenRouterControl

        management_key = LocalOpenRouterControl(self.fake_url).management_key
        status, body = self.api(
            "POST",
            "/api/v2/connections",
            {
                "connection_id": CONN_ID,
                "conn_type": "openrouter",
                "host": self.fake_url,
                "password": management_key,
                "description": "The local OpenRouter of this deployment",
            },
        )
        if status not in (200, 201):
            raise DeploymentError(f"creating the connection failed: {status} {body}")

    # --- stop --------------------------------------------------------------------------------------------
    def stop_component(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> None:
        """Stop one component, SIGKILL after ``timeout``; ``sig=SIGKILL`` kills it and its children now."""
        comp = self.components.get(name)
        if comp is not None:
            _terminate([comp], sig, timeout)

    def stop(self) -> None:
        """Stop every component, Airflow's first, PostgreSQL last; SIGKILL whatever does not stop in time."""
        airflow = [c for n, c in self.components.items() if n not in ("postgres", "redis", "openrouter")]
        _terminate(airflow, signal.SIGTERM, 20)
        _terminate(
            [c for n, c in self.components.items() if n in ("redis", "openrouter")], signal.SIGTERM, 10
        )
        # SIGINT is PostgreSQL's fast shutdown: it ends the sessions rather than waiting for them.
        _terminate([c for n, c in self.components.items() if n == "postgres"], signal.SIGINT, 20)

    def running(self) -> list[str]:
        return [name for name, comp in self.components.items() if comp.running()]

    # --- REST API ----------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            data = json.dumps({"username": ADMIN_USER, "password": self.admin_password}).encode()
            request = urllib.request.Request(
                f"{self.url}/auth/token", data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                self._token = str(json.load(resp)["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 60) -> tuple[int, Any]:
        """Call the REST API as the admin user: ``(status, decoded JSON or text)``, not raising on 4xx/5xx."""
        return rest_call(self.url, self.token(), method, path, body, timeout=timeout)

    def api_ok(self, method: str, path: str, body: Any = None) -> Any:
        status, result = self.api(method, path, body)
        if status >= 300:
            raise DeploymentError(f"{method} {path}: {status} {result}")
        return result

    def trigger(
        self, dag_id: str, *, conf: Mapping[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        """Trigger a run through the REST API (``logical_date=None``: none, as the CLI and API default to)."""
        body = {"logical_date": logical_date, "conf": dict(conf or {})}
        run = self.api_ok("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns", body)
        return str(run["dag_run_id"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api_ok("PATCH", f"/api/v2/dags/{urllib.parse.quote(dag_id)}", {"is_paused": paused})

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}"
        result: dict[str, Any] = self.api_ok("GET", path)
        return result

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, page by page (the API returns at most 100 at a time)."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances"
        tis: list[dict[str, Any]] = []
        while True:
            page = self.api_ok("GET", f"{path}?limit=100&offset={len(tis)}")
            tis += page["task_instances"]
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return tis

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until the run ends; its final state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise DeploymentError(f"{dag_id} {run_id} still not finished after {timeout:.0f} s")

    def variable(self, key: str) -> str | None:
        status, body = self.api("GET", f"/api/v2/variables/{urllib.parse.quote(key)}")
        return str(body["value"]) if status == 200 else None

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the metadata database: its rows (none for a statement without results)."""
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.dsn)) as db, db.cursor() as cursor:
            cursor.execute(query, tuple(params))
            rows = list(cursor.fetchall()) if cursor.description is not None else []
            db.commit()
            return rows

    def summary(self) -> str:
        lines = [
            f"Airflow UI:        {self.url}  (login: {ADMIN_USER} / {self.admin_password})",
            f"Local OpenRouter:  {self.fake_url}  (the '{CONN_ID}' connection points at it)",
            f"PostgreSQL:        {self.dsn}",
            f"Redis:             redis://127.0.0.1:{self.ports['redis']}/0",
            f"Home:              {self.home}  (component logs in {self.logs_dir})",
            "Start-up (s):      " + ", ".join(f"{name} {secs}" for name, secs in self.timings.items()),
        ]
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"default {DEFAULT_HOME}")
    args = parser.parse_args(argv)
    home: Path = args.home.resolve()
    if args.command == "up":
        if (home / STATE_FILE).exists() and Deployment.load(home).running():
            print(f"A deployment already runs in {home}: `make down` first", file=sys.stderr)
            return 1
        deployment = Deployment(home=home)
        # Interrupted while starting: stop what had started.
        atexit.register(lambda: None if deployment.timings.get("worker-2") else deployment.stop())
        deployment.start()
        print(deployment.summary())
        print(
            "The example DAGs are paused: unpause one in the UI, or trigger it there. `make down` stops all."
        )
        return 0
    if not (home / STATE_FILE).exists():
        print(f"No deployment in {home}")
        return 0
    deployment = Deployment.load(home)
    if args.command == "status":
        print(deployment.summary())
        print("Running:", ", ".join(deployment.running()) or "nothing")
        return 0
    deployment.stop()
    left = deployment.running()
    print(f"Stopped the deployment in {home}" + (f"; still running: {left}" if left else ""))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
