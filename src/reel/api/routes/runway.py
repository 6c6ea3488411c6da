"""Runway's API (``/v1``, version 2024-11-06): image_to_video, text_to_video, tasks and uploads.

A task is a prediction seen through Runway's vocabulary: the same keys, store and worker as
the WaveSpeed routes; only the spelling of requests, replies and errors differs (see
``reel.api.runway_view`` and ``reel.predictions.runway_inputs``). Every route needs the
``X-Runway-Version`` header except the upload URL the SDK posts file bytes to, which carries
a one-time credential instead of a key (as S3's presigned POST does).

The SDKs retry 408, 409, 429 and 5xx on create, so a 5xx here means no task was created and
no route answers 409.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.concurrency import run_in_threadpool

from reel.api.deps import CurrentKey, ServicesDep, ViewsDep, quick, rendered
from reel.api.json_body import parse_as, read_json
from reel.api.multipart_body import read_file_part
from reel.api.openapi import errors, json_body, links, named_json_body
from reel.api.runway_view import RUNWAY_VERSION, created_task, prediction_id, task_object
from reel.api.schemas import CreatedTask, RunwayUploadTicket, Task, wire
from reel.api.submit_schemas import (
    RUNWAY_CREATE_EXAMPLES,
    RUNWAY_CREATE_SCHEMA,
    RUNWAY_TEXT_EXAMPLE,
    RUNWAY_TEXT_SCHEMA,
)
from reel.errors import Conflict, InvalidInput, NotFound, TooLarge
from reel.lifecycle.states import ACTIVE
from reel.predictions.idempotency import HEADER as IDEMPOTENCY_HEADER
from reel.predictions.image_source import runway_uri
from reel.predictions.keys import Principal
from reel.predictions.runway_inputs import RUNWAY, RUNWAY_TEXT, reel_model
from reel.predictions.service import SubmitDialect
from reel.predictions.views import PredictionRow
from reel.wiring import Services

# A multipart body is the file plus boundaries, part headers and the form fields.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


async def require_runway_version(
    request: Request,
    _declared: Annotated[
        str | None,
        Header(
            alias="X-Runway-Version",
            description="the API version; this server speaks only 2024-11-06",
            json_schema_extra={"enum": [RUNWAY_VERSION]},
        ),
    ] = None,
) -> None:
    # Read by hand (the parameter only declares it): a missing or other version is a 400
    # naming the header, in Runway's error shape.
    version = request.headers.get("x-runway-version")
    if version is None:
        raise InvalidInput("X-Runway-Version", f"header is required; this server speaks {RUNWAY_VERSION}")
    if version != RUNWAY_VERSION:
        raise InvalidInput(
            "X-Runway-Version", f"{version!r} is not a supported version; this server speaks {RUNWAY_VERSION}"
        )


router = APIRouter(prefix="/v1", tags=["runway"], dependencies=[Depends(require_runway_version)])
upload_router = APIRouter(prefix="/v1", tags=["runway"])


@router.post(
    "/image_to_video",
    summary="Start a task: a video from an image (Runway's gen4_turbo)",
    response_model=CreatedTask,
    responses={
        **errors("runway", 400, 401, 413, 422, 429, 503),
        **links(
            200, "/id", {"task": ("get_task", "task_id"), "cancel_or_delete": ("delete_task", "task_id")}
        ),
    },
    # Its schema names the registry's models: create_app registers it.
    openapi_extra=named_json_body(RUNWAY_CREATE_SCHEMA, examples=RUNWAY_CREATE_EXAMPLES),
)
async def image_to_video(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    body = await read_json(request)
    model = reel_model(body.get("model") if isinstance(body, dict) else None)
    return await _create_task(request, key, services, model, body, RUNWAY)


@router.post(
    "/text_to_video",
    summary="Start a task: a video from a prompt alone (Runway's gen4.5)",
    response_model=CreatedTask,
    responses={
        **errors("runway", 400, 401, 413, 422, 429, 503),
        **links(
            200, "/id", {"task": ("get_task", "task_id"), "cancel_or_delete": ("delete_task", "task_id")}
        ),
    },
    # Its schema names the registry's text-to-video models: create_app registers it.
    openapi_extra=named_json_body(RUNWAY_TEXT_SCHEMA, example=RUNWAY_TEXT_EXAMPLE),
)
async def text_to_video(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    body = await read_json(request)
    model = reel_model(body.get("model") if isinstance(body, dict) else None, text_to_video=True)
    return await _create_task(request, key, services, model, body, RUNWAY_TEXT)


async def _create_task(
    request: Request, key: Principal, services: Services, model: str, body: Any, dialect: SubmitDialect
) -> JSONResponse:
    """Submit ``body`` in ``dialect`` and answer Runway's ``{id, estimatedCost}`` (both create routes)."""
    submission = await run_in_threadpool(
        services.predictions.submit,
        key,
        model,
        body,
        None,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
        dialect=dialect,
    )
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else None
    return JSONResponse(wire(CreatedTask, created_task(submission.prediction)), headers=headers)


