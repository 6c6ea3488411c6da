"""Idempotent submission: a repeated ``Idempotency-Key`` returns the first prediction.

As Stripe does it: the first submit with a key records a SHA-256 of the canonical request
(dialect, model, body, webhook) and the prediction it created, in the same transaction as the
prediction. A repeat with the same request gets that prediction back, and no new one; a
repeat with a different request is refused (:class:`~reel.errors.IdempotencyMismatch`).

Keys are scoped to the API key that sent them. The record's primary key is (API key,
Idempotency-Key), so of two concurrent duplicates only one can commit; the other rolls back
and answers with the winner's prediction. A submit that is refused (4xx) records nothing, so
a corrected retry may reuse its key. A key is free again after :data:`IDEMPOTENCY_TTL`, or
once the prediction it created was deleted or expired (``REEL_RETENTION_S``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import IdempotencyMismatch, InvalidInput
from reel.lifecycle.clock import utcnow
from reel.predictions.keys import Principal
from reel.store.tables import IdempotencyRecord, Prediction

if TYPE_CHECKING:  # retention imports this module's TTL
    from reel.predictions.retention import RetentionPolicy

HEADER = "Idempotency-Key"
IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")


def request_hash(dialect: str, model: str, body: Any, webhook: str | None) -> str:
    """SHA-256 of the request in a canonical JSON form: key order and spacing do not matter."""
    canonical = json.dumps(
        {"dialect": dialect, "model": model, "body": body, "webhook": webhook},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,  # lone surrogates from JSON escapes stay encodable
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    key_id: str
    """The API key's id: idempotency keys are scoped to it."""
    idempotency_key: str
    request_hash: str

    @classmethod
    def of(
        cls, owner: Principal, idempotency_key: str, dialect: str, model: str, body: Any, webhook: str | None
    ) -> IdempotentRequest:
        if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH or not _PRINTABLE_ASCII.match(idempotency_key):
            raise InvalidInput(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
        return cls(owner.key_id, idempotency_key, request_hash(dialect, model, body, webhook))


class IdempotencyStore:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl: timedelta = IDEMPOTENCY_TTL,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._retention = retention

    def _live_prediction(self) -> ColumnElement[bool]:
        """SQL: a prediction neither deleted nor expired under retention."""
        if self._retention is None:
            return Prediction.deleted_at.is_(None)
        return self._retention.live_prediction()

    def find(self, request: IdempotentRequest) -> str | None:
        """The id of the prediction a live record of this key created, or None.

        Raises IdempotencyMismatch when the key was used for a different request.
        """
        with self._sessions() as session:
            row = session.get(IdempotencyRecord, (request.key_id, request.idempotency_key))
            if row is None or row.created_at < utcnow() - self._ttl:
                return None
            # A record whose prediction was deleted, expired or swept no longer counts.
            live = session.scalar(
                select(Prediction.id).where(Prediction.id == row.prediction_id, self._live_prediction())
            )
            if live is None:
                return None
            if row.request_hash != request.request_hash:
                raise IdempotencyMismatch(
                    HEADER,
                    f"{request.idempotency_key!r} was already used for a different request in the last "
                    f"{self._ttl.total_seconds() / 3600:g} h; send a new key with a new request",
                )
            return row.prediction_id

    def remember(self, session: Session, request: IdempotentRequest, prediction_id: str) -> None:
        """Record ``request`` in the transaction that creates ``prediction_id``.

        Commit fails with IntegrityError when a concurrent request recorded the key first.
        """
        now = utcnow()
        prediction_gone = ~exists().where(
            Prediction.id == IdempotencyRecord.prediction_id, self._live_prediction()
        )
        # Clear records that no longer count: this owner's expired ones, and this key's if
        # its prediction was deleted (or expired, or swept). A live record stays, so a
        # concurrent duplicate collides.
        session.execute(
            delete(IdempotencyRecord)
            .where(
                IdempotencyRecord.key_id == request.key_id,
                or_(
                    IdempotencyRecord.created_at < now - self._ttl,
                    and_(IdempotencyRecord.idempotency_key == request.idempotency_key, prediction_gone),
                ),
            )
            .execution_options(synchronize_session=False)
        )
        session.add(
            IdempotencyRecord(
                key_id=request.key_id,
                idempotency_key=request.idempotency_key,
                request_hash=request.request_hash,
                prediction_id=prediction_id,
                created_at=now,
            )
        )
