"""Every change of a prediction's status, and the claim fence: the one place that writes
``Prediction.status``.

::

    created ──start──▶ processing ──complete──▶ completed
       │  ▲               │    └────fail──────▶ failed
       │  └───requeue─────┤    (workers kept dying: give_up ▶ failed)
       └──────cancel──────┴──────────────────▶ cancelled

A prediction is created ``created`` (``reel.predictions.service``); from then on only the
functions here move it. The dispatchers call :func:`start`, :func:`requeue` and
:func:`give_up`; the worker ends what it holds with :func:`complete` and :func:`fail`; the
prediction service calls :func:`cancel`. So "where can a prediction become failed?" has a
one-file answer: :func:`fail` and :func:`give_up`.

A worker's writes are fenced on its :class:`Claim` (:func:`held_by`): the prediction must
still be ``processing`` under that worker and not deleted, so a worker that lost its claim
(cancelled, deleted, or taken over after its lease ran out) can never overwrite anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, event, select, update
from sqlalchemy.orm import Session, SessionTransaction, object_session

from reel import metrics
from reel.lifecycle.clock import utcnow
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.logs import prediction_context
from reel.store.tables import ApiKey, Prediction, StoredFile

log = logging.getLogger(__name__)

EndedHook = Callable[[Session, Prediction], None]
"""Called in the transaction that completes or fails a prediction (to queue its webhook)."""


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one ``processing`` prediction, from :func:`start` to its end."""

    prediction_id: str
    model: str
    worker_id: str
    attempt: int
    job_id: int | None = None
    """The queue's own job id, where the queue has one (procrastinate)."""
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    """Set by the dispatcher the moment it learns the prediction was cancelled (procrastinate's
    abort notification); the worker's cancel check reads it at the backend's next step."""
    key_id: str | None = None
    """The key that submitted it, for the worker's log context."""


@dataclass(frozen=True)
class OutputFile:
    """A finished video already in blob storage, to be recorded as the prediction's output."""

    file_id: str
    blob_key: str
    filename: str
    size: int
    content_type: str = "video/mp4"


def held_by(claim: Claim) -> ColumnElement[bool]:
    """The fence on a claim holder's writes: its prediction, still running under this worker
    and not deleted. A write that matches no row means the claim was lost."""
    return and_(
        Prediction.id == claim.prediction_id,
        Prediction.worker_id == claim.worker_id,
        Prediction.status == Status.PROCESSING,
        Prediction.deleted_at.is_(None),
    )


# --- metrics, counted once the transition is committed -------------------------------------

_PENDING = "reel_metrics_pending"


def _when_committed(session: Session, observe: Callable[[], None]) -> None:
    """Run ``observe`` (a metric update) if and when ``session``'s transaction commits: a
    transition rolled back, or retried after the commit failed, is not counted."""
    session.info.setdefault(_PENDING, []).append(observe)


@event.listens_for(Session, "after_commit")
def _observe_committed(session: Session) -> None:
    for observe in session.info.pop(_PENDING, ()):
        observe()


@event.listens_for(Session, "after_transaction_end")
def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost one: rolled back or closed (commit ran first)
        session.info.pop(_PENDING, None)


def _count_end(session: Session, row: Prediction, *, ran: bool) -> None:
    """``row`` has just ended; ``ran``: a worker ran it to this end (so its run time counts)."""
    model, status = row.model, row.status
    ended, started = row.finished_at, row.started_at
    seconds = (ended - started).total_seconds() if ran and ended and started else None

    def observe() -> None:
        metrics.PREDICTIONS_ENDED.labels(model, status).inc()
        if seconds is not None:
            metrics.PREDICTION_DURATION.labels(model).observe(max(0.0, seconds))

    _when_committed(session, observe)


# --- the dispatchers' transitions ---------------------------------------------------------