def _owned_task(services: Services, key: Principal, task_id: str) -> PredictionRow:
    """The prediction behind ``task_id``; a 404 names the task id as the client spelled it."""
    try:
        return services.predictions.get(key, prediction_id(task_id))
    except NotFound as exc:
        raise NotFound(f"task {task_id!r} not found") from exc


@router.get(
    "/tasks/{task_id}",
    summary="A task's current state",
    response_model=Task,
    responses=errors("runway", 400, 401, 404, 503),
    operation_id="get_task",
)
async def get_task(task_id: str, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    """One schema per status, as Runway's SDKs pick a task's type by its ``status``."""
    # The route Runway's SDKs poll: its reads skip the thread hop where that is safe (deps.quick).
    row = await quick(services, lambda: _owned_task(services, key, task_id))

    def render() -> JSONResponse:
        waiting = services.predictions.waiting(row)
        return JSONResponse(wire(Task, task_object(row, views.public_base, views.blobs, waiting)))

    return await rendered(services, views, row, render)


@router.delete(
    "/tasks/{task_id}",
    status_code=204,
    summary="Cancel a pending or running task, or delete it",
    response_class=Response,
    responses=errors("runway", 400, 401, 404, 503),
    operation_id="delete_task",
)
def delete_task(task_id: str, key: CurrentKey, services: ServicesDep) -> Response:
    """As Runway does: a waiting or running task is cancelled (GET then shows CANCELLED); any
    other task is deleted (GET then answers 404)."""
    row = _owned_task(services, key, task_id)
    pid = row.id
    if row.status in ACTIVE:
        try:
            services.predictions.cancel(key, pid)
            return Response(status_code=204)
        except Conflict:
            pass  # it ended meanwhile: delete it instead
    services.predictions.delete(key, [pid])
    return Response(status_code=204)


class UploadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: StrictStr
    type: Literal["ephemeral"]


@router.post(
    "/uploads",
    summary="Start an ephemeral upload: returns where to POST the file",
    response_model=RunwayUploadTicket,
    operation_id="create_runway_upload",
    responses=errors("runway", 400, 401, 413, 503),
    openapi_extra=json_body(UploadBody, example={"filename": "cat.png", "type": "ephemeral"}),
)
async def create_upload(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    body = parse_as(UploadBody, await read_json(request))
    ticket = await run_in_threadpool(services.files.create_open_ticket, key, body.filename)
    base = services.settings.public_base
    return JSONResponse(
        wire(
            RunwayUploadTicket,
            {
                "uploadUrl": f"{base}/v1/uploads/{ticket.file.id}/content?token={ticket.token}",
                "fields": {},
                "runwayUri": runway_uri(ticket.file.id),
            },
        )
    )


@upload_router.post(
    "/uploads/{file_id}/content",
    status_code=204,
    summary="Send an ephemeral upload's file (multipart part 'file'; no auth: the URL is the key)",
    response_class=Response,
    responses=errors("runway", 400, 404, 413, 503),
    openapi_extra={
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
    },
)
async def upload_content(file_id: str, token: str, request: Request, services: ServicesDep) -> Response:
    limit = await run_in_threadpool(services.files.pending_upload_size, file_id, token)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise TooLarge("file", f"the body is {declared} bytes; uploads are limited to {limit} bytes")
    upload = await read_file_part(request, max_fields=20)
    size = upload.size if upload.size is not None else 0
    if size > limit:
        raise TooLarge("file", f"{size} bytes is over the {limit}-byte upload limit")
    if size == 0:
        raise InvalidInput("file", "is empty")
    fd, name = tempfile.mkstemp(dir=services.blobs.scratch_dir(), prefix="upload-")
    received = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            await run_in_threadpool(shutil.copyfileobj, upload.file, out)
        await run_in_threadpool(services.files.complete_upload, file_id, token, received)
    finally:
        received.unlink(missing_ok=True)
        await upload.close()
    return Response(status_code=204)
