"""Looking for secrets where they must not be: the output of Airflow commands, the files of an Airflow home,
every table of its metadata database, the database file's raw bytes and (in a deployment) the Celery broker.

Hits name the key by its hash, never by the secret, so a failing audit does not leak what it found.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_openrouter.operators.api_key import PLAINTEXT_XCOM_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

KEY_PREFIX = "sk-or-v1-"
DB_FILES = ("airflow.db", "airflow.db-wal", "airflow.db-shm", "airflow.db-journal")


@dataclass(frozen=True)
class Hit:
    channel: str
    where: str
    secret: str

    def __str__(self) -> str:
        # Never print the secret itself: name it by its hash, as OpenRouter does.
        digest = hashlib.sha256(self.secret.encode()).hexdigest()[:12]
        return f"{self.channel}: {self.where} (key with hash {digest}…)"


def _needles(secret: str) -> list[str]:
    """The plaintext, and its random part alone (in case something strips the well-known prefix)."""
    return [secret, secret.removeprefix(KEY_PREFIX)] if secret.startswith(KEY_PREFIX) else [secret]


def _found(secret: str, value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return isinstance(value, str) and any(needle in value for needle in _needles(secret))


def scan_texts(secrets: Sequence[str], texts: Mapping[str, str], channel: str) -> list[Hit]:
    return [Hit(channel, name, s) for name, text in texts.items() for s in secrets if _found(s, text)]


def scan_files(secrets: Sequence[str], root: Path, *, skip: Sequence[str] = ()) -> list[Hit]:
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            data = path.read_bytes()
            hits += [Hit("file", str(path.relative_to(root)), s) for s in secrets if _found(s, data)]
    return hits


def scan_database(secrets: Sequence[str], db_path: Path) -> tuple[list[Hit], list[Hit], set[str]]:
    """Every text and blob cell of every table: ``(hits, opted-in XCom hits, tables scanned)``."""
    hits: list[Hit] = []
    allowed: list[Hit] = []
    with sqlite3.connect(db_path) as db:
        tables = [str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                record = dict(zip(columns, row, strict=True))
                for column, value in record.items():
                    for secret in secrets:
                        if not _found(secret, value):
                            continue
                        where = f"{table}.{column} of row " + ", ".join(
                            f"{c}={record[c]!r}"
                            for c in ("dag_id", "task_id", "map_index", "key", "ti_id", "id")
                            if c in record
                        )
                        opted_in = table == "xcom" and record.get("key") == PLAINTEXT_XCOM_KEY
                        (allowed if opted_in else hits).append(Hit(f"table {table}", where, secret))
    return hits, allowed, set(tables)


def scan_raw_database(secrets: Sequence[str], home: Path, allowed: Sequence[Hit]) -> list[Hit]:
    """The database files as bytes: what the tables no longer show (deleted rows, free pages, the WAL)."""
    exempt = {hit.secret for hit in allowed}
    hits = []
    for name in DB_FILES:
        path = home / name
        if path.exists():
            data = path.read_bytes()
            hits += [Hit("raw database", name, s) for s in secrets if s not in exempt and _found(s, data)]
    return hits


@dataclass
class AuditReport:
    hits: list[Hit]
    allowed: list[Hit]
    tables: set[str]

    def channel(self, prefix: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.channel.startswith(prefix)]


def audit(secrets: Sequence[str], home: Path, outputs: Mapping[str, str]) -> AuditReport:
    assert secrets, "nothing to look for"
    db_hits, allowed, tables = scan_database(secrets, home / "airflow.db")
    hits = [
        *scan_texts(secrets, outputs, "airflow dags test output"),
        *scan_files(secrets, home, skip=DB_FILES),
        *db_hits,
        *scan_raw_database(secrets, home, allowed),
    ]
    return AuditReport(hits=hits, allowed=allowed, tables=tables)


# --- a real deployment: component logs, an Airflow home's files, PostgreSQL --------------------------------


def scan_postgres(secrets: Sequence[str], dsn: str) -> tuple[list[Hit], list[Hit], set[str]]:
    """Every row of every table of the metadata database, read as JSON text:
    ``(hits, opted-in XCom hits, tables scanned)``."""
    import psycopg2

    hits: list[Hit] = []
    allowed: list[Hit] = []
    with psycopg2.connect(dsn) as db, db.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {str(row[0]) for row in cursor.fetchall()}
        for table in sorted(tables):
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            for (text,) in cursor.fetchall():
                for secret in secrets:
                    if not _found(secret, text):
                        continue
                    record = json.loads(text)
                    where = f"{table} row " + ", ".join(
                        f"{c}={record[c]!r}"
                        for c in ("dag_id", "task_id", "map_index", "key", "id")
                        if c in record
                    )
                    opted_in = table == "xcom" and record.get("key") == PLAINTEXT_XCOM_KEY
                    (allowed if opted_in else hits).append(Hit(f"table {table}", where, secret))
    return hits, allowed, tables


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")


def _with_base64_decoded(blob: bytes) -> bytes:
    """``blob`` and every base64 run in it decoded: Celery's messages carry their bodies base64-encoded."""
    decoded = []
    for run in _BASE64_RUN.findall(blob):
        with contextlib.suppress(binascii.Error, ValueError):
            decoded.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
    return b"\n".join([blob, *decoded])


