"""An upload's bytes are stored outside any database transaction, then recorded in a short
fenced one; racing PUTs of one ticket and records that fail leave no stray bytes behind."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from reel.errors import DatabaseUnavailable, NotFound
from reel.lifecycle.clock import utcnow
from reel.predictions.files import UNUSED_TICKET_TTL, FileService
from reel.predictions.keys import Principal
from reel.storage.local import LocalBlobStore
from reel.store.db import Sessions, make_engine, make_session_factory
from reel.store.tables import StoredFile
from reel.wiring import Services
from support.factories import services_for
from support.media import png_bytes
from support.modes import close

LIMIT = 1 << 20
WAIT_S = 10.0  # generous: only "blocked" (SQLite's busy_timeout is 30 s) fails it


class BlockingPuts(LocalBlobStore):
    """A local store whose ``put_file`` waits until the test releases it (a slow S3 put)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def put_file(self, key: str, source: Path) -> None:
        self.entered.release()
        assert self.release.wait(WAIT_S * 3), "the test never released put_file"
        super().put_file(key, source)

    def stored(self) -> list[Path]:
        return sorted(p for p in (self.root / "uploads").rglob("*") if p.is_file())


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    settings: dict[str, Any] = {"dispatch": "table"}
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    built = services_for(data_dir, **settings)
    yield built
    close(built)


@pytest.fixture
def owner(services: Services) -> Principal:
    return Principal(key_id=services.keys.create("uploads")[1].id, webhook_secret="")


@pytest.fixture
def blobs(tmp_path: Path) -> BlockingPuts:
    return BlockingPuts(tmp_path / "blobs")


@pytest.fixture
def sessions(services: Services) -> Iterator[Sessions]:
    """Sessions on an engine of their own, so its pool shows what the file service holds."""
    engine = make_engine(services.settings.effective_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def received_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` in a thread; its result (or exception) lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_slow_put_holds_no_connection_and_no_lock(
    services: Services, owner: Principal, sessions: Sessions, blobs: BlockingPuts, tmp_path: Path
) -> None:
    files = FileService(sessions, blobs, LIMIT)
    data = png_bytes(32, 32)
    ticket = files.create_ticket(owner, "cat.png", len(data), "image/png")
    received = received_file(tmp_path, "received", data)
    upload, uploaded = in_thread(lambda: files.complete_upload(ticket.file.id, ticket.token, received))
    try:
        assert blobs.entered.acquire(timeout=WAIT_S), "put_file was never called"
        pool = sessions.kw["bind"].pool
        assert pool.checkedout() == 0, "a database connection is held while the bytes are stored"

        def another_write() -> None:  # a worker's heartbeat, say, touching the same row
            with services.sessions.begin() as session:
                assert session.get(StoredFile, ticket.file.id, with_for_update=True) is not None

        writer, wrote = in_thread(another_write)
        writer.join(WAIT_S)
        assert not writer.is_alive(), "another write waited for the upload's bytes"
        assert wrote == [None]
    finally:
        blobs.release.set()
        upload.join(WAIT_S)
    [row] = uploaded
    assert isinstance(row, StoredFile) and row.complete and row.size == len(data)
    served = files.served(row.id, "cat.png")
    assert blobs.read_bytes(served.blob_key) == data and served.size == len(data)


def test_two_puts_of_one_ticket_record_one_upload_and_leave_only_its_bytes(
    services: Services, owner: Principal, sessions: Sessions, blobs: BlockingPuts, tmp_path: Path
) -> None:
    files = FileService(sessions, blobs, LIMIT)
    ticket = files.create_ticket(owner, "cat.png", 2000, "image/png")
    first = received_file(tmp_path, "first", b"1" * 1000)
    second = received_file(tmp_path, "second", b"2" * 2000)
    runs = [
        in_thread(functools.partial(files.complete_upload, ticket.file.id, ticket.token, source))
        for source in (first, second)
    ]
    # Both attempts are past the ticket check and storing their bytes at the same time.
    assert blobs.entered.acquire(timeout=WAIT_S) and blobs.entered.acquire(timeout=WAIT_S)
    blobs.release.set()
    for thread, _ in runs:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    outcomes = [outcome for _, [outcome] in runs]
    recorded = [o for o in outcomes if isinstance(o, StoredFile)]
    refused = [o for o in outcomes if isinstance(o, NotFound)]
    assert len(recorded) == 1 and len(refused) == 1, outcomes

    served = files.served(ticket.file.id, "cat.png")
    assert served.size == recorded[0].size == blobs.size(served.blob_key)
    assert blobs.read_bytes(served.blob_key) in (b"1" * 1000, b"2" * 2000)
    assert blobs.stored() == [blobs.local_path(served.blob_key)]  # the loser's bytes are gone


class WritesFail(Sessions):
    """Reads work; every write meets a database outage."""

    def begin(self) -> AbstractContextManager[Session]:
        raise DatabaseUnavailable("database unavailable, try again shortly (test)")


def test_an_upload_the_database_does_not_record_leaves_no_bytes(
    services: Services, owner: Principal, blobs: BlockingPuts, tmp_path: Path
) -> None:
    blobs.release.set()
    files = FileService(services.sessions, blobs, LIMIT)
    data = png_bytes(16, 16)
    ticket = files.create_ticket(owner, "cat.png", len(data), "image/png")
    failing = FileService(WritesFail(services.engine), blobs, LIMIT)

    with pytest.raises(DatabaseUnavailable):
        failing.complete_upload(ticket.file.id, ticket.token, received_file(tmp_path, "r", data))
    with pytest.raises(DatabaseUnavailable):
        failing.store_upload(owner, "one-step.png", "image/png", data)
    assert blobs.stored() == []

    # The ticket is still open: the client's retry, once the database is back, succeeds.
    row = files.complete_upload(ticket.file.id, ticket.token, received_file(tmp_path, "r", data))
    assert row.complete and blobs.stored() == [blobs.local_path(row.blob_key)]


class CompletesDuringDelete(LocalBlobStore):
    """A store whose ``delete`` first lets a PUT of the ticket through (a sweep on a machine
    whose clock runs ahead, racing the upload)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.during_delete: Callable[[], object] | None = None

    def delete(self, key: str) -> None:
        if self.during_delete is not None:
            self.during_delete, during = None, self.during_delete
            during()
        super().delete(key)


def test_a_sweep_keeps_a_ticket_whose_bytes_were_recorded_while_it_ran(
    services: Services, owner: Principal, tmp_path: Path
) -> None:
    blobs = CompletesDuringDelete(tmp_path / "blobs")
    files = FileService(services.sessions, blobs, LIMIT)
    data = png_bytes(16, 16)
    ticket = files.create_ticket(owner, "cat.png", len(data), "image/png")
    received = received_file(tmp_path, "r", data)
    blobs.during_delete = lambda: files.complete_upload(ticket.file.id, ticket.token, received)

    assert files.sweep_expired(now=utcnow() + UNUSED_TICKET_TTL + timedelta(hours=1)) == 0
    served = files.served(ticket.file.id, "cat.png")
    assert blobs.read_bytes(served.blob_key) == data
