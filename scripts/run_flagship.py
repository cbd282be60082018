"""Run the flagship example DAG in a real Airflow and print what it did.

``make run`` calls this. It builds a private Airflow home (``.airflow-home/`` at the repository root,
recreated on every run), migrates its metadata database and runs ``example_openrouter_tenant_lifecycle`` with
``airflow dags test``: every task, and every trigger of the deferrable sensor, runs for real.

Where the DAG's keys live:

* no ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` in the environment: a local OpenRouter (the fake in
  ``airflow_provider_openrouter.testing``) is started in this process, and its keys spend money on their own
  so that the sensor has usage to watch;
* ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` set: that account (the real API). The connection is tested first (the
  Airflow UI's connection test): a host that does not answer, a refused key or a key that is not a management
  key ends the run at once with one line saying what to fix (exit code 2). Keys are really created, limited
  and one is deleted; usage only moves if someone uses the keys, so the usage watch ends after
  ``--watch-timeout`` seconds and the DAG carries on.

The summary at the end is read back from the API with ``OpenRouterHook``. It names keys by hash and masked
label; a plaintext key is never printed (the DAG delivers each one to an encrypted Airflow Variable).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow_provider_openrouter.testing import LocalOpenRouter

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_openrouter_tenant_lifecycle"
DEFAULT_HOME = ROOT / ".airflow-home"
CONN_VAR = "AIRFLOW_CONN_OPENROUTER_DEFAULT"
# Marks a folder as ours, so that recreating the home never deletes a directory someone else made.
HOME_MARKER = ".openrouter-flagship-home"
AIRFLOW = Path(sys.executable).with_name("airflow")

# What the local OpenRouter's keys spend per second: enough that every tenant crosses the watched share of its
# limit within seconds, slow enough that the sensor has to wait (and defer) first.
LOCAL_SPEND_PER_SECOND = 0.5


@dataclass(frozen=True)
class Tenant:
    tenant: str
    limit: float
    limit_reset: str

    def to_conf(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "limit": self.limit, "limit_reset": self.limit_reset}


TENANTS = (
    Tenant("acme", 5.0, "monthly"),
    Tenant("globex", 2.0, "daily"),
    Tenant("initech", 1.0, "weekly"),
)
KEY_PREFIX = "airflow-demo-"
WATCHED_SHARE = 0.8


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="Airflow home to (re)create")
    parser.add_argument("--verbose", action="store_true", help="stream Airflow's output while the DAG runs")
    parser.add_argument(
        "--watch-timeout",
        type=int,
        default=None,
        help="seconds the sensor waits for each tenant's usage (default: 120 locally, 30 on a real account)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    home: Path = args.home.resolve()
    real_account = bool(os.environ.get(CONN_VAR))

    print(f"Airflow home: {_shown(home)} (recreated)")
    prepare_home(home)
    env = airflow_env(home)
    if real_account:
        # A connection that cannot work would otherwise show as a wall of task tracebacks after the DAG ran.
        ok, message = check_connection(env)
        if not ok:
            print(f"{message} To run against a local OpenRouter instead, unset {CONN_VAR}.", file=sys.stderr)
            return 2
        print(f"{CONN_VAR}: {message}")
    step_started = time.monotonic()
    _run_quiet([str(AIRFLOW), "db", "migrate"], env, home / "migrate.log", "airflow db migrate")
    print(f"Metadata database migrated ({time.monotonic() - step_started:.0f} s)")

    with ExitStack() as stack:
        fake: LocalOpenRouter | None = None
        if real_account:
            print(f"Using the OpenRouter account of {CONN_VAR} (the real API: keys are really created)")
        else:
            from airflow_provider_openrouter.testing import LocalOpenRouter

            fake = stack.enter_context(LocalOpenRouter(spend_per_second=LOCAL_SPEND_PER_SECOND))
            env.update(fake.airflow_env())
            print(
                f"Started a local OpenRouter at {fake.base_url} "
                f"(its keys spend ${LOCAL_SPEND_PER_SECOND:.2f}/s)"
            )

        watch_timeout = args.watch_timeout or (30 if real_account else 120)
        conf = {
            "tenants": [t.to_conf() for t in TENANTS],
            "key_prefix": KEY_PREFIX,
            "decommission": TENANTS[-1].tenant,
            "watch_share": WATCHED_SHARE,
            "watch_timeout": watch_timeout,
        }
        print(
            f"Running {DAG_ID} with `airflow dags test`: provision {len(TENANTS)} tenants, apply their "
            f"limits, watch usage until {WATCHED_SHARE:.0%} of each limit, top up, decommission "
            f"{TENANTS[-1].tenant}"
        )
        step_started = time.monotonic()
        log_path = home / "dags-test.log"
        code = _run_logged(
            [str(AIRFLOW), "dags", "test", DAG_ID, "--conf", json.dumps(conf)], env, log_path, args.verbose
        )
        if fake is not None:
            fake.set_spend_per_second(0)  # hold usage still while the summary reads it
        if code != 0:
            print(_tail(log_path), file=sys.stderr)
            print(f"\nThe DAG run failed (exit {code}); full output: {_shown(log_path)}", file=sys.stderr)
            return 1
        print(f"DAG run finished ({time.monotonic() - step_started:.0f} s); output: {_shown(log_path)}")

        base_url, summary = read_summary(env, home)
        print()
        print(render_summary(summary, base_url=base_url))
        if fake is not None:
            print(
                f"(The local keys spent ${LOCAL_SPEND_PER_SECOND:.2f}/s each while the DAG ran, until their "
                "limit stopped them.)"
            )
            secrets_found = leak_check(home, fake.issued_plaintexts)
            print(secrets_found)
            if secrets_found.startswith("LEAK"):
                return 1
    print(f"\nDone in {time.monotonic() - started:.0f} s.")
    return 0


# ------------------------------------------------------------------------------------------- Airflow home ---


def prepare_home(home: Path) -> None:
    if home.exists():
        if not (home / HOME_MARKER).exists():
            raise SystemExit(f"{home} exists and was not made by this script: choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / HOME_MARKER).write_text(
        "Created by scripts/run_flagship.py; deleted and recreated on every run.\n"
    )
    # A configuration file of its own (rather than environment variables only), so that `airflow` commands run
    # later with AIRFLOW_HOME=<home> see the same database and can decrypt its Variables.
    from cryptography.fernet import Fernet

    (home / "airflow.cfg").write_text(
        "[core]\n"
        f"dags_folder = {ROOT / 'example_dags'}\n"
        "load_examples = False\n"
        f"fernet_key = {Fernet.generate_key().decode()}\n"
        "unit_test_mode = False\n"
        "[database]\n"
        f"sql_alchemy_conn = sqlite:///{home / 'airflow.db'}\n"
        "[logging]\n"
        f"base_log_folder = {home / 'logs'}\n"
        "logging_level = INFO\n"
        "[api_auth]\n"
        f"jwt_secret = {secrets.token_hex(32)}\n"
    )


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for the `airflow` commands: this home's configuration, nothing from another Airflow."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AIRFLOW__") and name not in {"AIRFLOW_HOME", "AIRFLOW_CONFIG"}
    }
    env["AIRFLOW_HOME"] = str(home)
    env["AIRFLOW_CONFIG"] = str(home / "airflow.cfg")
    # The example DAGs import the provider from this checkout even when it is not installed in editable mode.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def _run_quiet(cmd: list[str], env: Mapping[str, str], log_path: Path, what: str) -> None:
    with log_path.open("w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        print(_tail(log_path), file=sys.stderr)
        raise SystemExit(f"{what} failed (exit {code}); full output: {_shown(log_path)}")


def _run_logged(cmd: list[str], env: Mapping[str, str], log_path: Path, echo: bool) -> int:
    """Run ``cmd`` with its output in ``log_path`` (and on the terminal with ``echo``)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
        return proc.wait()


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------- summary ---


