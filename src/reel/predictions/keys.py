"""API keys: created once, stored as SHA-256 hashes, checked in constant time.

A key reads ``rk_<id>_<secret>``. The id is looked up directly (it is not secret); the hash
of the whole key is then compared with ``hmac.compare_digest`` so the check's timing says
nothing about how much of the secret matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import NotFound, Unauthorized
from reel.lifecycle.clock import utcnow
from reel.store.tables import ApiKey

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


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id owns every prediction and file it makes."""

    key_id: str
    webhook_secret: str


class KeyService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(self, name: str = "") -> tuple[str, KeyInfo]:
        """Make a key; the plaintext is returned here once and never stored."""
        key_id = secrets.token_hex(6)
        plaintext = f"rk_{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            id=key_id,
            name=name,
            secret_hash=hash_key(plaintext),
            webhook_secret="whsec_" + secrets.token_urlsafe(32),
            created_at=utcnow(),
        )
        with self._sessions.begin() as session:
            session.add(row)
        return plaintext, _info(row)

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        match = _KEY_RE.match(presented)
        with self._sessions() as session:  # a read: on SQLite it never waits for a writer
            row = session.get(ApiKey, match.group(1)) if match else None
        # Hash and compare even when the id is unknown, so both paths cost the same.
        expected = row.secret_hash if row else hash_key("")
        valid = hmac.compare_digest(expected, hash_key(presented)) and row is not None
        if not valid or row is None or row.revoked_at is not None:
            raise Unauthorized("invalid API key: check the 'Authorization: Bearer <key>' header")
        now = utcnow()
        # Recorded at minute granularity, in a write of its own: a write per request would
        # make every request wait for the write lock (on SQLite, behind worker heartbeats).
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            with self._sessions.begin() as session:
                session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        return Principal(key_id=row.id, webhook_secret=row.webhook_secret)

    def list(self) -> list[KeyInfo]:
        with self._sessions() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            return [_info(row) for row in rows]

    def revoke(self, key_id: str) -> None:
        with self._sessions.begin() as session:
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no active key with id {key_id!r}")


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.created_at, row.last_used_at, row.revoked_at)
