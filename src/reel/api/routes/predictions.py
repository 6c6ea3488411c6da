"""WaveSpeed v3 prediction routes: submit, result, history, cancel, delete, webhook secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from reel.api.deps import CurrentKey, ServicesDep, ViewsDep
from reel.api.envelope import success
from reel.api.json_body import parse_as, read_json
from reel.errors import NotFound
from reel.lifecycle.states import TERMINAL, Status
from reel.predictions.idempotency import HEADER as IDEMPOTENCY_HEADER
from reel.predictions.service import HistoryQuery

router = APIRouter(prefix="/api/v3", tags=["predictions"])
submit_router = APIRouter(prefix="/api/v3", tags=["submit"])

SYNC_POLL_S = 0.1


async def _rendered_off_the_loop(render: Callable[[], dict[str, Any]]) -> JSONResponse:
    """``render()`` in the envelope, both in a worker thread: rendering may read whole videos
    from the blob store (base64 outputs, over the network on S3) and the JSON may be tens of
    MiB, and the event loop must keep serving every other request meanwhile."""
    return await run_in_threadpool(lambda: success(render()))


class HistoryBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    page: int = Field(1, ge=1)
    page_size: int = Field(20, ge=1, le=100)
    model: str | None = None
    status: Literal["created", "processing", "completed", "failed", "cancelled"] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[str] = Field(min_length=1, max_length=100)


@router.post("/predictions", summary="List this key's predictions, newest first")
async def history(request: Request, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    """Items list their outputs as URLs, also those submitted with ``enable_base64_output``."""
    raw = await request.body()
    body = parse_as(HistoryBody, await read_json(request) if raw.strip() else {})
    query = HistoryQuery(**body.model_dump())
    total, rows = await run_in_threadpool(services.predictions.history, key, query)
    return await _rendered_off_the_loop(
        lambda: {"page": body.page, "total": total, "items": [views.listed(row) for row in rows]}
    )


@router.post("/predictions/delete", summary="Delete several predictions")
async def delete_many(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    body = parse_as(DeleteBody, await read_json(request))
    count = await run_in_threadpool(services.predictions.delete, key, body.ids)
    return success({"deleted_count": count})


@router.get("/predictions/{prediction_id}/result", summary="A prediction's current state")
@router.get("/predictions/{prediction_id}", summary="A prediction's current state (alias)")
def result(prediction_id: str, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    # A plain `def`: FastAPI runs it in a worker thread, blob reads included.
    return success(views.one(services.predictions.get(key, prediction_id)))


@router.post("/predictions/{prediction_id}/cancel", summary="Cancel a waiting or running prediction")
def cancel(prediction_id: str, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    return success(views.one(services.predictions.cancel(key, prediction_id)))


@router.delete("/predictions/{prediction_id}", summary="Delete a prediction (cancels it if running)")
def delete_one(prediction_id: str, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    services.predictions.get(key, prediction_id)  # 404 for unknown or foreign ids
    services.predictions.delete(key, [prediction_id])
    return success({"id": prediction_id, "status": "deleted"})


@router.get("/webhook/secret", summary="This key's webhook signing secret")
def webhook_secret(key: CurrentKey) -> JSONResponse:
    return success({"secret": key.webhook_secret})


@submit_router.api_route("/{path:path}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def unknown_route(path: str) -> JSONResponse:
    """Without this, the submit route's catch-all path would turn unknown GETs into 405s."""
    raise NotFound(f"no such endpoint: /api/v3/{path}")


@submit_router.post("/{model:path}", summary="Submit a prediction to a model, e.g. runwayml/gen4-turbo")
async def submit(
    model: str,
    request: Request,
    key: CurrentKey,
    services: ServicesDep,
    views: ViewsDep,
    webhook: str | None = None,
) -> JSONResponse:
    body = await read_json(request)
    submission = await run_in_threadpool(
        services.predictions.submit,
        key,
        model,
        body,
        webhook,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    row = submission.prediction
    if not submission.sync:
        # A replayed submit may answer with a completed prediction's base64 outputs.
        return _replay_marked(await _rendered_off_the_loop(lambda: views.one(row)), submission.replayed)
    deadline = time.monotonic() + services.settings.sync_wait_s
    while row.status not in TERMINAL and time.monotonic() < deadline:
        await asyncio.sleep(SYNC_POLL_S)
        row = await run_in_threadpool(services.predictions.get, key, row.id)
    if row.status in TERMINAL:
        return _replay_marked(await _rendered_off_the_loop(lambda: views.one(row)), submission.replayed)
    data = views.one(row)  # still running: no outputs, nothing is read
    data["status"] = Status.PROCESSING
    data["code"] = 5004
    data["error"] = (
        f"Sync mode timed out after {services.settings.sync_wait_s:g} s; the prediction is still "
        f"running: poll {data['urls']['get']}"
    )
    return _replay_marked(success(data), submission.replayed)


def _replay_marked(response: JSONResponse, replayed: bool) -> JSONResponse:
    """Stripe's marker on an answer that an Idempotency-Key replayed."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
