"""Engine, sessions and migrations, for SQLite and PostgreSQL.

SQLite (the default) runs in WAL mode so the API process and the worker process read while
the other writes. Sessions say which they do (:class:`Sessions`): ``with sessions() as s:``
reads, in a deferred transaction (``BEGIN``) that never waits for a writer;
``with sessions.begin() as s:`` writes, and starts with ``BEGIN IMMEDIATE``, so it takes the
write lock before it reads anything (a claim cannot read a row another writer is changing)
and ``busy_timeout`` makes it wait for other writers instead of failing. A read session must
not write: a deferred transaction that writes after another process committed fails with
``SQLITE_BUSY`` at once, whatever the timeout.

PostgreSQL (``postgresql+psycopg://``) goes through the same models and migrations. Pooled
connections are pinged before use, so after a server restart the first request gets a fresh
connection rather than a dead one; a request that still meets the outage raises
:class:`reel.errors.DatabaseUnavailable` (a 503 for the API, a retry for workers).
Migrations take an advisory lock, so several replicas starting at once apply them once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

MIGRATION_LOCK_KEY = 0x7265656C_6D696772  # "reelmigr": pg_advisory_lock key of migrations

CONNECT_TIMEOUT_S = 10
SQLITE_POOL_SIZE = 40

SINGLE_READ_OPTION = "reel_single_read"
"""Execution option of a connection that runs one read statement (see :meth:`Sessions.read_one`)."""

WRITE_OPTION = "reel_write"
"""Execution option of a connection that will write: on SQLite its transactions begin with
``BEGIN IMMEDIATE`` (see :func:`writing`)."""


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A connection per request thread (anyio runs 40): a smaller pool made requests
        # queue for connections and open (and PRAGMA) throwaway overflow ones under load.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE // 2,
            # The most recently returned connection first: the few that a quiet moment needs
            # stay warm, and the others' page caches (2 MiB each) are not all filled in turn.
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling would BEGIN (deferred) only at the first write;
        # take control, so a write transaction holds the lock from its first read on.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    event.listen(engine, "handle_error", _unavailable_instead_of_disconnects)
    return engine


def _unavailable_instead_of_disconnects(context: ExceptionContext) -> BaseException | None:
    """Turn "the server went away / is starting up" into :class:`DatabaseUnavailable`.

    SQLAlchemy has already invalidated the dead connection by the time this runs, so the next
    checkout connects afresh. The pool's own pre-ping is left alone: it recovers by itself.
    """
    if context.is_pre_ping:
        return None
    import psycopg

    original = context.original_exception
    if context.is_disconnect or isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
        first_line = (str(original).strip().splitlines() or [type(original).__name__])[0]
        return DatabaseUnavailable(f"database unavailable, try again shortly ({first_line})")
    return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get(SINGLE_READ_OPTION, False):
        return  # one statement is a transaction of its own: a BEGIN would only cost a round
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")


def writing(engine: Engine) -> Engine:
    """``engine`` for transactions that write (sharing its pool): on SQLite they take the
    write lock when they begin. Without it a transaction is a deferred read."""
    return engine.execution_options(**{WRITE_OPTION: True})


class Sessions(sessionmaker[Session]):
    """The session factory: ``sessions()`` for reads, ``sessions.begin()`` for writes.

    Both keep loaded objects usable after the session ends (``expire_on_commit=False``).
    ``begin()`` binds its session to :func:`writing`, so on SQLite it waits for the write
    lock up front; a plain session is a deferred read that other writers do not block.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self._write_bind = writing(engine)
        self._single_read_bind = engine.execution_options(**{SINGLE_READ_OPTION: True})

    def begin(self) -> AbstractContextManager[Session]:
        return self._write_transaction()

    def single_read(self) -> AbstractContextManager[Connection]:
        """A pooled connection for one plain (Core) read statement, without an ORM session and
        without the ``BEGIN`` a transaction of several statements needs (87 -> 76 us a
        result poll's read, measured)."""
        return self._single_read_bind.connect()

    @contextmanager
    def _write_transaction(self) -> Iterator[Session]:
        with self(bind=self._write_bind) as session, session.begin():
            yield session


def make_session_factory(engine: Engine) -> Sessions:
    return Sessions(engine)


@contextmanager
def _sqlite_file_lock(data_dir: Path) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes started together."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: Engine, data_dir: Path) -> None:
    """Bring the schema to the newest Alembic revision (procrastinate's schema included, on
    PostgreSQL). Safe to run from several processes at once."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if is_postgres(engine):
        # One transaction: PostgreSQL's DDL is transactional, and the advisory lock taken
        # first makes a second replica wait here, then find the schema at head.
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    with _sqlite_file_lock(data_dir), writing(engine).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
