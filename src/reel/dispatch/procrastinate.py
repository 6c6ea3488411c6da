"""Dispatch through procrastinate's job queue on PostgreSQL: the scale-out mode.

Every prediction is one procrastinate job in the queue of its model (:func:`queue_for`),
deferred in the transaction that inserts the prediction: a prediction never exists without
its job, nor a job without its prediction. A worker fetches only from the queues of the
models it has loaded. The prediction row stays the single source of truth; the job only
says who should run what. Every write that ends a prediction is fenced on the row
(``reel.worker.runner``), so a job delivered twice can never produce two results.

What procrastinate provides, and how it is used:

- **Defer in the same transaction.** ``procrastinate_defer_jobs_v1`` runs on the SQLAlchemy
  session's own connection, like procrastinate's Django integration does with Django's.
  Each job carries ``lock`` and ``queueing_lock`` = the prediction id, so the database
  itself refuses a second waiting job for one prediction and never runs two at once.
- **Fetch.** ``procrastinate_fetch_job_v2`` (priority, then age, ``FOR UPDATE SKIP LOCKED``)
  runs in the transaction that marks the prediction ``processing``.
- **LISTEN/NOTIFY.** procrastinate's insert trigger notifies ``procrastinate_queue_v1#<queue>``.
  An idle worker sleeps on its queues' channels and starts a new prediction within
  milliseconds of its submission; a poll every ``poll_interval_s`` covers a lost
  notification (a PostgreSQL restart drops them).
- **Abort.** Cancelling or deleting a prediction calls ``procrastinate_cancel_job_v1`` with
  ``abort``: a waiting job is deleted, a running one is flagged, and the trigger's
  notification sets the claim's ``cancelled`` event, which the backend's cancel check reads
  at its next step. The worker's heartbeat also reads the flag, should a notification be lost.
- **Stalled jobs.** Each worker registers in ``procrastinate_workers`` and heartbeats there
  while it polls and while it generates. Whenever a worker asks for work it first retries
  the jobs of workers silent for longer than ``lease_s`` (``select_stalled_jobs_by_heartbeat``
  then ``procrastinate_retry_job_v2``), under an advisory lock so one worker sweeps at a
  time. This is procrastinate's documented "retry stalled jobs" periodic task, run by the
  worker loop at the moment it matters: when a worker is free to take the job. Liveness is
  judged on the database's clock, so clock skew between machines does not matter, and a
  worker that was itself cut off from the database (a PostgreSQL restart cuts off everyone)
  does not judge others until it has been connected for a full ``lease_s`` again.

Why not procrastinate's own ``Worker``: it runs coroutines, and sync tasks in a thread,
with its own shutdown and retry policies. Reel's worker loop (``reel.worker.runner``) is
shared by both dispatch modes: it fences every write on the prediction row, heartbeats
progress, and hands its job back on SIGTERM; keeping it means the same runner tests cover
both modes. procrastinate's SQL (``procrastinate.sql.queries``) is run on SQLAlchemy
connections rather than through procrastinate's connectors, so that a connection broken by
a PostgreSQL restart is seen and replaced by SQLAlchemy's pool like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from procrastinate import sql as procrastinate_sql
from procrastinate.manager import get_channel_for_queues
from procrastinate.types import JobToDefer
from psycopg import sql as pg_sql
from psycopg.types.json import Jsonb
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.base import Claim, FailedHook, extend_lease, give_up, requeue_prediction
from reel.errors import DatabaseUnavailable
from reel.lifecycle.clock import utcnow
from reel.lifecycle.states import TERMINAL, Status
from reel.store.db import CONNECT_TIMEOUT_S
from reel.store.tables import Prediction

log = logging.getLogger(__name__)

QUERIES = procrastinate_sql.queries
TASK_NAME = "reel.generate"
SWEEP_LOCK_KEY = 0x7265656C_73776570  # "reelswep": one stalled-job sweep at a time
MAX_QUEUE_BYTES = 40
"""pg_notify channel names are at most 63 bytes, and procrastinate's are
``procrastinate_queue_v1#`` (23 bytes) + the queue name."""
LISTEN_TICK_S = 1.0
"""How often the listener looks for new queues to LISTEN to."""
ORPHANS_PER_SWEEP = 100