@dataclass(frozen=True)
class TenantSummary:
    tenant: Tenant
    key_name: str
    variable: str
    variable_stored: bool
    key: dict[str, Any] | None  # the key as the API reports it now; None once deleted


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_connection(env: Mapping[str, str]) -> tuple[bool, str]:
    """The Airflow UI's connection test on ``AIRFLOW_CONN_OPENROUTER_DEFAULT``: one line, never a key."""
    import logging

    # The verdict says it all; the transport's own warning about the failed attempt would only repeat it.
    transport_log = logging.getLogger("airflow_provider_openrouter.transport")
    level = transport_log.level
    transport_log.setLevel(logging.ERROR)
    try:
        with _environment({k: v for k, v in env.items() if k.startswith(("AIRFLOW", "PYTHONPATH"))}):
            from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

            return OpenRouterHook().test_connection()
    finally:
        transport_log.setLevel(level)


def read_summary(env: Mapping[str, str], home: Path) -> tuple[str, list[TenantSummary]]:
    """Each tenant's key as the API reports it now (``OpenRouterHook``) and whether its Variable exists."""
    with sqlite3.connect(home / "airflow.db") as db:
        variables = {str(row[0]) for row in db.execute("SELECT key FROM variable")}
    with _environment({k: v for k, v in env.items() if k.startswith(("AIRFLOW", "PYTHONPATH"))}):
        from airflow_provider_openrouter._connection import OpenRouterConnectionConfig
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        hook = OpenRouterHook()
        base_url = OpenRouterConnectionConfig.from_connection(
            hook.get_connection(hook.openrouter_conn_id)
        ).base_url
        out = []
        for tenant in TENANTS:
            name = KEY_PREFIX + tenant.tenant
            key = hook.find_key_by_name(name)
            variable = f"openrouter_api_key_{tenant.tenant}"
            out.append(
                TenantSummary(
                    tenant=tenant,
                    key_name=name,
                    variable=variable,
                    variable_stored=variable in variables,
                    key=key.to_dict() if key is not None else None,
                )
            )
        return base_url, out