def scan_redis(secrets: Sequence[str], port: int) -> tuple[list[Hit], int]:
    """Every key of every Redis database on ``port`` (the Celery broker: queues, unacknowledged messages,
    bindings), values read by type, base64 bodies decoded: ``(hits, keys scanned)``."""
    import redis

    hits: list[Hit] = []
    scanned = 0
    databases = int(redis.Redis(host="127.0.0.1", port=port).config_get("databases")["databases"])
    for db in range(databases):
        client = redis.Redis(host="127.0.0.1", port=port, db=db)
        for name in client.scan_iter(count=1000):
            scanned += 1
            kind = client.type(name).decode()
            parts: list[bytes] = [name]
            if kind == "string":
                parts.append(client.get(name) or b"")
            elif kind == "list":
                parts += client.lrange(name, 0, -1)
            elif kind == "hash":
                parts += [b for pair in client.hgetall(name).items() for b in pair]
            elif kind == "set":
                parts += list(client.smembers(name))
            elif kind == "zset":
                parts += client.zrange(name, 0, -1)
            blob = _with_base64_decoded(b"\n".join(parts))
            where = f"db {db} key {name.decode(errors='replace')} ({kind})"
            hits += [Hit("redis", where, s) for s in secrets if _found(s, blob)]
    return hits, scanned


@dataclass
class DeploymentAuditReport(AuditReport):
    files_scanned: int = 0
    redis_keys: int = 0


def audit_deployment(
    secrets: Sequence[str],
    *,
    component_logs: Mapping[str, str],
    airflow_home: Path,
    dsn: str,
    pgdata: Path,
    redis_port: int,
) -> DeploymentAuditReport:
    """Each component's log, every file of the Airflow home (task logs included), every table of the
    PostgreSQL database, the database cluster's files as bytes (the WAL keeps what tables no longer
    show), and every key of the Celery broker. Only the XCom a user opted into may hold a plaintext."""
    assert secrets, "nothing to look for"
    redis_hits, redis_keys = scan_redis(secrets, redis_port)
    db_hits, allowed, tables = scan_postgres(secrets, dsn)
    exempt = {hit.secret for hit in allowed}
    raw = [hit for hit in scan_files(secrets, pgdata) if hit.secret not in exempt]
    files = [p for root in (airflow_home, pgdata) for p in root.rglob("*") if p.is_file()]
    hits = [
        *scan_texts(secrets, component_logs, "component log"),
        *scan_files(secrets, airflow_home),
        *db_hits,
        *(Hit("raw database", hit.where, hit.secret) for hit in raw),
        *redis_hits,
    ]
    return DeploymentAuditReport(
        hits=hits, allowed=allowed, tables=tables, files_scanned=len(files), redis_keys=redis_keys
    )
