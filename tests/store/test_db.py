"""The store on both databases: migrations (also when several processes run them at once),
column types, SQLite's read and write transactions, and what a request sees when the
database is down."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from reel.errors import DatabaseUnavailable
from reel.predictions.limits import DailyCount, daily_counts
from reel.store.db import (
    MIGRATIONS_DIR,
    current_revision,
    make_engine,
    make_session_factory,
    migrate,
    normalise_url,
    ping,
)
from reel.store.tables import Prediction
from reel.wiring import Services
from support.factories import insert_prediction, services_for
from support.modes import close
from support.postgres import fresh_database

REEL = [sys.executable, "-m", "reel.cli"]


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{data_dir / 'reel.db'}"


@pytest.fixture
def services(database_url: str, data_dir: Path) -> Iterator[Services]:
    built = services_for(data_dir, database_url=database_url)
    yield built
    close(built)


def test_migrations_reach_head_and_are_idempotent(services: Services, data_dir: Path) -> None:
    assert current_revision(services.engine) == HEAD
    migrate(services.engine, data_dir)  # again: nothing to do, nothing breaks
    assert current_revision(services.engine) == HEAD


def test_datetimes_come_back_as_the_same_utc_instant(services: Services) -> None:
    key_id = services.keys.create("t")[1].id
    prediction_id = insert_prediction(services, key_id)
    in_tokyo = datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=timezone(timedelta(hours=9)))
    with services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.finished_at = in_tokyo
    with services.sessions() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None and row.finished_at is not None
        assert row.finished_at == in_tokyo and row.finished_at.utcoffset() is not None
        # Comparisons in SQL are by instant, whatever offset was written.
        earlier = in_tokyo.astimezone(UTC) - timedelta(seconds=1)
        found = session.scalars(select(Prediction).where(Prediction.finished_at > earlier)).all()
        assert [r.id for r in found] == [prediction_id]


def test_naive_datetimes_are_refused(services: Services) -> None:
    key_id = services.keys.create("t")[1].id
    prediction_id = insert_prediction(services, key_id)
    with pytest.raises(Exception, match="naive datetime"), services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.finished_at = datetime(2026, 1, 1)  # naive: no tzinfo


def test_json_columns_round_trip(services: Services) -> None:
    key_id = services.keys.create("t")[1].id
    prediction_id = insert_prediction(services, key_id)
    params = {"prompt": "a cat ☕", "seed": 2**40, "nested": {"list": [1, 2.5, None, True]}}
    with services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.params, row.outputs, row.nsfw = params, ["outputs/a.mp4"], [False]
    with services.sessions() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        assert (row.params, row.outputs, row.nsfw) == (params, ["outputs/a.mp4"], [False])


def test_sqlite_reads_do_not_wait_for_a_writer_and_writes_still_take_turns(data_dir: Path) -> None:
    services = services_for(data_dir)
    try:
        prediction_id = insert_prediction(services, services.keys.create("t")[1].id)
        # Another process (a worker's heartbeat, say) holds the write lock with a change pending.
        holder = sqlite3.connect(data_dir / "reel.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE predictions SET progress = 0.5 WHERE id = ?", (prediction_id,))
        try:
            seen: list[float] = []

            def read() -> None:
                ping(services.engine)
                with services.sessions() as session:
                    row = session.get(Prediction, prediction_id)
                    assert row is not None
                    seen.append(row.progress)

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=5)  # far below the 30 s busy_timeout a blocked read would wait
            assert not reader.is_alive(), "a read waited for the writer's lock"
            assert seen == [0.0]  # the last committed state

            outcome: list[float | BaseException] = []

            def write() -> None:
                try:
                    with services.sessions.begin() as session:
                        row = session.get(Prediction, prediction_id)
                        assert row is not None
                        row.progress += 0.25
                        outcome.append(row.progress)
                except BaseException as exc:
                    outcome.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            writer.join(timeout=0.5)
            assert writer.is_alive() and not outcome, "a write did not wait for the lock"
        finally:
            holder.execute("COMMIT")
            holder.close()
        writer.join(timeout=10)
        # The write began after the holder committed, so it read 0.5, not a stale 0.0 (with a
        # deferred BEGIN it would have read 0.0 and then failed with "database is locked").
        assert outcome == [0.75]
        with services.sessions() as session:
            row = session.get(Prediction, prediction_id)
            assert row is not None and row.progress == 0.75
    finally:
        close(services)


def test_sqlite_auth_checks_do_not_wait_for_a_writer(data_dir: Path) -> None:
    services = services_for(data_dir)
    try:
        plaintext, _ = services.keys.create("t")
        services.keys.authenticate(plaintext)  # records last_used_at: the next check only reads
        holder = sqlite3.connect(data_dir / "reel.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE predictions SET progress = 0.5")
        try:
            checked: list[str] = []
            checker = threading.Thread(
                target=lambda: checked.append(services.keys.authenticate(plaintext).key_id)
            )
            checker.start()
            checker.join(timeout=5)  # far below the 30 s busy_timeout a blocked check would wait
            assert not checker.is_alive(), "an auth check waited for the writer's lock"
            assert len(checked) == 1
        finally:
            holder.execute("COMMIT")
            holder.close()
    finally:
        close(services)


def test_several_processes_migrating_one_new_database_at_once_all_succeed(data_dir: Path) -> None:
    with fresh_database() as url:
        env = {**os.environ, "REEL_DATABASE_URL": url}
        runs = [
            subprocess.Popen(
                [*REEL, "migrate", "--data-dir", str(data_dir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], "\n".join(outputs)
        engine = make_engine(url)
        try:
            assert current_revision(engine) == HEAD
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
                assert conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None
        finally:
            engine.dispose()


def test_the_procrastinate_schema_comes_and_goes_with_its_migration(
    postgres_url: str, data_dir: Path
) -> None:
    from alembic import command

    engine = make_engine(postgres_url)
    try:
        migrate(engine, data_dir)
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None
            assert (
                conn.execute(
                    text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%'")
                ).scalar()
                == 0
            )
        migrate(engine, data_dir)
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None
    finally:
        engine.dispose()


def test_postgresql_urls_use_psycopg_3() -> None:
    assert normalise_url("postgresql://u:p@db:5432/reel").startswith("postgresql+psycopg://u:p@db:5432/reel")
    assert normalise_url("postgresql+psycopg://db/reel") == "postgresql+psycopg://db/reel"


def test_a_database_that_is_down_raises_database_unavailable() -> None:
    # Nothing listens on port 1: what a request meets while PostgreSQL restarts.
    engine = make_engine("postgresql://postgres@127.0.0.1:1/reel")
    try:
        sessions = make_session_factory(engine)
        with pytest.raises(DatabaseUnavailable, match="database unavailable"), sessions() as session:
            session.get(Prediction, "x")
    finally:
        engine.dispose()


def test_the_daily_usage_ledger_is_filled_from_the_predictions_there_are(
    services: Services, data_dir: Path
) -> None:
    """Migration 0011 counts the predictions made before it, per key, UTC day and model."""
    from alembic import command

    key_id = services.keys.create("t")[1].id
    # 2 March in Tokyo, 1 March 23:00 and 23:30 in UTC: the UTC day counts.
    early_in_tokyo = datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    days = [early_in_tokyo, early_in_tokyo + timedelta(minutes=30), early_in_tokyo + timedelta(days=1)]
    for created_at, model in zip(days, ["runwayml/gen4-turbo", "runwayml/gen4-turbo", "other"], strict=True):
        prediction_id = insert_prediction(services, key_id, model)
        with services.sessions.begin() as session:
            row = session.get(Prediction, prediction_id)
            assert row is not None
            row.created_at = created_at
    cfg = alembic_config()
    with services.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    migrate(services.engine, data_dir)
    with services.sessions() as session:
        assert daily_counts(session, key_id, date(2026, 3, 1), date(2026, 3, 4)) == [
            DailyCount(date(2026, 3, 1), "runwayml/gen4-turbo", 2),
            DailyCount(date(2026, 3, 2), "other", 1),
        ]
