"""Dispatch through the predictions table itself: the default, single-machine mode.

A claim is a lease: ``worker_id`` plus ``lease_expires_at``, extended by heartbeats. A worker
that dies stops heartbeating; its prediction is claimed again once the lease runs out, or at
once when the dead worker was a process on this host (its pid is gone). After
``max_attempts`` starts the prediction is failed with the reason instead, so a prediction
that kills its worker cannot loop forever.

Predictions whose worker died are taken over first; then waiting ones start in the fair
order of :mod:`reel.dispatch.fair` (round robin by key, within each key's ``max_concurrent``).
Every claim runs in one write transaction (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP
LOCKED`` and a lock on the key's row elsewhere), so two workers never hold the same
prediction, nor start more of one key's predictions than its cap.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.fair import CANDIDATES, fair_order, lock_key_and_check_cap
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
        default_max_concurrent: int | None = None,
    ) -> None:
        """``default_max_concurrent``: the cap of keys that have none of their own (None: no cap)."""
        self._sessions = sessions
        self._default_max_concurrent = default_max_concurrent
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
            lease_end = now + self._lease
            while (row := self._lapsed(session, models, now)) is not None:
                if row.attempts >= self._max_attempts:
                    transitions.give_up(session, row, self._on_failed)
                    continue
                return transitions.start(session, row, worker_id, lease_end)
            return self._next_in_turn(session, models, worker_id, lease_end)

    def _locking(self, session: Session) -> bool:
        """SQLite's claim transaction is already exclusive; elsewhere rows are locked one by one."""
        return session.bind is not None and session.bind.dialect.name != "sqlite"

    def _lapsed(self, session: Session, models: Collection[str], now: object) -> Prediction | None:
        """The oldest prediction whose worker stopped heartbeating: it was started once, so it
        goes before every waiting one."""
        query = (
            select(Prediction)
            .where(
                Prediction.deleted_at.is_(None),
                Prediction.model.in_(list(models)),
                Prediction.status == Status.PROCESSING,
                Prediction.lease_expires_at < now,
            )
            .order_by(Prediction.created_at)
            .limit(1)
        )
        if self._locking(session):
            query = query.with_for_update(skip_locked=True)
        return session.scalars(query).first()

    def _next_in_turn(
        self, session: Session, models: Collection[str], worker_id: str, lease_end: object
    ) -> Claim | None:
        candidates = session.execute(
            fair_order(models, self._default_max_concurrent, eligible_only=True).limit(CANDIDATES)
        ).all()
        for candidate in candidates:
            query = select(Prediction).where(
                Prediction.id == candidate.id,
                Prediction.status == Status.CREATED,
                Prediction.deleted_at.is_(None),
            )
            if not self._locking(session):
                row = session.scalars(query).first()
            else:
                row = session.scalars(query.with_for_update(skip_locked=True)).first()
                if (
                    row is not None
                    and candidate.cap is not None
                    and not lock_key_and_check_cap(session, row.key_id, self._default_max_concurrent)
                ):
                    continue  # another worker started one of this key's predictions meanwhile
            if row is not None:
                return transitions.start(session, row, worker_id, lease_end)
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
