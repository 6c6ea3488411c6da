"""Shared fixtures: one real server for the API tests, with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.postgres import empty_tables, fresh_database
from support.server import LiveServer, create_key

# Long enough for a plain clip even on a loaded 2-core CI machine; the sync-timeout test runs its
# own server with a one-second wait.
SYNC_WAIT_S = "60"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("server")
    live = LiveServer(data_dir, env={"REEL_SYNC_WAIT_S": SYNC_WAIT_S}).start()
    yield live
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def api_key(server: LiveServer) -> str:
    return create_key(server.data_dir, "tests")


@pytest.fixture(scope="session")
def other_key(server: LiveServer) -> str:
    return create_key(server.data_dir, "someone else")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server for this test module, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The module's PostgreSQL database, emptied for this test."""
    empty_tables(postgres_database)
    return postgres_database
