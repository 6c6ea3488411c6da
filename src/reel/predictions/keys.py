"""API keys: created once, stored as SHA-256 hashes, checked in constant time.

A key reads ``rk_<id>_<secret>``. The id is looked up directly (it is not secret); the hash
of the whole key is then compared with ``hmac.compare_digest`` so the check's timing says
nothing about how much of the secret matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import NotFound, Unauthorized
from reel.lifecycle.clock import utcnow
from reel.predictions.limits import Limits, day_start
from reel.store.tables import ApiKey, DailyUsage

LAST_USED_RESOLUTION = timedelta(minutes=1)
_KEY_RE = re.compile(r"^rk_([a-z0-9]{12})_([A-Za-z0-9_-]{20,100})$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    limits: Limits = field(default_factory=Limits)
    """The key's own limits (None: the server's default applies)."""
    created_today: int = 0
    """Predictions the key created since 00:00 UTC (filled in by :meth:`KeyService.list`)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id owns every prediction and file it makes."""

    key_id: str
    webhook_secret: str


@dataclass
class _Verified:
    principal: Principal
    checked_at: float
    """``time.monotonic()`` of the database read that verified it."""
    last_used_at: datetime | None
    renewing_since: float | None = None
    """``time.monotonic()`` when a request went to read it again (see :meth:`KeyService.cached`)."""


class KeyService:
    """``cache_s``: how long a verified key is trusted without reading the database again (the
    hot path of every request, result polls above all; 0: never). A revoke through this
    service drops it at once; a revoke elsewhere (``reel keys revoke`` beside the server)
    touches ``revocation_marker``, a file in the data dir, whose change drops every cached key
    of the processes that share that data dir. Other hosts (API replicas on PostgreSQL) see a
    revoke within twice ``cache_s`` (see :meth:`cached`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        cache_s: float = 0.0,
        revocation_marker: Path | None = None,
    ) -> None:
        self._sessions = sessions
        self._cache_s = cache_s
        self._marker = revocation_marker
        self._marker_seen: float | None = None
        self._verified: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    def create(self, name: str = "", limits: Limits = Limits()) -> tuple[str, KeyInfo]:
        """Make a key with its own ``limits`` (None: the server's default); the plaintext is
        returned here once and never stored."""
        key_id = secrets.token_hex(6)
        plaintext = f"rk_{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            id=key_id,
            name=name,
            secret_hash=hash_key(plaintext),
            webhook_secret="whsec_" + secrets.token_urlsafe(32),
            created_at=utcnow(),
            max_concurrent=limits.max_concurrent,
            per_minute=limits.per_minute,
            per_day=limits.per_day,
        )
        with self._sessions.begin() as session:
            session.add(row)
        return plaintext, _info(row)

    def set_limits(self, key_id: str, **changes: int | None) -> KeyInfo:
        """Change some of a key's own limits (``max_concurrent``, ``per_minute``,
        ``per_day``); None clears one, so the server's default applies again."""
        unknown = set(changes) - {"max_concurrent", "per_minute", "per_day"}
        if unknown:
            raise ValueError(f"not a key limit: {', '.join(sorted(unknown))}")
        with self._sessions.begin() as session:
            row = session.get(ApiKey, key_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no key with id {key_id!r}")
            for name, value in changes.items():
                setattr(row, name, value)
            return _info(row)

    def authenticate(self, presented: str | None) -> Principal:
        """The caller, from the cache when it can answer (:meth:`cached`), else :meth:`verify`."""
        return self.cached(presented) or self.verify(presented)

    def verify(self, presented: str | None) -> Principal:
        """The caller, read from the database (and cached): an :class:`Unauthorized` for a
        missing, unknown or revoked key."""
        if not presented:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(presented)
        match = _KEY_RE.match(presented)
        with self._sessions() as session:  # a read: on SQLite it never waits for a writer
            row = session.get(ApiKey, match.group(1)) if match else None
        # Hash and compare even when the id is unknown, so both paths cost the same.
        expected = row.secret_hash if row else hash_key("")
        valid = hmac.compare_digest(expected, digest) and row is not None
        if not valid or row is None or row.revoked_at is not None:
            with self._lock:
                self._verified.pop(digest, None)
            raise Unauthorized("invalid API key: check the 'Authorization: Bearer <key>' header")
        principal = Principal(key_id=row.id, webhook_secret=row.webhook_secret)
        last_used_at = self._record_use(row.id, row.last_used_at)
        if self._cache_s > 0:
            with self._lock:
                self._verified[digest] = _Verified(principal, time.monotonic(), last_used_at)
        return principal

    def _record_use(self, key_id: str, last_used_at: datetime | None) -> datetime | None:
        """Record ``last_used_at`` at minute granularity, in a write of its own: a write per
        request would make every request wait for the write lock (on SQLite, behind worker
        heartbeats). Returns the time now recorded."""
        now = utcnow()
        if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
            with self._sessions.begin() as session:
                session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
            return now
        return last_used_at

    def cached(self, presented: str | None) -> Principal | None:
        """The key's principal if it was verified less than ``cache_s`` ago and nothing is due
        to be written for it, without touching the database (safe on an event loop); None
        means: call :meth:`verify`.

        When an entry falls due, the first request to see it gets None and reads the key
        again; the others go on with the entry meanwhile, for at most another ``cache_s``,
        rather than all wait for that read (or, without ``reel.api.deps.KeyVerifications``,
        all read the key at once)."""
        if self._cache_s <= 0 or not presented:
            return None
        self._drop_all_if_revoked_elsewhere()
        now = time.monotonic()
        with self._lock:
            entry = self._verified.get(hash_key(presented))
            if entry is None or now - entry.checked_at > 2 * self._cache_s:
                return None
            last_use_due = entry.last_used_at is None or utcnow() - entry.last_used_at > LAST_USED_RESOLUTION
            if now - entry.checked_at <= self._cache_s and not last_use_due:
                return entry.principal
            if entry.renewing_since is not None and now - entry.renewing_since <= self._cache_s:
                return entry.principal  # another request is reading it again
            entry.renewing_since = now
            return None  # the caller reads the key again with verify() (and records the use)

    def _drop_all_if_revoked_elsewhere(self) -> None:
        if self._marker is None:
            return
        try:
            changed = self._marker.stat().st_mtime
        except FileNotFoundError:
            changed = None
        with self._lock:
            if changed != self._marker_seen:
                self._verified.clear()
                self._marker_seen = changed

    def _forget(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, entry in self._verified.items() if entry.principal.key_id == key_id]:
                del self._verified[digest]
        if self._marker is not None:
            self._marker.touch()
            # Some filesystems keep whole-second times: make the change visible regardless.
            os.utime(self._marker, ns=(time.time_ns(), time.time_ns()))

    def list(self) -> list[KeyInfo]:
        """Every key, with how many predictions it created today."""
        today = day_start(utcnow()).date()
        with self._sessions() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            counts = dict(
                session.execute(
                    select(DailyUsage.key_id, func.sum(DailyUsage.created))
                    .where(DailyUsage.day == today)
                    .group_by(DailyUsage.key_id)
                ).all()
            )
            return [replace(_info(row), created_today=counts.get(row.id, 0)) for row in rows]

    def revoke(self, key_id: str) -> None:
        with self._sessions.begin() as session:
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no active key with id {key_id!r}")
        self._forget(key_id)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.name,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
        Limits(row.max_concurrent, row.per_minute, row.per_day),
    )
