"""Handing predictions to workers, behind one narrow interface.

The prediction row stays the single source of truth for the API. A dispatcher decides who
runs what: it is told when a prediction is submitted (inside the inserting transaction),
gives a worker its next prediction as a :class:`Claim`, keeps the claim alive through
heartbeats, and takes it back when the worker stops or dies.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Claim:
    prediction_id: str
    model: str
    worker_id: str
    attempt: int


class Dispatcher(Protocol):
    def submitted(self, session: Session, prediction_id: str, model: str) -> None:
        """Called in the transaction that inserts the prediction."""
        ...

    def claim(self, worker_id: str, models: Collection[str]) -> Claim | None:
        """The oldest waiting prediction for one of ``models``, now held by ``worker_id``."""
        ...

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        """Extend the claim. False means stop: cancelled, deleted, or taken over."""
        ...

    def release(self, claim: Claim) -> None:
        """Give an unfinished prediction back to the queue (graceful shutdown)."""
        ...