def _money(value: float | None) -> str:
    return "none" if value is None else f"${value:,.2f}"


def render_summary(rows: Sequence[TenantSummary], *, base_url: str) -> str:
    header = ("tenant", "key (hash)", "label", "limit", "usage (window)", "usage (lifetime)", "status")
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        key = row.key
        if key is None:
            status = "decommissioned: key deleted" + (
                ", Variable still present" if row.variable_stored else ", Variable removed"
            )
            table.append((row.tenant.tenant, "-", "-", "-", "-", "-", status))
            continue
        reset = key.get("limit_reset")
        window_usage = {
            "daily": key["usage_daily"],
            "weekly": key["usage_weekly"],
            "monthly": key["usage_monthly"],
        }.get(reset or "", key["usage"])
        limit = f"{_money(key['limit'])}/{reset}" if reset else _money(key["limit"])
        changes = []
        if key["limit"] is not None and key["limit"] != row.tenant.limit:
            changes.append(f"topped up from {_money(row.tenant.limit)}")
        status = "disabled" if key["disabled"] else "active"
        status += "; " + "; ".join(changes) if changes else ""
        status += f"; key in Variable {row.variable}" if row.variable_stored else "; no Variable!"
        table.append(
            (
                row.tenant.tenant,
                f"{key['hash'][:16]}…",
                str(key["label"]),
                limit,
                _money(window_usage),
                _money(key["usage"]),
                status,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [f"Tenants on {base_url}, read back with OpenRouterHook:", ""]
    for i, r in enumerate(table):
        lines.append("  " + "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(r)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines += [
        "",
        "Plaintext keys went only to the tenants' Airflow Variables (encrypted in the metadata database);",
        "none is printed here.",
    ]
    return "\n".join(lines)


def leak_check(home: Path, plaintexts: Sequence[str]) -> str:
    """Scan every file of the Airflow home (logs, raw database, the run's output) for issued plaintexts."""
    needles = [p.encode() for p in plaintexts]
    hits = sorted(
        {
            _shown(path)
            for path in home.rglob("*")
            if path.is_file() and any(needle in path.read_bytes() for needle in needles)
        }
    )
    if hits:
        return f"LEAK: a plaintext key appears in {', '.join(hits)}"
    return (
        f"Secret check: none of the {len(plaintexts)} plaintext keys the local OpenRouter issued (management "
        f"key included) appears in the run's output, task logs or metadata database files."
    )


if __name__ == "__main__":
    sys.exit(main())
