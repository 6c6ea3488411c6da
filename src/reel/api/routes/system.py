"""Health, readiness and the model listing. None of them needs a key, so what they say comes
from ``reel.predictions.readiness``, which keeps internals (hosts, paths) out of it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from reel.api.deps import ReadinessDep
from reel.api.envelope import failure, success
from reel.api.openapi import errors
from reel.api.schemas import Envelope, ErrorEnvelope, Health, NotReady, Ready, ServedModel, wire
from reel.predictions.fleet_metrics import CONTENT_TYPE, MetricsService, may_scrape

router = APIRouter(tags=["system"])


@router.get(
    "/healthz", summary="Liveness: the process answers", response_model=Health, responses=errors("v3")
)
def healthz() -> JSONResponse:
    return JSONResponse(wire(Health, {"status": "ok"}))


@router.get(
    "/readyz",
    summary="Readiness: the database answers (and a worker runs, when expected)",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "Not ready: the reason says why"}, **errors("v3")},
)
def readyz(request: Request, readiness: ReadinessDep) -> JSONResponse:
    state = readiness.check(expect_worker=request.app.state.expect_worker)
    if not state.ready:
        return JSONResponse(
            wire(NotReady, {"status": "unavailable", "reason": state.reason}), status_code=503
        )
    return JSONResponse(wire(Ready, {"status": "ready", "workers": state.workers}))


@router.get(
    "/api/v3/models",
    summary="Model ids served here, their backend and whether they are ready",
    response_model=Envelope[list[ServedModel]],
    responses=errors("v3", 503),
)
def models(readiness: ReadinessDep) -> JSONResponse:
    return success(
        wire(
            list[ServedModel],
            [
                {
                    "id": model.spec.id,
                    "title": model.spec.title,
                    "backend": model.backend,
                    "sandbox": model.backend == "sandbox",
                    "ready": model.ready,
                    "reason": model.reason,
                    "workers": model.workers,
                    "durations": list(model.spec.durations),
                    "parameters": sorted(
                        {
                            "prompt",
                            "aspect_ratio",
                            *model.spec.params,
                            *(() if model.spec.text_to_video else ("image",)),  # t2v takes none
                            *(("loras",) if model.spec.max_loras else ()),
                        }
                    ),
                }
                for model in readiness.models()
            ],
        )
    )


REFUSED = "metrics are served to loopback clients and to requests bearing REEL_METRICS_TOKEN"


@router.get(
    "/metrics",
    summary="Prometheus metrics (loopback clients, or Bearer REEL_METRICS_TOKEN)",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
        },
        403: {
            "model": ErrorEnvelope,
            "description": "Neither a loopback client nor the REEL_METRICS_TOKEN bearer",
            "content": {"application/json": {"example": {"code": 403, "message": REFUSED, "data": None}}},
        },
        **errors("v3", 503),
    },
    operation_id="get_metrics",
)
def prometheus_metrics(request: Request) -> Response:
    token = request.app.state.services.settings.metrics_token
    client = request.client.host if request.client else None
    if not may_scrape(client, request.headers.get("authorization", ""), token):
        return failure(403, REFUSED)
    service: MetricsService = request.app.state.metrics
    return Response(service.render(), media_type=CONTENT_TYPE)
