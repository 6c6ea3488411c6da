"""The real PostgreSQL server on 127.0.0.1:5432 (user postgres, trust auth), for tests and bench.

Every user gets a database of its own, created fresh and dropped afterwards, so suites and
engineers sharing the server never see each other's rows::

    with fresh_database() as url:        # postgresql+psycopg://postgres@127.0.0.1:5432/reel_test_ab12cd
        ...

If the server cannot be reached, this raises: PostgreSQL tests fail, they never skip
(``make check-services`` says how to start it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

HOST = os.environ.get("REEL_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("REEL_TEST_PG_PORT", "5432"))
USER = os.environ.get("REEL_TEST_PG_USER", "postgres")
ADMIN_URL = f"postgresql://{USER}@{HOST}:{PORT}/postgres"

# Every table Reel and procrastinate keep rows in, emptied between tests sharing a database.
TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
    "webhook_deliveries",
    "idempotency_keys",
    "files",
    "predictions",
    "workers",
    "api_keys",
)


def url_of(database: str) -> str:
    return f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{database}"


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL at {HOST}:{PORT} is not reachable ({exc}); the PostgreSQL tests need it. "
            "Run `make check-services` to start it."
        ) from exc


def create_database() -> str:
    name = f"reel_test_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database for the duration; yields its SQLAlchemy URL."""
    name = create_database()
    try:
        yield url_of(name)
    finally:
        drop_database(name)


def empty_tables(url: str) -> None:
    """Delete every row (keeping the schema), so the next test starts from nothing."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        present = [
            table
            for table in TABLES
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() not in (None, (None,))
        ]
        if present:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in present)
                )
            )


def cluster_version() -> str:
    """The Debian cluster version of the local server (the directory in /etc/postgresql)."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.is_dir())
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


def restart_server(wait_s: float = 60.0) -> float:
    """Restart the machine's PostgreSQL (every connection to it breaks). Returns the seconds
    it was unreachable, as seen from here."""
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), "main", "restart"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        command = ["sudo", "-n", *command]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=wait_s)
    deadline = started + wait_s
    while time.monotonic() < deadline:
        try:
            psycopg.connect(ADMIN_URL, connect_timeout=2).close()
            return time.monotonic() - started
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise TimeoutError(f"PostgreSQL did not come back within {wait_s} s")
