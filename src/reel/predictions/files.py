"""Uploaded files and generated outputs: who owns them and where their bytes live.

A file's URL (``/files/{id}/{name}``) is a capability, like a CDN link: the id is 192 random
bits, so the URL can be handed to a ``<video>`` tag or another service. Using an upload as
a prediction's ``image`` additionally requires that the same key made it.

Runway's ephemeral uploads (``runway://`` URIs) last 24 hours, as Runway's own do; an upload
ticket whose bytes never arrived lapses after the same time. Every file also expires
``REEL_RETENTION_S`` after it was made (:mod:`reel.predictions.retention`): an expired file
is a 404 at once. The workers' housekeeping thread deletes expired uploads and lapsed tickets
with :meth:`FileService.sweep_expired`; outputs go with their predictions (the retention
sweep), and when a prediction is deleted.

New uploads are refused (503) while the disk is low (:mod:`reel.predictions.disk_space`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from reel.errors import InvalidInput, NotFound, StorageUnavailable, TooLarge
from reel.lifecycle.clock import new_file_id, utcnow
from reel.predictions.disk_space import ALWAYS_ROOM, FreeSpaceGuard
from reel.predictions.keys import Principal
from reel.predictions.retention import KEEP_FOREVER, RetentionPolicy
from reel.storage.base import BlobStore
from reel.store.tables import StoredFile

log = logging.getLogger(__name__)

EPHEMERAL_UPLOAD_TTL = timedelta(hours=24)
"""How long a Runway upload (``runway://``) can be used."""
UNUSED_TICKET_TTL = timedelta(hours=24)
"""How long an upload ticket waits for its bytes."""
SWEEP_BATCH = 500

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Types the server may label a file with; anything else is served as an opaque download so
# an uploaded HTML or SVG file can never run script on this origin.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "video/mp4"})


def safe_filename(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = _UNSAFE_NAME_CHARS.sub("_", base).strip("._") or "file"
    return cleaned[:120]


@dataclass(frozen=True)
class UploadTicket:
    file: StoredFile
    token: str


@dataclass(frozen=True)
class ServedFile:
    blob_key: str
    filename: str
    content_type: str
    size: int


class FileService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        max_upload_bytes: int,
        *,
        retention: RetentionPolicy = KEEP_FOREVER,
        space: FreeSpaceGuard = ALWAYS_ROOM,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self._retention = retention
        self._space = space

    def _expired(self, row: StoredFile) -> bool:
        """Past its own expiry (a Runway upload's 24 hours) or past retention."""
        return _expired(row) or self._retention.expired(row.created_at)

    def _lapsed(self, row: StoredFile) -> bool:
        return _lapsed(row) or self._retention.expired(row.created_at)

    def _check_size(self, size: int, field: str) -> None:
        if size > self.max_upload_bytes:
            raise TooLarge(field, f"{size} bytes is over the {self.max_upload_bytes}-byte upload limit")

    def create_ticket(
        self, owner: Principal, filename: str, size: object, content_type: str | None
    ) -> UploadTicket:
        """A two-step upload of a declared size (WaveSpeed's ``/media/uploads``)."""
        filename = self._required_filename(filename)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidInput("size", "must be a positive number of bytes")
        self._check_size(size, "size")
        self._space.check()
        return self._issue_ticket(owner, filename, content_type or "application/octet-stream", size)

    def create_open_ticket(self, owner: Principal, filename: object) -> UploadTicket:
        """A ticket for an upload whose size is not declared up front (Runway's ephemeral
        uploads): the bytes are capped at the upload limit when they arrive."""
        name = safe_filename(self._required_filename(filename))
        self._space.check()
        return self._issue_ticket(
            owner,
            name,
            mimetypes.guess_type(name)[0] or "application/octet-stream",
            None,
            expires_at=utcnow() + EPHEMERAL_UPLOAD_TTL,
        )

    @staticmethod
    def _required_filename(filename: object) -> str:
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidInput("filename", "is required")
        return filename

    def _issue_ticket(
        self,
        owner: Principal,
        filename: str,
        content_type: str,
        declared_size: int | None,
        *,
        expires_at: datetime | None = None,
    ) -> UploadTicket:
        token = secrets.token_urlsafe(32)
        row = self._new_upload_row(owner, filename, content_type)
        row.expires_at = expires_at
        row.size = 0
        row.declared_size = declared_size
        row.upload_token_hash = hashlib.sha256(token.encode()).hexdigest()
        row.complete = False
        with self._sessions.begin() as session:
            session.add(row)
        return UploadTicket(file=row, token=token)

    @staticmethod
    def _new_upload_row(owner: Principal, filename: str, content_type: str) -> StoredFile:
        name = safe_filename(filename)
        file_id = new_file_id()
        return StoredFile(
            id=file_id,
            key_id=owner.key_id,
            kind="upload",
            blob_key=f"uploads/{file_id}/{name}",
            filename=name,
            content_type=content_type[:100],
            created_at=utcnow(),
        )

    def pending_upload_size(self, file_id: str, token: str) -> int:
        """The most bytes an upload awaiting them may have, if ``token`` opens it: its
        declared size, or the upload limit when none was declared. Refused while the disk is
        low, before any byte of the upload is received."""
        with self._sessions() as session:
            limit = self._upload_limit(self._open_ticket(session, file_id, token))
        self._space.check()
        return limit

    def _upload_limit(self, ticket: StoredFile) -> int:
        return ticket.declared_size if ticket.declared_size is not None else self.max_upload_bytes

    def _open_ticket(
        self, session: Session, file_id: str, token: str, *, for_update: bool = False
    ) -> StoredFile:
        """The upload row ``token`` opens while it still awaits its bytes; NotFound otherwise."""
        row = session.get(StoredFile, file_id, with_for_update=for_update)
        if row is None or row.complete or row.upload_token_hash is None or self._lapsed(row):
            raise NotFound("no pending upload at this URL (it may have been used already)")
        presented = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(row.upload_token_hash, presented):
            raise NotFound("no pending upload at this URL (it may have been used already)")
        return row

    def complete_upload(self, file_id: str, token: str, received: Path) -> StoredFile:
        """Store the bytes of a two-step upload, then record them.

        The bytes go first, outside any transaction: an S3 put of 20 MiB must not hold a pooled
        connection, or SQLite's write lock, for its whole length. The record is then a short
        transaction fenced on the ticket still being open. Every attempt stores under a key of
        its own, so when two PUTs of one ticket race, the row gets the size and the key of the
        one recorded, and the other deletes its bytes and answers NotFound, as a used ticket does.
        """
        with self._sessions() as session:
            ticket = self._open_ticket(session, file_id, token)
            declared, filename = self._upload_limit(ticket), ticket.filename
        size = received.stat().st_size
        if size > declared:
            raise TooLarge("body", f"{size} bytes received, more than the {declared} declared")
        blob_key = f"uploads/{file_id}-{secrets.token_hex(6)}/{filename}"
        try:
            self._blobs.put_file(blob_key, received)
            with self._sessions.begin() as session:
                row = self._open_ticket(session, file_id, token, for_update=True)
                row.blob_key = blob_key
                row.size = size
                row.complete = True
                row.upload_token_hash = None
        except Exception:
            # Not recorded (the ticket was used or lapsed meanwhile, the database is down ...):
            # the bytes stored for it must not stay behind.
            self._drop_blob(blob_key, "an upload that was not recorded")
            raise
        return row

    def store_upload(self, owner: Principal, filename: str, content_type: str, data: bytes) -> StoredFile:
        """The legacy one-step upload: bytes arrive with the request, and are stored before
        the row that makes them visible."""
        self._check_size(len(data), "file")
        if not data:
            raise InvalidInput("file", "is empty")
        self._space.check()
        row = self._new_upload_row(owner, filename, content_type)
        row.size = len(data)
        row.complete = True
        self._blobs.put_bytes(row.blob_key, data)
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except Exception:
            self._drop_blob(row.blob_key, "an upload that was not recorded")
            raise
        return row

    def _drop_blob(self, blob_key: str, why: str) -> None:
        try:
            self._blobs.delete(blob_key)
        except StorageUnavailable as exc:
            log.error("%s left blob %s behind: %s", why, blob_key, exc.message)

    def served(self, file_id: str, filename: str) -> ServedFile:
        with self._sessions() as session:
            row = session.get(StoredFile, file_id)
            if row is None or not row.complete or row.filename != filename or self._expired(row):
                raise NotFound("no such file")
            content_type = (
                row.content_type if row.content_type in INLINE_TYPES else "application/octet-stream"
            )
            return ServedFile(row.blob_key, row.filename, content_type, row.size)

    def read_owned_upload(self, owner: Principal, file_id: str, *, field: str = "image") -> bytes:
        with self._sessions() as session:
            row = session.get(StoredFile, file_id)
            if row is None or not row.complete or row.key_id != owner.key_id:
                raise InvalidInput(field, "does not name a finished upload made with this key")
            if _expired(row):
                raise InvalidInput(
                    field, "names an upload that expired (uploads last 24 hours); upload again"
                )
            if self._retention.expired(row.created_at):
                raise InvalidInput(field, "names an upload that expired (REEL_RETENTION_S); upload again")
            blob_key = row.blob_key
        return self._blobs.read_bytes(blob_key)

    def sweep_expired(self, now: datetime | None = None) -> int:
        """Delete expired uploads (their own expiry, or retention) and lapsed tickets, bytes
        first, at most :data:`SWEEP_BATCH` per call; returns how many went.

        Safe to run from several workers at once: deleting a blob or row twice is harmless.
        """
        now = now or utcnow()
        gone = or_(
            StoredFile.expires_at <= now,
            and_(StoredFile.complete.is_(False), StoredFile.created_at <= now - UNUSED_TICKET_TTL),
        )
        if (cutoff := self._retention.cutoff(now)) is not None:
            gone = or_(gone, StoredFile.created_at <= cutoff)
        with self._sessions() as session:
            rows = session.execute(
                select(StoredFile.id, StoredFile.blob_key)
                .where(StoredFile.kind == "upload", gone)
                .limit(SWEEP_BATCH)
            ).all()
        deleted: dict[str, str] = {}
        for file_id, blob_key in rows:
            try:
                self._blobs.delete(blob_key)
            except StorageUnavailable as exc:  # keep the row, so the next sweep tries again
                log.warning("could not delete expired upload %s: %s", blob_key, exc.message)
                continue
            deleted[file_id] = blob_key
        swept = 0
        if deleted:
            with self._sessions.begin() as session:
                for row in session.scalars(select(StoredFile).where(StoredFile.id.in_(deleted))):
                    # A ticket whose bytes were recorded since (under a new key) is not swept.
                    if row.blob_key == deleted[row.id]:
                        session.delete(row)
                        swept += 1
            log.info("swept %d expired upload(s)", swept)
        return swept


def _expired(row: StoredFile) -> bool:
    return row.expires_at is not None and row.expires_at <= utcnow()


def _lapsed(row: StoredFile) -> bool:
    """A ticket whose bytes did not arrive in time (or whose upload expired meanwhile)."""
    return _expired(row) or row.created_at <= utcnow() - UNUSED_TICKET_TTL
