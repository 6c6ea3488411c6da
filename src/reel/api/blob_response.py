"""Streaming a blob that is not on the local disk (an S3 object) to the client.

The body is read from the store in 1 MiB pieces as the client takes them, never held whole
in memory. One ``Range: bytes=first-last`` (or ``first-``, or ``-suffix``) is honoured with a
206, which is what ``<video>`` players ask for when seeking; anything else gets the whole
file with 200, as RFC 9110 allows a server to ignore a Range it does not handle.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from fastapi.responses import StreamingResponse

from reel.errors import NotFound
from reel.storage.base import BlobStore

CHUNK_BYTES = 1024 * 1024
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive for one satisfiable byte range, else None (whole file)."""
    match = _SINGLE_RANGE.match((header or "").strip())
    if match is None or size <= 0:
        return None
    start, end = match.groups()
    if not start:
        if not end or int(end) == 0:
            return None
        return max(0, size - int(end)), size - 1
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if first > last:
        return None
    return first, last


def _pieces(stream: BinaryIO, length: int) -> Iterator[bytes]:
    try:
        left = length
        while left > 0:
            piece = stream.read(min(CHUNK_BYTES, left))
            if not piece:
                break
            left -= len(piece)
            yield piece
    finally:
        stream.close()


def stream_blob(
    blobs: BlobStore,
    key: str,
    *,
    size: int,
    content_type: str,
    filename: str,
    headers: dict[str, str],
    range_header: str | None,
) -> StreamingResponse:
    """The blob at ``key`` (``size`` bytes) as a response; the object is opened before the
    response starts, so an unreachable store is a clean 503 rather than a cut-off body."""
    byte_range = parse_byte_range(range_header, size)
    try:
        stream = blobs.open(key, byte_range)
    except FileNotFoundError as exc:
        raise NotFound("no such file") from exc
    out = {**headers, "Accept-Ranges": "bytes"}
    if content_type == "application/octet-stream":
        out["Content-Disposition"] = f'attachment; filename="{filename}"'
    if byte_range is None:
        out["Content-Length"] = str(size)
        return StreamingResponse(_pieces(stream, size), media_type=content_type, headers=out)
    first, last = byte_range
    out["Content-Length"] = str(last - first + 1)
    out["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        _pieces(stream, last - first + 1), status_code=206, media_type=content_type, headers=out
    )
