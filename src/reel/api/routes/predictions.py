"""WaveSpeed v3 prediction routes: submit, result, history, cancel, delete, webhook secret."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from reel.api.deps import CurrentKey, ServicesDep, ViewsDep, quick, rendered
from reel.api.envelope import success
from reel.api.json_body import parse_as, read_json
from reel.api.method_not_allowed import no_route
from reel.api.openapi import errors, json_body, links
from reel.api.schemas import Deleted, DeletedCount, Envelope, HistoryPage, Prediction, WebhookSecret, wire
from reel.api.submit_schemas import submit_examples, submit_model
from reel.catalog.registry import ModelSpec
from reel.lifecycle.states import TERMINAL, Status
from reel.predictions.idempotency import HEADER as IDEMPOTENCY_HEADER
from reel.predictions.service import HistoryQuery

router = APIRouter(prefix="/api/v3", tags=["predictions"])
submit_router = APIRouter(prefix="/api/v3", tags=["submit"])

SYNC_POLL_S = 0.1
ID_ERRORS = errors("v3", 401, 404, 503)


async def _rendered_off_the_loop(render: Callable[[], Any], model: Any = Prediction) -> JSONResponse:
    """``render()`` checked against its wire type, in the envelope, all in a worker thread:
    rendering may read whole videos from the blob store (base64 outputs, over the network on
    S3) and the JSON may be tens of MiB, and the event loop must keep serving every other
    request meanwhile."""
    return await run_in_threadpool(lambda: success(wire(model, render())))


DATE_TIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$"


def _date_time_text(value: Any) -> Any:
    """A date-time must arrive as an ISO-8601 string: pydantic alone would also take a number
    (Unix seconds), which the document does not promise."""
    if not isinstance(value, str) or re.match(DATE_TIME, value) is None:
        raise ValueError("must be an ISO-8601 date-time string, e.g. 2026-01-31T12:00:00Z")
    return value


DateTimeText = Annotated[
    datetime,
    BeforeValidator(_date_time_text),
    WithJsonSchema({"type": "string", "pattern": DATE_TIME, "description": "ISO-8601; UTC when no offset"}),
]


MAX_PAGE = 1_000_000
"""At most 100 items a page: a hundred million predictions."""


class HistoryBody(BaseModel):
    # Strict numbers and strings: the document says integer, so "2" is refused, not coerced.
    model_config = ConfigDict(extra="ignore")
    # Bounded: a page number past what SQL's OFFSET can take was a 500 (schemathesis found it).
    page: StrictInt = Field(1, ge=1, le=MAX_PAGE)
    page_size: StrictInt = Field(20, ge=1, le=100)
    model: StrictStr | None = None
    status: Literal["created", "processing", "completed", "failed", "cancelled"] | None = None
    created_after: DateTimeText | None = None
    created_before: DateTimeText | None = None


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[StrictStr] = Field(min_length=1, max_length=100)


@router.post(
    "/predictions",
    summary="List this key's predictions, newest first",
    response_model=Envelope[HistoryPage],
    responses=errors("v3", 400, 401, 413, 503),
    openapi_extra=json_body(
        HistoryBody, required=False, example={"page": 1, "page_size": 20, "status": "completed"}
    ),
)
async def history(request: Request, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    """Items list their outputs as URLs, also those submitted with ``enable_base64_output``. An
    empty body is the first page of 20."""
    raw = await request.body()
    body = parse_as(HistoryBody, await read_json(request) if raw.strip() else {})
    query = HistoryQuery(**body.model_dump())
    total, rows = await run_in_threadpool(services.predictions.history, key, query)
    return await _rendered_off_the_loop(
        lambda: {"page": body.page, "total": total, "items": [views.listed(row) for row in rows]}, HistoryPage
    )


@router.post(
    "/predictions/delete",
    summary="Delete several predictions",
    response_model=Envelope[DeletedCount],
    responses=errors("v3", 400, 401, 413, 503),
    openapi_extra=json_body(DeleteBody, example={"ids": ["0f1e2d3c4b5a69788796a5b4c3d2e1f0"]}),
)
async def delete_many(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    """Unknown and foreign ids are skipped: ``deleted_count`` says how many were deleted."""
    body = parse_as(DeleteBody, await read_json(request))
    count = await run_in_threadpool(services.predictions.delete, key, body.ids)
    return success(wire(DeletedCount, {"deleted_count": count}))


@router.api_route(
    "/predictions/delete",
    methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
    include_in_schema=False,
)
def delete_many_other_methods(request: Request) -> JSONResponse:
    """``/predictions/delete`` is not the prediction ``delete``: other methods are a 405."""
    no_route(request, "no such endpoint")


@router.get(
    "/predictions/{prediction_id}/result",
    summary="A prediction's current state",
    response_model=Envelope[Prediction],
    responses=errors("v3", 401, 404, 413, 503),
    operation_id="get_prediction_result",
)
@router.get(
    "/predictions/{prediction_id}",
    summary="A prediction's current state (alias)",
    response_model=Envelope[Prediction],
    responses=errors("v3", 401, 404, 413, 503),
    operation_id="get_prediction",
)
async def result(prediction_id: str, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    """A failed prediction is still a 200, with ``status: "failed"`` and its ``error``. A 413
    is a base64 prediction whose output is over ``REEL_MAX_INLINE_BYTES``."""
    # The route polled most: its reads skip the thread hop where that is safe (deps.quick).
    row = await quick(services, lambda: services.predictions.get(key, prediction_id))
    return await rendered(services, views, row, lambda: success(wire(Prediction, views.one(row))))


@router.post(
    "/predictions/{prediction_id}/cancel",
    summary="Cancel a waiting or running prediction",
    response_model=Envelope[Prediction],
    responses=errors("v3", 401, 404, 409, 413, 503),
    operation_id="cancel_prediction",
)
def cancel(prediction_id: str, key: CurrentKey, services: ServicesDep, views: ViewsDep) -> JSONResponse:
    return success(wire(Prediction, views.one(services.predictions.cancel(key, prediction_id))))


@router.delete(
    "/predictions/{prediction_id}",
    summary="Delete a prediction (cancels it if running)",
    response_model=Envelope[Deleted],
    responses=ID_ERRORS,
    operation_id="delete_prediction",
)
def delete_one(prediction_id: str, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    services.predictions.get(key, prediction_id)  # 404 for unknown or foreign ids
    services.predictions.delete(key, [prediction_id])
    return success(wire(Deleted, {"id": prediction_id, "status": "deleted"}))


@router.get(
    "/webhook/secret",
    summary="This key's webhook signing secret",
    response_model=Envelope[WebhookSecret],
    responses=errors("v3", 401, 503),
)
def webhook_secret(key: CurrentKey) -> JSONResponse:
    return success(wire(WebhookSecret, {"secret": key.webhook_secret}))


def _prediction_example(**changes: Any) -> dict[str, Any]:
    prediction = {
        "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "model": "runwayml/gen4-turbo",
        "outputs": [],
        "urls": {"get": "http://127.0.0.1:8000/api/v3/predictions/0f1e2d3c4b5a69788796a5b4c3d2e1f0/result"},
        "has_nsfw_contents": [],
        "status": "created",
        "created_at": "2026-01-31T12:00:00.000Z",
        "error": "",
        "timings": {"inference": 0},
        "progress": 0.0,
        **changes,
    }
    return {"code": 200, "message": "success", "data": prediction}


SUBMIT_OK_EXAMPLES = {
    "created": {"summary": "Accepted: poll urls.get", "value": _prediction_example()},
    "sync_completed": {
        "summary": "enable_sync_mode: the finished prediction",
        "value": _prediction_example(
            status="completed",
            outputs=["http://127.0.0.1:8000/files/5e4d3c2b1a0f9e8d7c6b5a4938271605/output.mp4"],
            has_nsfw_contents=[False],
            timings={"inference": 41250},
            progress=1.0,
        ),
    },
    "sync_timed_out": {
        "summary": "enable_sync_mode: the wait limit passed first (code 5004, still processing)",
        "value": _prediction_example(
            status="processing",
            code=5004,
            progress=0.42,
            error="Sync mode timed out after 90 s; the prediction is still running: poll "
            "http://127.0.0.1:8000/api/v3/predictions/0f1e2d3c4b5a69788796a5b4c3d2e1f0/result",
        ),
    },
}
SUBMIT_RESPONSES = {
    **errors("v3", 400, 401, 413, 422, 429, 503),
    **links(
        200,
        "/data/id",
        {
            "result": ("get_prediction_result", "prediction_id"),
            "cancel": ("cancel_prediction", "prediction_id"),
            "delete": ("delete_prediction", "prediction_id"),
        },
        content={"application/json": {"examples": SUBMIT_OK_EXAMPLES}},
    ),
}


def model_router(models: Iterable[ModelSpec]) -> APIRouter:
    """One submit operation per model id, each with the input schema its registry entry gives
    (:mod:`reel.api.submit_schemas`), then the catch-alls for every other path under /api/v3."""
    models_router = APIRouter(prefix="/api/v3", tags=["submit"])
    for spec in models:
        models_router.add_api_route(
            f"/{spec.id}",
            _submit_endpoint(spec.id),
            methods=["POST"],
            summary=f"Submit a prediction to {spec.id}",
            description=f"{spec.title}. Answers at once with `status: created`; with `enable_sync_mode` "
            "it holds the POST open until the prediction ends, or answers `data.code: 5004` "
            "(still `processing`) when the server's wait limit passes first.",
            operation_id="submit_" + spec.id.replace("/", "_").replace("-", "_").replace(".", "_"),
            response_model=Envelope[Prediction],
            responses=SUBMIT_RESPONSES,
            openapi_extra=json_body(submit_model(spec), examples=submit_examples(spec)),
        )
    return models_router


def _submit_endpoint(model: str) -> Callable[..., Awaitable[JSONResponse]]:
    async def endpoint(
        request: Request,
        key: CurrentKey,
        services: ServicesDep,
        views: ViewsDep,
        webhook: Annotated[
            str | None, Query(description="URL to POST the prediction to when it ends (no base64 outputs)")
        ] = None,
    ) -> JSONResponse:
        return await submit(model, request, key, services, views, webhook)

    return endpoint


@submit_router.api_route(
    "/{path:path}",
    methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
    include_in_schema=False,
)
def unknown_route(path: str, request: Request) -> JSONResponse:
    """Without this, the submit route's catch-all path would turn unknown GETs into 405s."""
    no_route(request, f"no such endpoint: /api/v3/{path}")


@submit_router.post("/{model:path}", include_in_schema=False)
def unknown_model(model: str, request: Request) -> JSONResponse:
    """A model id the registry does not have (known paths that take no POST answer 405)."""
    no_route(request, f"model {model!r} is not served here; GET /api/v3/models lists those that are")


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
    return _replay_marked(success(wire(Prediction, data)), submission.replayed)


def _replay_marked(response: JSONResponse, replayed: bool) -> JSONResponse:
    """Stripe's marker on an answer that an Idempotency-Key replayed."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
