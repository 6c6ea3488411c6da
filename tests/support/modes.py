"""Run one test against every way Reel can be deployed: database × dispatcher.

    @pytest.fixture(params=DISPATCH_MODES)
    def services(request, data_dir):
        with services_in_mode(request, data_dir, lease_s=0.5) as built:
            yield built

``postgresql`` modes use the module's fresh database (the ``postgres_url`` fixture), emptied
before each test; the services are closed afterwards (engine, notification listener).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from reel.wiring import Services
from support.factories import services_for

DISPATCH_MODES = ["table-sqlite", "table-postgresql", "procrastinate-postgresql"]
"""Every dispatcher on every database it supports."""

RUNNER_MODES = ["table-sqlite", "procrastinate-postgresql"]
"""The two deployments: one machine (SQLite), and scale-out (PostgreSQL + procrastinate)."""


def close(services: Services) -> None:
    close_dispatcher = getattr(services.dispatcher, "close", None)
    if close_dispatcher is not None:
        close_dispatcher()
    services.engine.dispose()


@contextmanager
def services_in_mode(request: pytest.FixtureRequest, data_dir: Path, **settings: Any) -> Iterator[Services]:
    dispatch, database = str(request.param).split("-")
    if database == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    services = services_for(data_dir, dispatch=dispatch, **settings)
    try:
        yield services
    finally:
        close(services)