_OUTAGES = (DatabaseUnavailable, OperationalError)


def queue_for(model: str) -> str:
    """The procrastinate queue of ``model``: its id, shortened with a hash when too long."""
    raw = model.encode()
    if len(raw) <= MAX_QUEUE_BYTES:
        return model
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"{raw[: MAX_QUEUE_BYTES - 13].decode(errors='ignore')}~{digest}"


def _adapt(value: Any) -> Any:
    """Parameters as procrastinate's psycopg connector passes them (dicts as JSONB)."""
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, list):
        return [_adapt(item) for item in value]
    if isinstance(value, tuple):
        return type(value)(*(_adapt(item) for item in value))
    return value


def _run(conn: Connection, query: str, **params: Any) -> CursorResult[Any]:
    """Run one of procrastinate's named queries on ``conn`` (inside its transaction)."""
    return conn.exec_driver_sql(QUERIES[query], {name: _adapt(v) for name, v in params.items()})


def _notify_job(conn: Connection, queue: str, job_id: int) -> None:
    """The notification procrastinate's insert trigger sends, for a job put back to ``todo``
    (procrastinate's retry does not notify: without this, idle workers would wait for their poll)."""
    payload = json.dumps({"type": "job_inserted", "job_id": job_id})
    for channel in get_channel_for_queues([queue]):
        conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


@dataclass
class _Held:
    claim: Claim
    procrastinate_worker: int


