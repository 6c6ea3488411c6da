"""Workers announce themselves in the ``workers`` table, for readiness and the model listing.

This is the writing side; ``reel.predictions.readiness`` reads the rows (who is alive, what
they serve) and decides what of them may be shown. A model's full readiness reason (with
paths on this machine) is logged here, where the operator who can fix it looks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from reel.backends.base import Backend
from reel.lifecycle.clock import utcnow
from reel.predictions.readiness import PRESENCE_TTL, ModelReport
from reel.store.tables import Worker
from reel.worker.periodic import every

log = logging.getLogger(__name__)

PRESENCE_INTERVAL_S = 2.0


def describe_backends(backends: dict[str, Backend]) -> dict[str, ModelReport]:
    described: dict[str, ModelReport] = {}
    for model_id, backend in backends.items():
        ready, reason = backend.readiness()
        described[model_id] = {"backend": backend.kind, "ready": ready, "reason": reason}
    return described


class Presence:
    def __init__(self, sessions: sessionmaker[Session], worker_id: str, backends: dict[str, Backend]) -> None:
        self._sessions = sessions
        self._worker_id = worker_id
        self._backends = backends
        self._logged: dict[str, ModelReport] = {}

    def beat(self) -> None:
        now = utcnow()
        # Readiness changes while the worker runs (e.g. `reel models pull` finished): re-read it
        # each beat so the model listing is never stale for long.
        described = describe_backends(self._backends)
        self._log_changes(described)
        with self._sessions.begin() as session:
            row = session.get(Worker, self._worker_id)
            if row is None:
                session.add(
                    Worker(
                        id=self._worker_id,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        models=described,
                        started_at=now,
                        last_seen_at=now,
                    )
                )
            else:
                row.last_seen_at = now
                if described != row.models:
                    row.models = described
            # Forget workers that stopped long ago, so the table does not grow forever.
            session.execute(delete(Worker).where(Worker.last_seen_at < now - PRESENCE_TTL * 30))

    def _log_changes(self, described: dict[str, ModelReport]) -> None:
        """Each model that is not ready, with its full reason, once per change (not every beat),
        and each that became ready since."""
        for model_id, report in described.items():
            before = self._logged.get(model_id)
            if before == report:
                continue
            if not report["ready"]:
                log.warning("worker %s: %s is not ready: %s", self._worker_id, model_id, report["reason"])
            elif before is not None:
                log.info("worker %s: %s is ready now: %s", self._worker_id, model_id, report["reason"])
        self._logged = described

    def run_forever(self, stop: threading.Event) -> None:
        every(PRESENCE_INTERVAL_S, stop, "worker presence update", self.beat)

    def leave(self) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.id == self._worker_id))
