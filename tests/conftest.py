"""Shared fixtures: one real server for the API tests, with its own data directory, and the app
in-process for the tests of validation and rendering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.postgres import empty_tables, fresh_database
from support.server import LiveServer, create_key

if TYPE_CHECKING:
    from support.inprocess import InProcessReel


# `make test` must fail loudly when something it needs is missing (PostgreSQL, diffusers, an
# IPv6 loopback, ...): a skipped test is reported as a failure, with the reason it gave.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _no_skips(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _no_skips(outcome.get_result())  # type: ignore[attr-defined]


def _no_skips(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow: {reason}"


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


@pytest.fixture(scope="module")
def reel_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReel]:
    """The app in-process with a sandbox worker (see support.inprocess), on a data dir of this
    module's own; a 5xx answer fails the test that got it."""
    from support.inprocess import in_process_reel  # imports the app: only for modules that use it

    with in_process_reel(tmp_path_factory.mktemp("inprocess"), sync_wait_s=float(SYNC_WAIT_S)) as reel:
        yield reel


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
