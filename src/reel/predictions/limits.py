"""Per-key limits, with the database as their only record.

Three limits, each optional, each a key's own or else the server-wide default
(``REEL_KEY_MAX_CONCURRENT``, ``REEL_KEY_PER_MINUTE``, ``REEL_KEY_PER_DAY``):

- ``max_concurrent``: predictions of the key generating at once. Over it a prediction is
  accepted and waits; the dispatchers' fair claim order (``reel.dispatch.fair``) does not
  start it, and Runway's view calls it ``THROTTLED``.
- ``per_minute``: submissions accepted in the last 60 seconds (a rolling window).
- ``per_day``: predictions created since 00:00 UTC.

Over a rate limit a submit is refused with :class:`RateLimited` (HTTP 429, ``Retry-After``)
and nothing is created. ``per_minute`` counts the key's rows in the predictions table (deleted
ones too: deleting does not give a submission back); ``per_day`` and the usage reports read
the daily ledger (``daily_usage``, :func:`count_creation`), which retention keeps when it
deletes the predictions. Both are in the database, so every API replica sees the same counts;
:meth:`RateLimiter.check` runs in the transaction that inserts the prediction, after locking
the key's row, so concurrent submits through different replicas are counted one after
another. An ``Idempotency-Key`` replay creates nothing and is answered before the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from reel.errors import RateLimited
from reel.lifecycle.clock import utcnow
from reel.store.tables import ApiKey, DailyUsage, Prediction

MINUTE = timedelta(seconds=60)


@dataclass(frozen=True)
class Limits:
    """A key's limits; None: unlimited."""

    max_concurrent: int | None = None
    per_minute: int | None = None
    per_day: int | None = None

    @classmethod
    def from_counts(cls, max_concurrent: int, per_minute: int, per_day: int) -> Limits:
        """Settings' spelling: 0 means unlimited."""
        return cls(max_concurrent or None, per_minute or None, per_day or None)

    def over(self, key: ApiKey) -> Limits:
        """``key``'s own limits, these (the server's defaults) where it has none."""
        return Limits(
            key.max_concurrent if key.max_concurrent is not None else self.max_concurrent,
            key.per_minute if key.per_minute is not None else self.per_minute,
            key.per_day if key.per_day is not None else self.per_day,
        )

    @property
    def rated(self) -> bool:
        return self.per_minute is not None or self.per_day is not None


def day_start(moment: datetime) -> datetime:
    """00:00 UTC of ``moment``'s day."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def created_since(session: Session, key_id: str, since: datetime) -> tuple[int, datetime | None]:
    """How many predictions ``key_id`` created since ``since``, and the oldest one's time."""
    count, oldest = session.execute(
        select(func.count(), func.min(Prediction.created_at)).where(
            Prediction.key_id == key_id, Prediction.created_at >= since
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:  # aggregates bypass the column's type
        oldest = oldest.replace(tzinfo=UTC)
    elif isinstance(oldest, str):  # SQLite returns MIN() of a datetime column as text
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
    return int(count), oldest


class RateLimiter:
    def __init__(self, defaults: Limits) -> None:
        self.defaults = defaults

    def limits_of(self, session: Session, key_id: str, *, lock: bool = False) -> Limits:
        query = select(ApiKey).where(ApiKey.id == key_id)
        if lock:
            query = query.with_for_update()
        key = session.scalars(query).one()
        return self.defaults.over(key)

    def check(self, session: Session, key_id: str, *, lock: bool) -> None:
        """Raise :class:`RateLimited` when one more submission by ``key_id`` would go over its
        per-minute or per-day limit. With ``lock``, the key's row is locked first, so that
        concurrent checks (and their inserts, in the same transactions) run one at a time."""
        limits = self.limits_of(session, key_id, lock=lock)
        if not limits.rated:
            return
        now = utcnow()
        if limits.per_minute is not None:
            count, oldest = created_since(session, key_id, now - MINUTE)
            if count >= limits.per_minute:
                wait = (oldest + MINUTE - now).total_seconds() if oldest else 1.0
                raise RateLimited(
                    f"rate limit: this key may submit {limits.per_minute} predictions per minute "
                    f"and has submitted {count} in the last 60 s; retry in {math.ceil(wait)} s",
                    math.ceil(wait),
                )
        if limits.per_day is not None:
            today = day_start(now)
            count = created_on(session, key_id, today.date())
            if count >= limits.per_day:
                wait = (today + timedelta(days=1) - now).total_seconds()
                raise RateLimited(
                    f"daily limit: this key may create {limits.per_day} predictions per UTC day "
                    f"and has created {count} today; the count starts again at 00:00 UTC",
                    math.ceil(wait),
                )


def count_creation(session: Session, key_id: str, model: str, created_at: datetime) -> None:
    """One more prediction of ``model`` created by ``key_id`` on ``created_at``'s UTC day, in the
    daily ledger: in the transaction that inserts the prediction."""
    upsert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(
        DailyUsage
    )
    session.execute(
        upsert.values(
            key_id=key_id, day=created_at.astimezone(UTC).date(), model=model, created=1
        ).on_conflict_do_update(
            index_elements=[DailyUsage.key_id, DailyUsage.day, DailyUsage.model],
            set_={"created": DailyUsage.created + 1},
        )
    )


def created_on(session: Session, key_id: str, day: date) -> int:
    """Predictions ``key_id`` created on the UTC ``day``, all models."""
    total = session.scalar(
        select(func.sum(DailyUsage.created)).where(DailyUsage.key_id == key_id, DailyUsage.day == day)
    )
    return int(total or 0)


@dataclass(frozen=True)
class DailyCount:
    day: date
    model: str
    count: int


def daily_counts(session: Session, key_id: str, start: date, before: date) -> list[DailyCount]:
    """Predictions ``key_id`` created per UTC day and model, for ``start <= day < before``."""
    rows = session.execute(
        select(DailyUsage.day, DailyUsage.model, DailyUsage.created)
        .where(DailyUsage.key_id == key_id, DailyUsage.day >= start, DailyUsage.day < before)
        .order_by(DailyUsage.day, DailyUsage.model)
    ).all()
    return [DailyCount(day, model, created) for day, model, created in rows]
