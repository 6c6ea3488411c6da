"""Dispatch through the predictions table itself: the default, single-machine mode.

A claim is a lease: ``worker_id`` plus ``lease_expires_at``, extended by heartbeats. A worker
that dies stops heartbeating; its prediction is claimed again once the lease runs out, or at
once when the dead worker was a process on this host (its pid is gone). After
``max_attempts`` starts the prediction is failed with the reason instead, so a prediction
that kills its worker cannot loop forever.

Every claim runs in one write transaction (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP
LOCKED`` elsewhere), so two workers never hold the same prediction.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from reel.lifecycle import transitions
from reel.lifecycle.clock import utcnow
from reel.lifecycle.states import Status
from reel.lifecycle.transitions import Claim, EndedHook
from reel.store.tables import Prediction


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def _pid_is_dead_here(worker_id: str) -> bool:
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class TableDispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lease_s: float,
        max_attempts: int,
        on_failed: EndedHook | None = None,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._lease = timedelta(seconds=lease_s)
        self._max_attempts = max_attempts
        self._on_failed = on_failed
        self._poll_interval_s = poll_interval_s

    def submitted(self, session: Session, prediction_id: str, model: str) -> None:
        # The inserted row is the queue entry; nothing else to record.
        del session, prediction_id, model

    def cancelled(self, prediction_ids: Collection[str]) -> None:
        # The row's status is what the worker's heartbeat reads; nothing else to tell.
        del prediction_ids

    def claim(self, worker_id: str, models: Collection[str]) -> Claim | None:
        with self._sessions.begin() as session:
            now = utcnow()
            self._expire_dead_local_workers(session)
            waiting = or_(
                Prediction.status == Status.CREATED,
                and_(Prediction.status == Status.PROCESSING, Prediction.lease_expires_at < now),
            )
            query = (
                select(Prediction)
                .where(Prediction.deleted_at.is_(None), Prediction.model.in_(list(models)), waiting)
                .order_by(Prediction.created_at)
                .limit(1)
            )
            if session.bind is not None and session.bind.dialect.name != "sqlite":
                query = query.with_for_update(skip_locked=True)
            while (row := session.scalars(query).first()) is not None:
                if row.status == Status.PROCESSING and row.attempts >= self._max_attempts:
                    transitions.give_up(session, row, self._on_failed)
                    continue
                return transitions.start(session, row, worker_id, now + self._lease)
        return None

    def _expire_dead_local_workers(self, session: Session) -> None:
        held = session.execute(
            select(Prediction.id, Prediction.worker_id).where(
                Prediction.status == Status.PROCESSING, Prediction.worker_id.is_not(None)
            )
        ).all()
        dead = [pid for pid, worker in held if worker and _pid_is_dead_here(worker)]
        if dead:
            session.execute(
                update(Prediction)
                .where(Prediction.id.in_(dead), Prediction.status == Status.PROCESSING)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        with self._sessions.begin() as session:
            return transitions.extend_lease(session, claim, utcnow() + self._lease, progress)

    def release(self, claim: Claim) -> None:
        with self._sessions.begin() as session:
            transitions.requeue(session, claim)

    def finished(self, claim: Claim) -> None:
        # The fenced write that ended the prediction also ended the lease.
        del claim

    def wait_for_work(self, models: Collection[str], stop: threading.Event) -> None:
        # SQLite has no notifications: poll. A claim is one indexed query.
        del models
        stop.wait(self._poll_interval_s)

    def leave(self, worker_id: str) -> None:
        del worker_id
