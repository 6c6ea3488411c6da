"""Handing predictions to workers, behind one narrow interface.

The prediction row stays the single source of truth for the API. A dispatcher decides who
runs what: it is told when a prediction is submitted (inside the inserting transaction) and
when one is cancelled, gives a worker its next prediction as a :class:`Claim`, keeps the
claim alive through heartbeats, takes it back when the worker stops, and lets an idle
worker sleep until there may be work.

Two implementations: :class:`reel.dispatch.table.TableDispatcher` (leases in the
predictions table; SQLite, one machine) and
:class:`reel.dispatch.procrastinate.ProcrastinateDispatcher` (procrastinate's job queue on
PostgreSQL; many machines). ``tests/dispatch/test_contract.py`` holds both to the same
contract.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.orm import Session

from reel.lifecycle.clock import utcnow
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.store.tables import Prediction

log = logging.getLogger(__name__)

FailedHook = Callable[[Session, Prediction], None]
"""Called in the transaction that fails a prediction on the dispatcher's side (to queue its webhook)."""


@dataclass(frozen=True)
class Claim:
    prediction_id: str
    model: str
    worker_id: str
    attempt: int
    job_id: int | None = None
    """The queue's own job id, where the queue has one (procrastinate)."""
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    """Set by the dispatcher the moment it learns the prediction was cancelled (procrastinate's
    abort notification); the worker's cancel check reads it at the backend's next step."""


class Dispatcher(Protocol):
    # --- the API side ---------------------------------------------------------------------
    def submitted(self, session: Session, prediction_id: str, model: str) -> None:
        """Called in the transaction that inserts the prediction: queue it atomically with it."""
        ...

    def cancelled(self, prediction_ids: Collection[str]) -> None:
        """Called after a transaction cancelled or deleted these predictions. Best effort:
        the row is already cancelled, and the worker reads it at its next heartbeat anyway."""
        ...

    # --- the worker side ------------------------------------------------------------------
    def claim(self, worker_id: str, models: Collection[str]) -> Claim | None:
        """The oldest waiting prediction for one of ``models``, now held by ``worker_id``."""
        ...

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        """Extend the claim. False means stop: cancelled, deleted, or taken over."""
        ...

    def release(self, claim: Claim) -> None:
        """Give an unfinished prediction back to the queue (graceful shutdown)."""
        ...

    def finished(self, claim: Claim) -> None:
        """The worker is done with ``claim`` (it ended the prediction, or lost it)."""
        ...

    def wait_for_work(self, models: Collection[str], stop: threading.Event) -> None:
        """Sleep until a prediction for ``models`` may be waiting, ``stop`` is set, or a
        fallback poll interval passes."""
        ...

    def leave(self, worker_id: str) -> None:
        """The worker is shutting down and holds no claim any more."""
        ...


def held_by(claim: Claim) -> ColumnElement[bool]:
    """The fence on a claim holder's writes: its prediction, still running under this worker
    and not deleted. A write that matches no row means the claim was lost."""
    return and_(
        Prediction.id == claim.prediction_id,
        Prediction.worker_id == claim.worker_id,
        Prediction.status == Status.PROCESSING,
        Prediction.deleted_at.is_(None),
    )


def extend_lease(session: Session, claim: Claim, lease_expires_at: object, progress: float | None) -> bool:
    """Move the held prediction's lease to ``lease_expires_at`` (and record ``progress``);
    False when ``claim`` no longer holds it."""
    values: dict[str, object] = {"lease_expires_at": lease_expires_at}
    if progress is not None:
        values["progress"] = progress
    result = session.execute(update(Prediction).where(held_by(claim)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def requeue_prediction(session: Session, claim: Claim) -> None:
    """Put a held prediction back in the waiting state, if ``claim`` still holds it.

    A hand-back is not a crash: it does not count against ``max_attempts``.
    """
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


def give_up(session: Session, row: Prediction, on_failed: FailedHook | None) -> None:
    """Fail a prediction whose workers kept dying, instead of starting it once more."""
    row.status = Status.FAILED
    row.error = (
        f"the worker running this prediction stopped {row.attempts} times "
        f"(last: {row.worker_id}); not retrying"
    )
    row.failure_code = FailureCode.INTERNAL
    row.finished_at = utcnow()
    row.lease_expires_at = None
    log.error("prediction %s failed: %s", row.id, row.error)
    if on_failed is not None:
        on_failed(session, row)
    session.flush()