class ProcrastinateDispatcher:
    """See the module docstring. One instance per process; thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        *,
        lease_s: float,
        max_attempts: int,
        on_failed: FailedHook | None = None,
        poll_interval_s: float = 5.0,
    ) -> None:
        """``engine`` gives the address of the dedicated LISTEN connection; ``lease_s`` is how
        long a worker may be silent before its jobs are retried; ``poll_interval_s`` is the
        fallback poll of an idle worker, should a notification be lost."""
        self._sessions = sessions
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._on_failed = on_failed
        self._poll_interval_s = poll_interval_s
        self._sweep_interval_s = max(0.1, min(1.0, lease_s / 4))
        self._prune_after_s = max(10 * lease_s, 300.0)
        self._lock = threading.Lock()
        self._registered: dict[str, int] = {}
        """Reel worker id → its row in procrastinate_workers."""
        self._held: dict[int, _Held] = {}
        """Job id → the claim running it here (for abort notifications and fencing)."""
        self._queues: set[str] = set()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._listener: threading.Thread | None = None
        self._db_ok_since: float | None = None
        self._next_sweep = 0.0
        self._next_orphan_scan = 0.0

    # --- the API side ---------------------------------------------------------------------

    def submitted(self, session: Session, prediction_id: str, model: str) -> None:
        job_id = self._defer(session, prediction_id, model)
        session.execute(update(Prediction).where(Prediction.id == prediction_id).values(job_id=job_id))

    def _defer(self, session: Session, prediction_id: str, model: str) -> int:
        job = JobToDefer(
            queue_name=queue_for(model),
            task_name=TASK_NAME,
            priority=0,
            lock=prediction_id,
            queueing_lock=prediction_id,
            args={"prediction_id": prediction_id},
            scheduled_at=None,
        )
        job_id: int = _run(session.connection(), "defer_jobs", jobs=[job]).scalar_one()
        return job_id

    def cancelled(self, prediction_ids: Collection[str]) -> None:
        try:
            with self._sessions.begin() as session:
                job_ids = session.scalars(
                    select(Prediction.job_id).where(
                        Prediction.id.in_(list(prediction_ids)), Prediction.job_id.is_not(None)
                    )
                ).all()
                conn = session.connection()
                for job_id in job_ids:
                    # Waiting: deleted at once. Running: flagged, and its worker notified.
                    _run(conn, "cancel_job", job_id=job_id, abort=True, delete_job=True)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning(
                "could not abort the jobs of cancelled predictions (%s); their workers "
                "will see the cancellation at their next heartbeat",
                exc,
            )

    # --- the worker side ------------------------------------------------------------------

    def claim(self, worker_id: str, models: Collection[str]) -> Claim | None:
        queues = sorted({queue_for(model) for model in models})
        self._listen_to(queues)
        with self._watching_the_database():
            try:
                self._sweep_if_due()
            except _OUTAGES:
                raise
            except SQLAlchemyError:  # a sweep that fails must not stop this worker's own work
                log.exception("stalled-job sweep failed; fetching anyway")
            for _ in range(2):
                worker = self._procrastinate_worker(worker_id)
                try:
                    return self._fetch(worker_id, worker, queues)
                except IntegrityError:
                    # Our procrastinate_workers row was pruned (we were silent for minutes):
                    # register again. Jobs held under the old row are retried by a sweep.
                    log.warning("worker %s was forgotten by the queue; registering again", worker_id)
                    with self._lock:
                        self._registered.pop(worker_id, None)
        return None

    def _fetch(self, worker_id: str, worker: int, queues: list[str]) -> Claim | None:
        while True:
            with self._sessions.begin() as session:
                conn = session.connection()
                job = _run(conn, "fetch_job", queues=queues, worker_id=worker).mappings().one()
                if job["id"] is None:
                    return None
                claim = self._take(session, job, worker_id)
            if claim is not None:  # committed: the job and the prediction are both ours
                with self._lock:
                    self._held[int(job["id"])] = _Held(claim, worker)
                return claim

    def _take(self, session: Session, job: Any, worker_id: str) -> Claim | None:
        """Mark the job's prediction as held by ``worker_id``; None if it needs no run."""
        conn = session.connection()
        job_id = int(job["id"])
        args = job["args"] if isinstance(job["args"], dict) else json.loads(job["args"])
        prediction_id = str(args.get("prediction_id", ""))
        row = session.get(Prediction, prediction_id, with_for_update=True) if prediction_id else None
        if row is None or row.deleted_at is not None or row.status in TERMINAL:
            # Cancelled while waiting, or ended by a worker the queue had given up on.
            _run(conn, "finish_job", job_id=job_id, status="aborted", delete_job=True)
            return None
        if row.status == Status.PROCESSING and row.attempts >= self._max_attempts:
            give_up(session, row, self._on_failed)
            _run(conn, "finish_job", job_id=job_id, status="failed", delete_job=True)
            return None
        if row.status == Status.PROCESSING:
            log.warning(
                "prediction %s: worker %s stopped heartbeating; restarting it (attempt %d)",
                row.id,
                row.worker_id,
                row.attempts + 1,
            )
        attempt = row.attempts + 1
        session.execute(
            update(Prediction)
            .where(Prediction.id == row.id)
            .values(
                status=Status.PROCESSING,
                worker_id=worker_id,
                lease_expires_at=self._lease_end(),
                attempts=attempt,
                progress=0.0,
                started_at=utcnow(),
                job_id=job_id,
            )
        )
        return Claim(row.id, row.model, worker_id, attempt, job_id=job_id)

    def _lease_end(self) -> Any:
        """On the database's clock, which the sweep compares against: workers' clocks may differ."""
        return func.now() + timedelta(seconds=self._lease_s)

    def _procrastinate_worker(self, worker_id: str) -> int:
        """This worker's row in procrastinate_workers (registered on first use), heartbeated."""
        with self._lock:
            known = self._registered.get(worker_id)
        with self._sessions.begin() as session:
            conn = session.connection()
            if known is not None:
                _run(conn, "update_heartbeat", worker_id=known)
                return known
            number = int(_run(conn, "register_worker").scalar_one())
        with self._lock:
            self._registered[worker_id] = number
        log.info("worker %s registered with the job queue as #%d", worker_id, number)
        return number

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        held = self._holding(claim)
        with self._watching_the_database(), self._sessions.begin() as session:
            row_held = extend_lease(session, claim, self._lease_end(), progress)
            if held is None:
                return False
            conn = session.connection()
            _run(conn, "update_heartbeat", worker_id=held.procrastinate_worker)
            job = conn.execute(
                text("SELECT status, worker_id, abort_requested FROM procrastinate_jobs WHERE id = :id"),
                {"id": claim.job_id},
            ).first()
        if job is not None and job.abort_requested:
            claim.cancelled.set()
        job_held = (
            job is not None
            and job.status == "doing"
            and job.worker_id == held.procrastinate_worker
            and not job.abort_requested
        )
        return row_held and job_held

    def release(self, claim: Claim) -> None:
        held = self._holding(claim)
        try:
            with self._watching_the_database(), self._sessions.begin() as session:
                conn = session.connection()
                # The job first, then the prediction: the order a fetch locks them in.
                job = self._lock_job(conn, claim)
                if held is not None and job is not None and job.status == "doing":
                    if job.worker_id != held.procrastinate_worker:
                        pass  # retried by a sweep and taken by another worker meanwhile
                    elif job.abort_requested:
                        _run(conn, "finish_job", job_id=claim.job_id, status="aborted", delete_job=True)
                    else:
                        _run(
                            conn,
                            "retry_job",
                            job_id=claim.job_id,
                            retry_at=utcnow(),
                            new_priority=None,
                            new_queue_name=None,
                            new_lock=None,
                        )
                        _notify_job(conn, queue_for(claim.model), int(claim.job_id or 0))
                requeue_prediction(session, claim)
        finally:
            self._forget(claim)

    def finished(self, claim: Claim) -> None:
        held = self._holding(claim)
        try:
            with self._watching_the_database(), self._sessions.begin() as session:
                conn = session.connection()
                job = self._lock_job(conn, claim)
                if job is None or held is None:
                    return
                if job.status == "doing" and job.worker_id == held.procrastinate_worker:
                    _run(conn, "finish_job", job_id=claim.job_id, status="succeeded", delete_job=True)
                elif job.status == "todo":
                    # A sweep judged this worker dead and queued the job again while it ran.
                    # If the prediction ended meanwhile, nothing is left to run.
                    row = session.get(Prediction, claim.prediction_id)
                    if row is None or row.deleted_at is not None or row.status in TERMINAL:
                        _run(conn, "cancel_job", job_id=claim.job_id, abort=False, delete_job=True)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            # Harmless: the job stays "doing" under this worker, a sweep retries it, and the
            # claim that fetches it finds the prediction ended and drops it.
            log.warning("prediction %s: could not close its job (%s)", claim.prediction_id, exc)
        finally:
            self._forget(claim)

    def wait_for_work(self, models: Collection[str], stop: threading.Event) -> None:
        self._listen_to(sorted({queue_for(model) for model in models}))
        deadline = time.monotonic() + self._poll_interval_s
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(min(remaining, 0.25)):
                self._wake.clear()
                return

    def leave(self, worker_id: str) -> None:
        with self._lock:
            number = self._registered.pop(worker_id, None)
            last = not self._registered
        if last:
            self._closing.set()
        if number is None:
            return
        try:
            with self._sessions.begin() as session:
                _run(session.connection(), "unregister_worker", worker_id=number)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("worker %s: could not unregister from the job queue (%s)", worker_id, exc)

    def close(self) -> None:
        """Stop listening for notifications (the process is ending, or a test is done)."""
        self._closing.set()
        listener = self._listener
        if listener is not None:
            listener.join(timeout=LISTEN_TICK_S * 3)

    # --- internals ------------------------------------------------------------------------

    def _holding(self, claim: Claim) -> _Held | None:
        with self._lock:
            return self._held.get(claim.job_id) if claim.job_id is not None else None

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            if claim.job_id is not None:
                self._held.pop(claim.job_id, None)

    @staticmethod
    def _lock_job(conn: Connection, claim: Claim) -> Any:
        return conn.execute(
            text(
                "SELECT status, worker_id, abort_requested FROM procrastinate_jobs WHERE id = :id FOR UPDATE"
            ),
            {"id": claim.job_id},
        ).first()

    @contextmanager
    def _watching_the_database(self) -> Iterator[None]:
        """Track since when this process has reached the database without a break."""
        try:
            yield
        except _OUTAGES:
            self._database_lost()
            raise
        with self._lock:
            if self._db_ok_since is None:
                self._db_ok_since = time.monotonic()

    def _database_lost(self) -> None:
        with self._lock:
            self._db_ok_since = None

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            connected_for = None if self._db_ok_since is None else now - self._db_ok_since
            if now < self._next_sweep or connected_for is None or connected_for < self._lease_s:
                return
            self._next_sweep = now + self._sweep_interval_s
        with self._sessions.begin() as session:
            conn = session.connection()
            locked = conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
            if not locked.scalar():
                return  # another worker is sweeping right now
            self._retry_stalled(session)
            _run(conn, "prune_stalled_workers", seconds_since_heartbeat=self._prune_after_s)
            if now >= self._next_orphan_scan:
                self._next_orphan_scan = now + self._lease_s
                self._requeue_orphans(session)

    def _retry_stalled(self, session: Session) -> None:
        """Queue again the running jobs nobody is running any more: those of workers that
        stopped heartbeating (procrastinate's stalled jobs), and those whose prediction's own
        lease ran out while its worker lives on (it lost the job to a database error), or that
        ended without the job being closed. Jobs of ended predictions are dropped instead."""
        conn = session.connection()
        stalled = (
            _run(
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
            args = job["args"] if isinstance(job["args"], dict) else json.loads(job["args"])
            row = session.get(Prediction, str(args.get("prediction_id", "")))
            if row is None or row.deleted_at is not None or row.status in TERMINAL:
                _run(conn, "finish_job", job_id=job_id, status="aborted", delete_job=True)
                continue
            _run(
                conn,
                "retry_job",
                job_id=job_id,
                retry_at=utcnow(),
                new_priority=None,
                new_queue_name=None,
                new_lock=None,
            )
            _notify_job(conn, str(job["queue_name"]), job_id)
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
                "SELECT p.id, p.model FROM predictions p "
                "WHERE p.status IN ('created', 'processing') AND p.deleted_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
                "WHERE j.id = p.job_id AND j.status IN ('todo', 'doing')) "
                "ORDER BY p.created_at LIMIT :limit"
            ),
            {"limit": ORPHANS_PER_SWEEP},
        ).all()
        for prediction_id, model in orphans:
            try:
                with session.begin_nested():
                    job_id = self._defer(session, prediction_id, model)
                    session.execute(
                        update(Prediction).where(Prediction.id == prediction_id).values(job_id=job_id)
                    )
            except IntegrityError:
                continue  # a waiting job appeared meanwhile (its queueing lock)
            log.warning("prediction %s had no job in the queue; queued it", prediction_id)

    # --- notifications --------------------------------------------------------------------

    def _listen_to(self, queues: Collection[str]) -> None:
        with self._lock:
            self._queues.update(queues)
            self._closing.clear()
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(
                    target=self._listen_forever, name="job-notifications", daemon=True
                )
                self._listener.start()

    def _listen_forever(self) -> None:
        backoff = 0.5
        while not self._closing.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    backoff = 0.5
                    listening: set[str] = set()
                    # Jobs inserted while nobody listened are fetched now.
                    self._wake.set()
                    while not self._closing.is_set():
                        with self._lock:
                            wanted = set(self._queues)
                        for queue in sorted(wanted - listening):
                            for channel in get_channel_for_queues([queue]):
                                conn.execute(pg_sql.SQL("LISTEN {}").format(pg_sql.Identifier(channel)))
                            listening.add(queue)
                        for notification in conn.notifies(timeout=LISTEN_TICK_S):
                            self._on_notification(notification.payload)
            except psycopg.Error as exc:
                self._database_lost()
                self._wake.set()  # poll instead while the notifications are down
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("job notifications lost (%s); reconnecting in %.1f s", first_line, backoff)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _on_notification(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("type") == "job_inserted":
            self._wake.set()
        elif message.get("type") == "abort_job_requested":
            with self._lock:
                held = self._held.get(int(message.get("job_id", 0)))
            if held is not None:
                log.info(
                    "prediction %s: abort requested; stopping at its next step", held.claim.prediction_id
                )
                held.claim.cancelled.set()
