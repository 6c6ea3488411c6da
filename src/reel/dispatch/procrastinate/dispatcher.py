"""The procrastinate dispatcher: defer and abort on the API side; fetch, heartbeat, hand-back
and finish on the worker side (the package docstring says how procrastinate is used)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.fair import CANDIDATES, fair_order, lock_key_and_check_cap
from reel.dispatch.procrastinate.listener import JobListener
from reel.dispatch.procrastinate.queries import (
    OUTAGES,
    defer,
    job_state,
    prediction_of,
    queue_for,
    retry_now,
    run,
    take_job,
    take_stray_job,
)
from reel.dispatch.procrastinate.sweeper import StalledJobSweeper
from reel.errors import DatabaseUnavailable
from reel.lifecycle import transitions
from reel.lifecycle.states import TERMINAL, Status
from reel.lifecycle.transitions import Claim, EndedHook
from reel.logs import prediction_context
from reel.store.tables import Prediction

log = logging.getLogger(__name__)


@dataclass
class _Held:
    claim: Claim
    procrastinate_worker: int


class ProcrastinateDispatcher:
    """One instance per process; thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        *,
        lease_s: float,
        max_attempts: int,
        on_failed: EndedHook | None = None,
        poll_interval_s: float = 5.0,
        default_max_concurrent: int | None = None,
    ) -> None:
        """``engine`` gives the address of the dedicated LISTEN connection; ``lease_s`` is how
        long a worker may be silent before its jobs are retried; ``poll_interval_s`` is the
        fallback poll of an idle worker, should a notification be lost;
        ``default_max_concurrent`` the cap of keys that have none of their own (None: no cap)."""
        self._sessions = sessions
        self._default_max_concurrent = default_max_concurrent
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._on_failed = on_failed
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._registered: dict[str, int] = {}
        """Reel worker id → its row in procrastinate_workers."""
        self._held: dict[int, _Held] = {}
        """Job id → the claim running it here (for abort notifications and fencing)."""
        self._db_ok_since: float | None = None
        self._sweeper = StalledJobSweeper(sessions, lease_s=lease_s)
        self._listener = JobListener(
            engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
            on_abort=self._abort_requested,
            on_lost=self._database_lost,
        )
        self._wake = self._listener.wake

    # --- the API side ---------------------------------------------------------------------

    def submitted(self, session: Session, prediction_id: str, model: str) -> None:
        defer(session, prediction_id, model)

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
                    run(conn, "cancel_job", job_id=job_id, abort=True, delete_job=True)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning(
                "could not abort the jobs of cancelled predictions (%s); their workers "
                "will see the cancellation at their next heartbeat",
                exc,
            )

    # --- the worker side ------------------------------------------------------------------

    def claim(self, worker_id: str, models: Collection[str]) -> Claim | None:
        queues = sorted({queue_for(model) for model in models})
        self._listener.listen_to(queues)
        with self._watching_the_database():
            try:
                self._sweeper.sweep_if_due(self._connected_for())
            except OUTAGES:
                raise
            except SQLAlchemyError:  # a sweep that fails must not stop this worker's own work
                log.exception("stalled-job sweep failed; fetching anyway")
            for _ in range(2):
                worker = self._procrastinate_worker(worker_id)
                try:
                    return self._fetch(worker_id, worker, queues, models)
                except IntegrityError:
                    # Our procrastinate_workers row was pruned (we were silent for minutes):
                    # register again. Jobs held under the old row are retried by a sweep.
                    log.warning("worker %s was forgotten by the queue; registering again", worker_id)
                    with self._lock:
                        self._registered.pop(worker_id, None)
        return None

    def _fetch(self, worker_id: str, worker: int, queues: list[str], models: Collection[str]) -> Claim | None:
        while True:
            with self._sessions.begin() as session:
                conn = session.connection()
                job = take_stray_job(conn, queues, worker)
                if job is not None:
                    claim = self._take(session, job, worker_id)
                else:
                    job, claim = self._next_in_turn(session, worker, models, worker_id)
                    if job is None:
                        return None
            if claim is not None:  # committed: the job and the prediction are both ours
                with self._lock:
                    self._held[int(job["id"])] = _Held(claim, worker)
                return claim

    def _next_in_turn(
        self, session: Session, worker: int, models: Collection[str], worker_id: str
    ) -> tuple[Any, Claim | None]:
        """The first waiting prediction in the fair order whose job this worker could take
        (``reel.dispatch.fair``), as (its job, the claim); (None, None) if there is none."""
        conn = session.connection()
        candidates = session.execute(
            fair_order(models, self._default_max_concurrent, eligible_only=True).limit(CANDIDATES)
        ).all()
        for candidate in candidates:
            if candidate.job_id is None:
                continue  # queued by the next orphan sweep
            # The key's row before the job's (and the job's before the prediction's, as in
            # procrastinate's own fetch): no other path locks them the other way round.
            if candidate.cap is not None and not lock_key_and_check_cap(
                session, candidate.key_id, self._default_max_concurrent
            ):
                continue  # another worker started one of this key's predictions meanwhile
            job = take_job(conn, int(candidate.job_id), worker)
            if job is not None:
                return job, self._take(session, job, worker_id)
        return None, None

    def _take(self, session: Session, job: Any, worker_id: str) -> Claim | None:
        """Mark the job's prediction as held by ``worker_id``; None if it needs no run."""
        conn = session.connection()
        job_id = int(job["id"])
        prediction_id = prediction_of(job)
        row = session.get(Prediction, prediction_id, with_for_update=True) if prediction_id else None
        if row is None or row.deleted_at is not None or row.status in TERMINAL:
            # Cancelled while waiting, or ended by a worker the queue had given up on.
            run(conn, "finish_job", job_id=job_id, status="aborted", delete_job=True)
            return None
        if row.status == Status.PROCESSING and row.attempts >= self._max_attempts:
            transitions.give_up(session, row, self._on_failed)
            run(conn, "finish_job", job_id=job_id, status="failed", delete_job=True)
            return None
        return transitions.start(session, row, worker_id, self._lease_end(), job_id=job_id)

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
                run(conn, "update_heartbeat", worker_id=known)
                return known
            number = int(run(conn, "register_worker").scalar_one())
        with self._lock:
            self._registered[worker_id] = number
        log.info("worker %s registered with the job queue as #%d", worker_id, number)
        return number

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        held = self._holding(claim)
        with self._watching_the_database(), self._sessions.begin() as session:
            row_held = transitions.extend_lease(session, claim, self._lease_end(), progress)
            if held is None:
                return False
            conn = session.connection()
            run(conn, "update_heartbeat", worker_id=held.procrastinate_worker)
            job = job_state(conn, claim.job_id)
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
                job = job_state(conn, claim.job_id, lock=True)
                if held is not None and job is not None and job.status == "doing":
                    if job.worker_id != held.procrastinate_worker:
                        pass  # retried by a sweep and taken by another worker meanwhile
                    elif job.abort_requested:
                        run(conn, "finish_job", job_id=claim.job_id, status="aborted", delete_job=True)
                    else:
                        retry_now(conn, int(claim.job_id or 0), queue_for(claim.model))
                transitions.requeue(session, claim)
        finally:
            self._forget(claim)

    def finished(self, claim: Claim) -> None:
        held = self._holding(claim)
        try:
            with self._watching_the_database(), self._sessions.begin() as session:
                conn = session.connection()
                job = job_state(conn, claim.job_id, lock=True)
                if job is None or held is None:
                    return
                if job.status == "doing" and job.worker_id == held.procrastinate_worker:
                    run(conn, "finish_job", job_id=claim.job_id, status="succeeded", delete_job=True)
                elif job.status == "todo":
                    # A sweep judged this worker dead and queued the job again while it ran.
                    # If the prediction ended meanwhile, nothing is left to run.
                    row = session.get(Prediction, claim.prediction_id)
                    if row is None or row.deleted_at is not None or row.status in TERMINAL:
                        run(conn, "cancel_job", job_id=claim.job_id, abort=False, delete_job=True)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            # Harmless: the job stays "doing" under this worker, a sweep retries it, and the
            # claim that fetches it finds the prediction ended and drops it.
            log.warning("prediction %s: could not close its job (%s)", claim.prediction_id, exc)
        finally:
            self._forget(claim)

    def wait_for_work(self, models: Collection[str], stop: threading.Event) -> None:
        self._listener.listen_to(sorted({queue_for(model) for model in models}))
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
            self._listener.stop()
        if number is None:
            return
        try:
            with self._sessions.begin() as session:
                run(session.connection(), "unregister_worker", worker_id=number)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("worker %s: could not unregister from the job queue (%s)", worker_id, exc)

    def close(self) -> None:
        """Stop listening for notifications (the process is ending, or a test is done)."""
        self._listener.stop(wait=True)

    # --- internals ------------------------------------------------------------------------

    def _abort_requested(self, job_id: int) -> None:
        with self._lock:
            held = self._held.get(job_id)
        if held is not None:
            claim = held.claim
            with prediction_context(claim.prediction_id, key_id=claim.key_id, model=claim.model):
                log.info("prediction %s: abort requested; stopping at its next step", claim.prediction_id)
            held.claim.cancelled.set()

    def _holding(self, claim: Claim) -> _Held | None:
        with self._lock:
            return self._held.get(claim.job_id) if claim.job_id is not None else None

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            if claim.job_id is not None:
                self._held.pop(claim.job_id, None)

    @contextmanager
    def _watching_the_database(self) -> Iterator[None]:
        """Track since when this process has reached the database without a break."""
        try:
            yield
        except OUTAGES:
            self._database_lost()
            raise
        with self._lock:
            if self._db_ok_since is None:
                self._db_ok_since = time.monotonic()

    def _database_lost(self) -> None:
        with self._lock:
            self._db_ok_since = None

    def _connected_for(self) -> float | None:
        with self._lock:
            return None if self._db_ok_since is None else time.monotonic() - self._db_ok_since
