"""Workers announce themselves in the ``workers`` table, for readiness and the model listing."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from reel.backends.base import Backend
from reel.lifecycle.clock import utcnow
from reel.store.tables import Worker
from reel.worker.periodic import every

log = logging.getLogger(__name__)

PRESENCE_INTERVAL_S = 2.0
PRESENCE_TTL = timedelta(seconds=10)


def describe_backends(backends: dict[str, Backend]) -> dict[str, dict[str, object]]:
    described: dict[str, dict[str, object]] = {}
    for model_id, backend in backends.items():
        ready, reason = backend.readiness()
        described[model_id] = {"backend": backend.kind, "ready": ready, "reason": reason}
    return described


class Presence:
    def __init__(self, sessions: sessionmaker[Session], worker_id: str, backends: dict[str, Backend]) -> None:
        self._sessions = sessions
        self._worker_id = worker_id
        self._backends = backends

    def beat(self) -> None:
        now = utcnow()
        with self._sessions.begin() as session:
            row = session.get(Worker, self._worker_id)
            if row is None:
                session.add(
                    Worker(
                        id=self._worker_id,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        models=describe_backends(self._backends),
                        started_at=now,
                        last_seen_at=now,
                    )
                )
            else:
                row.last_seen_at = now
                # Readiness changes while the worker runs (e.g. `reel models pull` finished):
                # re-read it each beat so the model listing is never stale for long.
                described = describe_backends(self._backends)
                if described != row.models:
                    row.models = described
            # Forget workers that stopped long ago, so the table does not grow forever.
            session.execute(delete(Worker).where(Worker.last_seen_at < now - PRESENCE_TTL * 30))

    def run_forever(self, stop: threading.Event) -> None:
        every(PRESENCE_INTERVAL_S, stop, "worker presence update", self.beat)

    def leave(self) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.id == self._worker_id))


def live_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).where(Worker.last_seen_at >= utcnow() - PRESENCE_TTL)).all())
