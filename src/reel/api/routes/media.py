"""Uploads (two-step and legacy binary) and serving stored files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from reel.api.blob_response import stream_blob
from reel.api.deps import CurrentKey, ServicesDep
from reel.api.envelope import success
from reel.api.json_body import parse_as, read_json
from reel.api.multipart_body import read_file_part
from reel.api.openapi import errors, json_body
from reel.api.schemas import Envelope, UploadedFile, UploadTicket, wire
from reel.errors import TooLarge
from reel.predictions.files import StoredFile
from reel.settings import Settings

router = APIRouter(tags=["media"])


def download_url(settings: Settings, row: StoredFile) -> str:
    # Always this server's /files route, even with REEL_FILE_URLS=presigned: the URL must be
    # accepted as a prediction's ``image`` (read from storage by id, no HTTP round trip) and
    # must not expire, and an uploaded file is only ever served with Reel's safety headers.
    return f"{settings.public_base}/files/{row.id}/{row.filename}"


def _file_data(settings: Settings, row: StoredFile) -> dict[str, object]:
    return {
        "type": row.content_type.split("/", 1)[0] if "/" in row.content_type else "file",
        "filename": row.filename,
        "size": row.size if row.complete else (row.declared_size or 0),
        "download_url": download_url(settings, row),
    }


class TicketBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: StrictStr
    size: StrictInt = Field(description="bytes the PUT will send; over REEL_MAX_UPLOAD_BYTES is a 413")
    content_type: StrictStr | None = None


BINARY_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
RAW_BYTES_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/api/v3/media/uploads",
    summary="Start a two-step upload",
    response_model=Envelope[UploadTicket],
    responses=errors("v3", 400, 401, 413, 503),
    openapi_extra=json_body(
        TicketBody, example={"filename": "cat.png", "size": 123456, "content_type": "image/png"}
    ),
)
async def create_upload(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    body = parse_as(TicketBody, await read_json(request))
    ticket = await run_in_threadpool(
        services.files.create_ticket, key, body.filename, body.size, body.content_type
    )
    settings = services.settings
    data = _file_data(settings, ticket.file)
    data["upload"] = {
        "method": "PUT",
        "url": f"{settings.public_base}/api/v3/media/uploads/{ticket.file.id}?token={ticket.token}",
        "headers": {"Content-Type": ticket.file.content_type},
    }
    return success(wire(UploadTicket, data))


@router.put(
    "/api/v3/media/uploads/{file_id}",
    summary="Send an upload's bytes (no auth: the URL is the key)",
    response_model=Envelope[UploadedFile],
    responses=errors("v3", 400, 404, 413, 503),
    openapi_extra=RAW_BYTES_BODY,
)
async def put_upload(file_id: str, token: str, request: Request, services: ServicesDep) -> JSONResponse:
    declared = await run_in_threadpool(services.files.pending_upload_size, file_id, token)
    fd, name = tempfile.mkstemp(dir=services.blobs.scratch_dir(), prefix="upload-")
    received = Path(name)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                written += len(chunk)
                if written > declared:
                    raise TooLarge("body", f"more bytes than the {declared} declared for this upload")
                out.write(chunk)
        row = await run_in_threadpool(services.files.complete_upload, file_id, token, received)
    finally:
        received.unlink(missing_ok=True)
    return success(wire(UploadedFile, _file_data(services.settings, row)))


@router.post(
    "/api/v3/media/upload/binary",
    summary="One-step upload (multipart field 'file')",
    response_model=Envelope[UploadedFile],
    responses=errors("v3", 400, 401, 413, 503),
    openapi_extra=BINARY_UPLOAD_BODY,
)
async def upload_binary(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    upload = await read_file_part(request, max_fields=10)
    data = await upload.read(services.settings.max_upload_bytes + 1)
    row = await run_in_threadpool(
        services.files.store_upload,
        key,
        upload.filename or "upload",
        upload.content_type or "application/octet-stream",
        data,
    )
    return success(wire(UploadedFile, _file_data(services.settings, row)))


# Uploads are served as what they are only when they are PNG, JPEG, WebP or MP4; anything else
# is an opaque download.
SERVED_TYPES = ("video/mp4", "image/png", "image/jpeg", "image/webp", "application/octet-stream")
BYTES = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in SERVED_TYPES}
FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The bytes", "content": BYTES},
    206: {"description": "The requested byte range (Range: bytes=...)", "content": BYTES},
    304: {"description": "Not modified (If-None-Match)"},
    **errors("v3", 404, 416, 503),
}


@router.get(
    "/files/{file_id}/{filename}",
    summary="An uploaded file or a generated video",
    response_class=Response,
    responses=FILE_RESPONSES,
)
def serve_file(file_id: str, filename: str, request: Request, services: ServicesDep) -> Response:
    served = services.files.served(file_id, filename)
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    path = services.blobs.local_path(served.blob_key)
    if path is not None:
        return FileResponse(
            path,
            media_type=served.content_type,
            filename=served.filename if served.content_type == "application/octet-stream" else None,
            headers=headers,
        )
    return stream_blob(
        services.blobs,
        served.blob_key,
        size=served.size,
        content_type=served.content_type,
        filename=served.filename,
        headers=headers,
        range_header=request.headers.get("range"),
    )
