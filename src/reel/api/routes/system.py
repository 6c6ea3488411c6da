"""Health, readiness and the model listing. None of them needs a key, so what they say comes
from ``reel.predictions.readiness``, which keeps internals (hosts, paths) out of it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reel.api.deps import ReadinessDep
from reel.api.envelope import success
from reel.api.openapi import errors
from reel.api.schemas import Envelope, Health, NotReady, Ready, ServedModel, wire

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
                    "parameters": sorted({"prompt", "image", "aspect_ratio", *model.spec.params}),
                }
                for model in readiness.models()
            ],
        )
    )
