"""Readiness, as ``GET /readyz`` and ``GET /api/v3/models`` report it: is the database
reachable, which workers are alive, and what each says of its models.

Both routes answer without an API key, so nothing internal leaves through them: no database
host, port, user or driver text, no path on a worker's disk. Callers get a short reason in
a fixed vocabulary that says what to do; the full reason goes to the log (this process's for
the database, the worker's for its models, see ``reel.worker.presence``).

This module is also the read side of worker presence (``live_workers``); workers write their
rows in ``reel.worker.presence``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reel.catalog.registry import MODELS, ModelSpec
from reel.errors import DatabaseUnavailable
from reel.lifecycle.clock import utcnow
from reel.store.db import ping
from reel.store.tables import Worker

log = logging.getLogger(__name__)

PRESENCE_TTL = timedelta(seconds=10)
"""A worker whose row was not refreshed for this long is not alive."""

DATABASE_UNREACHABLE = "database unreachable"
NO_LIVE_WORKER = "no live worker yet"
NO_WORKER_FOR_MODEL = "no worker serving this model is running; start one with `reel worker`"


class ModelReport(TypedDict):
    """What a worker says of one model it serves (``workers.models[model_id]``)."""

    backend: str
    ready: bool
    reason: str


def live_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).where(Worker.last_seen_at >= utcnow() - PRESENCE_TTL)).all())


# The diffusers backend's reasons say what is wrong with the weights, then the fix; they also
# name local paths and cache folders, which must not be shown. Each known problem maps to a
# phrase of our own; anything else falls back to a generic reason, so a wording change there
# can make a reason vaguer but never leak it.
_WEIGHT_PROBLEMS = (
    ("not downloaded", "weights not downloaded"),
    ("does not exist", "weights missing (the local model directory does not exist)"),
    ("incomplete", "weights incomplete"),
)
_FIX_MARKER = "reel models pull"


def public_reason(model_id: str, reason: str) -> str:
    """Why ``model_id`` is not ready, in words safe to show anyone: ``reason`` (the worker's
    own, which may name paths) is never echoed, only classified."""
    problem = next((phrase for marker, phrase in _WEIGHT_PROBLEMS if marker in reason), None)
    if problem is None and _FIX_MARKER not in reason:
        return "not ready on its worker; the worker's log has the reason"
    return f"{problem or 'weights missing'}: run `reel models pull {model_id}` on the worker"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    workers: int
    reason: str = ""
    """Why not ready, for anyone to read (see the module docstring)."""


@dataclass(frozen=True)
class ModelReadiness:
    """One model of the catalog as the model listing shows it."""

    spec: ModelSpec
    backend: str
    """The backend its first worker runs it with (``sandbox``, ``diffusers``), or ``none``."""
    ready: bool
    reason: str
    """Empty when ready; else why not, for anyone to read."""
    workers: int


class ReadinessService:
    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._engine = engine
        self._sessions = sessions

    def check(self, *, expect_worker: bool) -> Readiness:
        """Ready when the database answers and, if ``expect_worker``, a worker is alive."""
        try:
            ping(self._engine)
            with self._sessions() as session:
                workers = len(live_workers(session))
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            # The driver's text names the server's host, port and user: the log's, not the caller's.
            log.warning("readiness: %s: %s", DATABASE_UNREACHABLE, exc)
            return Readiness(False, 0, DATABASE_UNREACHABLE)
        if expect_worker and workers == 0:
            return Readiness(False, 0, NO_LIVE_WORKER)
        return Readiness(True, workers)

    def models(self) -> list[ModelReadiness]:
        """Every model of the catalog with what the live workers report of it."""
        with self._sessions() as session:
            workers = live_workers(session)
        listing = []
        for spec in MODELS.values():
            reports: list[ModelReport] = [w.models[spec.id] for w in workers if spec.id in w.models]
            ready = any(r.get("ready") for r in reports)
            if reports:
                backend = str(reports[0].get("backend"))
                reason = "" if ready else public_reason(spec.id, str(reports[0].get("reason", "")))
            else:
                backend, reason = "none", NO_WORKER_FOR_MODEL
            listing.append(ModelReadiness(spec, backend, ready, reason, len(reports)))
        return listing
