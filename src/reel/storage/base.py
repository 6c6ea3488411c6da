"""The narrow interface for blobs (uploads, input images, outputs).

Two implementations: ``LocalBlobStore`` (a directory, the default) and ``S3BlobStore`` (an
S3-compatible bucket). Keys are relative paths made by Reel (``uploads/ID/name``,
``outputs/ID.mp4``); a missing key raises ``FileNotFoundError`` in both, and a store that
cannot be reached raises ``reel.errors.StorageUnavailable``.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    @property
    def signs_urls(self) -> bool:
        """Whether :meth:`direct_url` makes URLs: signing may fetch credentials over the
        network, so a caller on an event loop renders those answers in a worker thread."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, source: Path) -> None:
        """Store a finished local file under ``key``; ``source`` is gone afterwards."""
        ...

    def open(self, key: str, byte_range: tuple[int, int] | None = None) -> BinaryIO:
        """A stream of the blob, or of bytes ``first..last`` (inclusive) of it. Close it."""
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the store is local (lets the server stream it)."""
        ...

    def direct_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        """A URL that clients may fetch the blob from without going through Reel (a presigned
        S3 GET URL that expires as configured), or None: Reel's ``/files`` route serves it."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that does not exist is not an error."""
        ...

    def scratch_dir(self) -> Path:
        """A local directory for files being produced (on the same filesystem when local)."""
        ...
