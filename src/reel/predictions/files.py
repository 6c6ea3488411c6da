"""Uploaded files and generated outputs: who owns them and where their bytes live.

A file's URL (``/files/{id}/{name}``) is a capability, like a CDN link: the id is 192 random
bits, so the URL can be handed to a ``<video>`` tag or another service. Using an upload as
a prediction's ``image`` additionally requires that the same key made it.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import re
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy.orm import Session, sessionmaker

from reel.errors import InvalidInput, NotFound, TooLarge
from reel.predictions.clock import new_file_id, utcnow
from reel.predictions.keys import Principal
from reel.storage.base import BlobStore
from reel.store.tables import StoredFile

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
    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore, max_upload_bytes: int) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self.max_upload_bytes = max_upload_bytes

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
        return self._issue_ticket(owner, filename, content_type or "application/octet-stream", size)

    def create_open_ticket(self, owner: Principal, filename: object) -> UploadTicket:
        """A ticket for an upload whose size is not declared up front (Runway's ephemeral
        uploads): the bytes are capped at the upload limit when they arrive."""
        name = safe_filename(self._required_filename(filename))
        return self._issue_ticket(
            owner, name, mimetypes.guess_type(name)[0] or "application/octet-stream", None
        )

    @staticmethod
    def _required_filename(filename: object) -> str:
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidInput("filename", "is required")
        return filename

    def _issue_ticket(
        self, owner: Principal, filename: str, content_type: str, declared_size: int | None
    ) -> UploadTicket:
        token = secrets.token_urlsafe(32)
        row = self._new_upload_row(owner, filename, content_type)
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
        declared size, or the upload limit when none was declared."""
        with self._sessions() as session:
            row = session.get(StoredFile, file_id)
            if row is None or row.complete or row.upload_token_hash is None:
                raise NotFound("no pending upload at this URL (it may have been used already)")
            presented = hashlib.sha256(token.encode()).hexdigest()
            if not hmac.compare_digest(row.upload_token_hash, presented):
                raise NotFound("no pending upload at this URL (it may have been used already)")
            return row.declared_size if row.declared_size is not None else self.max_upload_bytes

    def complete_upload(self, file_id: str, token: str, received: Path) -> StoredFile:
        declared = self.pending_upload_size(file_id, token)
        size = received.stat().st_size
        if size > declared:
            raise TooLarge("body", f"{size} bytes received, more than the {declared} declared")
        with self._sessions.begin() as session:
            row = session.get(StoredFile, file_id, with_for_update=True)
            if row is None or row.complete:
                raise NotFound("no pending upload at this URL (it may have been used already)")
            self._blobs.put_file(row.blob_key, received)
            row.size = size
            row.complete = True
            row.upload_token_hash = None
        return row

    def store_upload(self, owner: Principal, filename: str, content_type: str, data: bytes) -> StoredFile:
        """The legacy one-step upload: bytes arrive with the request."""
        self._check_size(len(data), "file")
        if not data:
            raise InvalidInput("file", "is empty")
        row = self._new_upload_row(owner, filename, content_type)
        row.size = len(data)
        row.complete = True
        self._blobs.put_bytes(row.blob_key, data)
        with self._sessions.begin() as session:
            session.add(row)
        return row

    def served(self, file_id: str, filename: str) -> ServedFile:
        with self._sessions() as session:
            row = session.get(StoredFile, file_id)
            if row is None or not row.complete or row.filename != filename:
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
            blob_key = row.blob_key
        return self._blobs.read_bytes(blob_key)
