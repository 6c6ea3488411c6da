"""Retention: what has ended is deleted ``REEL_RETENTION_S`` after it ended, as WaveSpeed
deletes predictions, outputs and uploads after 7 days.

Two halves:

* :class:`RetentionPolicy` says what has expired. Reads apply it at once, so an expired
  prediction is a 404 (in both dialects) and its files are 404 from the moment it expires,
  whenever the sweep comes.
* :class:`RetentionSweep` deletes what expired, run by every worker's housekeeping
  (``reel.worker.housekeeping``): ended predictions with their input image, their outputs
  (bytes and ``files`` rows), their idempotency keys and their ended webhook deliveries;
  webhook deliveries that ended; idempotency keys long past their own 24 hours. Uploads go
  through :meth:`reel.predictions.files.FileService.sweep_expired`.

A prediction that is waiting or running (``created``/``processing``) never expires: only an
ended one has a ``finished_at`` to count from. Each sweep call deletes at most ``batch`` rows
of a kind, each batch in one short transaction, bytes first, so that a failed blob delete
(the bucket is away) keeps the row and the next sweep tries again; several workers sweeping at
once only delete the same things twice, which is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Delete, and_, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import StorageUnavailable
from reel.lifecycle.clock import utcnow
from reel.lifecycle.states import TERMINAL
from reel.predictions.idempotency import IDEMPOTENCY_TTL
from reel.storage.base import BlobStore
from reel.store.tables import IdempotencyRecord, Prediction, StoredFile, WebhookDelivery

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
"""Most predictions (or deliveries, or idempotency keys) one sweep call deletes."""


@dataclass(frozen=True)
class RetentionPolicy:
    """``retention``: how long ended things are kept; None keeps them for ever."""

    retention: timedelta | None = None

    @classmethod
    def of_seconds(cls, seconds: float) -> RetentionPolicy:
        """``REEL_RETENTION_S``: 0 keeps everything."""
        return cls(timedelta(seconds=seconds) if seconds > 0 else None)

    def cutoff(self, now: datetime | None = None) -> datetime | None:
        """What ended at or before this instant has expired; None: nothing ever does."""
        if self.retention is None:
            return None
        return (now or utcnow()) - self.retention

    def expired(self, ended_at: datetime | None, now: datetime | None = None) -> bool:
        cutoff = self.cutoff(now)
        return cutoff is not None and ended_at is not None and ended_at <= cutoff

    def live_prediction(self, now: datetime | None = None) -> ColumnElement[bool]:
        """SQL: the prediction is neither deleted nor expired (what reads may show)."""
        not_deleted = Prediction.deleted_at.is_(None)
        cutoff = self.cutoff(now)
        if cutoff is None:
            return not_deleted
        return and_(not_deleted, or_(Prediction.finished_at.is_(None), Prediction.finished_at > cutoff))


KEEP_FOREVER = RetentionPolicy()


@dataclass
class SweepCounts:
    predictions: int = 0
    files: int = 0
    """Output ``files`` rows deleted with their predictions."""
    idempotency_keys: int = 0
    webhook_deliveries: int = 0

    def __bool__(self) -> bool:
        return bool(self.predictions or self.files or self.idempotency_keys or self.webhook_deliveries)


class RetentionSweep:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        policy: RetentionPolicy,
        *,
        batch: int = SWEEP_BATCH,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._policy = policy
        self._batch = batch

    def sweep_once(self, now: datetime | None = None) -> SweepCounts:
        """One bounded batch of each kind; an empty count means nothing expired is left."""
        now = now or utcnow()
        cutoff = self._policy.cutoff(now)
        counts = SweepCounts()
        if cutoff is None:
            return counts
        self._sweep_predictions(cutoff, counts)
        counts.webhook_deliveries += self._sweep_deliveries(cutoff)
        counts.idempotency_keys += self._sweep_idempotency_keys(cutoff)
        if counts:
            log.info(
                "retention: deleted %d prediction(s) with %d output file(s), %d idempotency key(s), "
                "%d webhook deliveries",
                counts.predictions,
                counts.files,
                counts.idempotency_keys,
                counts.webhook_deliveries,
            )
        return counts

    def _sweep_predictions(self, cutoff: datetime, counts: SweepCounts) -> None:
        ended_before_cutoff = and_(Prediction.status.in_(list(TERMINAL)), Prediction.finished_at <= cutoff)
        with self._sessions() as session:
            rows = session.execute(
                select(Prediction.id, Prediction.input_blob, Prediction.outputs)
                .where(ended_before_cutoff)
                .order_by(Prediction.finished_at)
                .limit(self._batch)
            ).all()
            if not rows:
                return
            blobs: dict[str, set[str]] = {
                pid: {*([input_blob] if input_blob else []), *outputs} for pid, input_blob, outputs in rows
            }
            for pid, blob_key in session.execute(
                select(StoredFile.prediction_id, StoredFile.blob_key).where(
                    StoredFile.prediction_id.in_(list(blobs))
                )
            ):
                blobs[str(pid)].add(blob_key)
        # Bytes first: a prediction whose bytes could not all go keeps its row for the next sweep.
        gone = [pid for pid, keys in blobs.items() if self._delete_blobs(keys)]
        if not gone:
            return
        with self._sessions.begin() as session:
            counts.files += _rowcount(session, delete(StoredFile).where(StoredFile.prediction_id.in_(gone)))
            counts.idempotency_keys += _rowcount(
                session, delete(IdempotencyRecord).where(IdempotencyRecord.prediction_id.in_(gone))
            )
            counts.webhook_deliveries += _rowcount(
                session,
                delete(WebhookDelivery).where(
                    WebhookDelivery.prediction_id.in_(gone), WebhookDelivery.status != "pending"
                ),
            )
            counts.predictions += _rowcount(
                session, delete(Prediction).where(Prediction.id.in_(gone), ended_before_cutoff)
            )

    def _delete_blobs(self, keys: set[str]) -> bool:
        for key in keys:
            try:
                self._blobs.delete(key)
            except StorageUnavailable as exc:
                log.warning(
                    "retention: could not delete %s (%s); the next sweep tries again", key, exc.message
                )
                return False
        return True

    def _sweep_deliveries(self, cutoff: datetime) -> int:
        """Deliveries that ended (delivered or given up) before the cutoff; a pending one is
        kept until it ends, also when its prediction went before it."""
        ended = and_(WebhookDelivery.status != "pending", WebhookDelivery.ended_at <= cutoff)
        with self._sessions.begin() as session:
            ids = list(session.scalars(select(WebhookDelivery.id).where(ended).limit(self._batch)))
            if not ids:
                return 0
            return _rowcount(session, delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids), ended))

    def _sweep_idempotency_keys(self, cutoff: datetime) -> int:
        """Keys whose 24 hours ended before the cutoff (those of swept predictions went with
        them): a key of a prediction still waiting for days would otherwise stay for ever."""
        ended = IdempotencyRecord.created_at <= cutoff - IDEMPOTENCY_TTL
        with self._sessions.begin() as session:
            keys = session.execute(
                select(IdempotencyRecord.key_id, IdempotencyRecord.idempotency_key)
                .where(ended)
                .limit(self._batch)
            ).all()
            deleted = 0
            for key_id, idempotency_key in keys:
                deleted += _rowcount(
                    session,
                    delete(IdempotencyRecord).where(
                        IdempotencyRecord.key_id == key_id,
                        IdempotencyRecord.idempotency_key == idempotency_key,
                        ended,
                    ),
                )
            return deleted


def _rowcount(session: Session, statement: Delete) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
