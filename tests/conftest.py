"""Shared fixtures: one real server for the API tests, with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import LiveServer, create_key

# Short enough that a sandbox clip with [sandbox:delay=...] outlasts it; long enough for a plain clip.
SYNC_WAIT_S = "8"


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
