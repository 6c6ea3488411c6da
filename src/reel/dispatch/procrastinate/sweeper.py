"""Stalled jobs and predictions without a job: what a worker sweeps before it asks for work.

Whenever a worker asks for work it first retries the jobs of workers silent for longer than
``lease_s`` (procrastinate's ``select_stalled_jobs_by_heartbeat`` then ``retry_job``), under an
advisory lock so one worker sweeps at a time, and queues waiting predictions that have no job.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.procrastinate.queries import TASK_NAME, defer, prediction_of, retry_now, run
from reel.lifecycle.states import TERMINAL
from reel.logs import prediction_context
from reel.store.tables import Prediction

log = logging.getLogger(__name__)

SWEEP_LOCK_KEY = 0x7265656C_73776570  # "reelswep": one stalled-job sweep at a time
ORPHANS_PER_SWEEP = 100


class StalledJobSweeper:
    def __init__(self, sessions: sessionmaker[Session], *, lease_s: float) -> None:
        self._sessions = sessions
        self._lease_s = lease_s
        self._interval_s = max(0.1, min(1.0, lease_s / 4))
        self._prune_after_s = max(10 * lease_s, 300.0)
        self._next_sweep = 0.0
        self._next_orphan_scan = 0.0
        self._lock = threading.Lock()

    def sweep_if_due(self, connected_for_s: float | None) -> None:
        """Sweep, unless one ran less than an interval ago or this process has not reached the
        database without a break for a full ``lease_s`` (``connected_for_s``): a worker that was
        itself cut off must not judge others (a PostgreSQL restart cuts off everyone)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_sweep or connected_for_s is None or connected_for_s < self._lease_s:
                return
            self._next_sweep = now + self._interval_s
            scan_orphans = now >= self._next_orphan_scan
            if scan_orphans:
                self._next_orphan_scan = now + self._lease_s
        with self._sessions.begin() as session:
            conn = session.connection()
            locked = conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
            if not locked.scalar():
                return  # another worker is sweeping right now
            self._retry_stalled(session)
            run(conn, "prune_stalled_workers", seconds_since_heartbeat=self._prune_after_s)
            if scan_orphans:
                self._requeue_orphans(session)

    def _retry_stalled(self, session: Session) -> None:
        """Queue again the running jobs nobody is running any more: those of workers that
        stopped heartbeating (procrastinate's stalled jobs), and those whose prediction's own
        lease ran out while its worker lives on (it lost the job to a database error), or that
        ended without the job being closed. Jobs of ended predictions are dropped instead."""
        conn = session.connection()
        stalled = (
            run(
                conn,
                "select_stalled_jobs_by_heartbeat",
                queue=None,
                task_name=TASK_NAME,
                seconds_since_heartbeat=self._lease_s,
            )
            .mappings()
            .all()
        )
        abandoned = (
            conn.execute(
                text(
                    "SELECT j.id, j.queue_name, j.args, j.worker_id FROM procrastinate_jobs j "
                    "JOIN predictions p ON p.job_id = j.id "
                    "WHERE j.status = 'doing' AND j.task_name = :task "
                    "AND (p.status <> 'processing' OR p.deleted_at IS NOT NULL OR p.lease_expires_at < now())"
                ),
                {"task": TASK_NAME},
            )
            .mappings()
            .all()
        )
        seen: set[int] = set()
        for job in [*stalled, *abandoned]:
            job_id = int(job["id"])
            if job_id in seen:
                continue
            seen.add(job_id)
            # Lock the job and look again: its worker may have closed it since the select (a
            # prediction that just ended is "abandoned" until its worker calls finished()).
            current = conn.execute(
                text(
                    "SELECT worker_id FROM procrastinate_jobs "
                    "WHERE id = :id AND status = 'doing' FOR UPDATE SKIP LOCKED"
                ),
                {"id": job_id},
            ).first()
            if current is None or current.worker_id != job["worker_id"]:
                continue
            row = session.get(Prediction, prediction_of(job))
            if row is None or row.deleted_at is not None or row.status in TERMINAL:
                run(conn, "finish_job", job_id=job_id, status="aborted", delete_job=True)
                continue
            retry_now(conn, job_id, str(job["queue_name"]))
            with prediction_context(row.id, key_id=row.key_id, model=row.model):
                log.warning(
                    "prediction %s: its worker (%s, queue worker #%s) has been silent for over %.1f s; "
                    "its job is queued again",
                    row.id,
                    row.worker_id,
                    job["worker_id"],
                    self._lease_s,
                )

    def _requeue_orphans(self, session: Session) -> None:
        """Queue waiting predictions that have no live job: created while dispatch was
        ``table``, or whose job an operator removed by hand. Nothing accepted is lost."""
        orphans = session.execute(
            text(
                "SELECT p.id, p.model, p.key_id FROM predictions p "
                "WHERE p.status IN ('created', 'processing') AND p.deleted_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
                "WHERE j.id = p.job_id AND j.status IN ('todo', 'doing')) "
                "ORDER BY p.created_at LIMIT :limit"
            ),
            {"limit": ORPHANS_PER_SWEEP},
        ).all()
        for prediction_id, model, key_id in orphans:
            try:
                with session.begin_nested():
                    defer(session, prediction_id, model)
            except IntegrityError:
                continue  # a waiting job appeared meanwhile (its queueing lock)
            with prediction_context(prediction_id, key_id=key_id, model=model):
                log.warning("prediction %s had no job in the queue; queued it", prediction_id)
