"""The narrow interface for blobs (uploads, input images, outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, source: Path) -> None:
        """Move or copy a finished local file into the store under ``key``."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def read_bytes(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the store is local (lets the server stream it)."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def scratch_dir(self) -> Path:
        """A local directory for files being produced (on the same filesystem when local)."""
        ...
