"""Reading the one file part of a multipart upload body, with errors that name the field."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from reel.errors import InvalidInput


async def read_file_part(request: Request, *, max_fields: int) -> UploadFile:
    """The multipart part named ``file`` (one file at most, ``max_fields`` other fields)."""
    try:
        form = await request.form(max_files=1, max_fields=max_fields)
    except Exception as exc:  # malformed multipart bodies raise several parser-specific types
        raise InvalidInput("file", f"could not read the multipart body ({exc})") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file", "a multipart file part named 'file' is required")
    return upload
