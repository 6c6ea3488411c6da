"""Handing predictions to workers, behind one narrow interface.

The prediction row stays the single source of truth for the API. A dispatcher decides who
runs what: it is told when a prediction is submitted (inside the inserting transaction) and
when one is cancelled, gives a worker its next prediction as a :class:`Claim`, keeps the
claim alive through heartbeats, takes it back when the worker stops, and lets an idle
worker sleep until there may be work. The status changes themselves are
``reel.lifecycle.transitions``'; a dispatcher decides when to make them.

Two implementations: :class:`reel.dispatch.table.TableDispatcher` (leases in the
predictions table; SQLite, one machine) and
:class:`reel.dispatch.procrastinate.ProcrastinateDispatcher` (procrastinate's job queue on
PostgreSQL; many machines). ``tests/dispatch/test_contract.py`` holds both to the same
contract.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Protocol

from sqlalchemy.orm import Session

from reel.lifecycle.transitions import Claim

__all__ = ["Claim", "Dispatcher"]


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