def start(
    session: Session, row: Prediction, worker_id: str, lease_expires_at: Any, *, job_id: int | None = None
) -> Claim:
    """created (or processing under a worker whose lease ran out) → processing under
    ``worker_id``. The caller holds the row locked; ``lease_expires_at`` may be an SQL
    expression (the database's clock)."""
    prediction_id, model, key_id, attempt = row.id, row.model, row.key_id, row.attempts + 1
    now = utcnow()
    if row.status == Status.PROCESSING:
        with prediction_context(prediction_id, key_id=key_id, model=model):
            log.warning(
                "prediction %s: worker %s stopped heartbeating; restarting it (attempt %d)",
                row.id,
                row.worker_id,
                attempt,
            )
    else:
        waited = (now - row.created_at).total_seconds()
        _when_committed(session, lambda: metrics.QUEUE_WAIT.labels(model).observe(max(0.0, waited)))
    values: dict[str, Any] = {
        "status": Status.PROCESSING,
        "worker_id": worker_id,
        "lease_expires_at": lease_expires_at,
        "attempts": attempt,
        "progress": 0.0,
        "started_at": now,
    }
    # Whose turn it is next between keys (reel.dispatch.fair).
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_started_at=now))
    if job_id is not None:
        values["job_id"] = job_id
    session.execute(
        update(Prediction)
        .where(Prediction.id == prediction_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.expire(row)  # the loaded row is stale now
    return Claim(prediction_id, model, worker_id, attempt, job_id=job_id, key_id=key_id)


def extend_lease(session: Session, claim: Claim, lease_expires_at: Any, progress: float | None) -> bool:
    """Move the held prediction's lease to ``lease_expires_at`` (and record ``progress``);
    False when ``claim`` no longer holds it."""
    values: dict[str, Any] = {"lease_expires_at": lease_expires_at}
    if progress is not None:
        values["progress"] = progress
    result = session.execute(update(Prediction).where(held_by(claim)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def requeue(session: Session, claim: Claim) -> None:
    """processing → created: a held prediction goes back to waiting, if ``claim`` still holds
    it. A hand-back is not a crash: it does not count against ``max_attempts``."""
    session.execute(
        update(Prediction)
        .where(
            Prediction.id == claim.prediction_id,
            Prediction.worker_id == claim.worker_id,
            Prediction.status == Status.PROCESSING,
        )
        .values(
            status=Status.CREATED,
            worker_id=None,
            lease_expires_at=None,
            progress=0.0,
            attempts=Prediction.attempts - 1,
        )
    )


def give_up(session: Session, row: Prediction, on_ended: EndedHook | None) -> None:
    """processing → failed: the workers running this prediction kept dying, so it is not
    started once more."""
    row.status = Status.FAILED
    row.error = (
        f"the worker running this prediction stopped {row.attempts} times "
        f"(last: {row.worker_id}); not retrying"
    )
    row.failure_code = FailureCode.INTERNAL
    row.finished_at = utcnow()
    row.lease_expires_at = None
    with prediction_context(row.id, key_id=row.key_id, model=row.model):
        log.error("prediction %s failed: %s", row.id, row.error)
    _count_end(session, row, ran=False)
    if on_ended is not None:
        on_ended(session, row)
    session.flush()


# --- the worker's transitions -------------------------------------------------------------


def _owned_row(session: Session, claim: Claim) -> Prediction | None:
    return session.scalars(select(Prediction).where(held_by(claim)).with_for_update()).first()


def complete(
    session: Session,
    claim: Claim,
    output: OutputFile,
    *,
    inference_ms: int,
    flagged: bool,
    on_ended: EndedHook,
) -> bool:
    """processing → completed, with ``output`` recorded as its file. False (nothing written)
    when ``claim`` no longer holds the prediction."""
    row = _owned_row(session, claim)
    if row is None:
        return False
    session.add(
        StoredFile(
            id=output.file_id,
            key_id=row.key_id,
            kind="output",
            blob_key=output.blob_key,
            filename=output.filename,
            content_type=output.content_type,
            size=output.size,
            complete=True,
            prediction_id=row.id,
            created_at=utcnow(),
        )
    )
    row.status = Status.COMPLETED
    row.outputs = [output.blob_key]
    row.output_file_ids = [output.file_id]
    row.nsfw = [flagged]
    row.progress = 1.0
    row.inference_ms = inference_ms
    row.finished_at = utcnow()
    row.lease_expires_at = None
    _count_end(session, row, ran=True)
    on_ended(session, row)
    return True


def fail(session: Session, claim: Claim, reason: str, code: FailureCode, *, on_ended: EndedHook) -> bool:
    """processing → failed with ``reason``. False (nothing written) when ``claim`` no longer
    holds the prediction."""
    row = _owned_row(session, claim)
    if row is None:
        return False
    row.status = Status.FAILED
    row.error = reason
    row.failure_code = code
    row.finished_at = utcnow()
    row.lease_expires_at = None
    _count_end(session, row, ran=True)
    on_ended(session, row)
    return True


# --- the API's transition -----------------------------------------------------------------


def cancel(row: Prediction) -> None:
    """created | processing → cancelled. The caller holds the row locked and has checked that
    it has not ended; its worker sees the change at its next heartbeat and stops."""
    row.status = Status.CANCELLED
    row.error = "cancelled by request"
    row.finished_at = utcnow()
    row.lease_expires_at = None
    session = object_session(row)
    if session is not None:
        _count_end(session, row, ran=False)
