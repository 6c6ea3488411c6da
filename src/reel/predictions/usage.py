"""A key's limits and usage, for Runway's ``/v1/organization`` routes.

Reel's limits are per key, across models (``reel.predictions.limits``); Runway reports them
per model, so every served model shows the key's limits. Usage counts the predictions the key
created (per UTC day, as ``per_day`` counts them, from the daily ledger that outlives the
predictions' retention); Reel charges nothing, so every amount of credits is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from reel.errors import InvalidInput
from reel.lifecycle.clock import utcnow
from reel.predictions.keys import Principal
from reel.predictions.limits import DailyCount, Limits, RateLimiter, daily_counts

MAX_USAGE_DAYS = 90
DEFAULT_USAGE_DAYS = 30


@dataclass(frozen=True)
class KeyUsage:
    limits: Limits
    """The key's effective limits (its own, else the server's defaults)."""
    today: dict[str, int]
    """Predictions created since 00:00 UTC, per model."""


@dataclass(frozen=True)
class UsageRange:
    start: date
    before: date
    days: list[DailyCount]


class UsageService:
    def __init__(self, sessions: sessionmaker[Session], limits: RateLimiter) -> None:
        self._sessions = sessions
        self._limits = limits

    def current(self, owner: Principal) -> KeyUsage:
        with self._sessions() as session:
            limits = self._limits.limits_of(session, owner.key_id)
            today = utcnow().astimezone(UTC).date()
            counts = daily_counts(session, owner.key_id, today, today + timedelta(days=1))
        return KeyUsage(limits, {entry.model: entry.count for entry in counts})

    def between(self, owner: Principal, start: date | None, before: date | None) -> UsageRange:
        """Daily counts for ``start <= day < before`` (Runway's defaults: the last 30 days,
        and 30 days after ``start``; at most 90 days)."""
        today = utcnow().astimezone(UTC).date()
        start = start or today - timedelta(days=DEFAULT_USAGE_DAYS)
        before = before or start + timedelta(days=DEFAULT_USAGE_DAYS)
        if before <= start:
            raise InvalidInput("beforeDate", f"must be after startDate ({start.isoformat()})")
        if (before - start).days > MAX_USAGE_DAYS:
            raise InvalidInput("beforeDate", f"must be at most {MAX_USAGE_DAYS} days after startDate")
        with self._sessions() as session:
            days = daily_counts(session, owner.key_id, start, before)
        return UsageRange(start, before, days)


def parse_day(field: str, value: object) -> date | None:
    """An ISO-8601 date (``YYYY-MM-DD``; a datetime's date part is taken) or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        try:
            return datetime.fromisoformat(value).date()
        except ValueError as exc:
            raise InvalidInput(field, f"{value!r} is not a date as YYYY-MM-DD") from exc
