"""Health, readiness and the model listing. None of them needs a key, so what they say comes
from ``reel.predictions.readiness``, which keeps internals (hosts, paths) out of it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reel.api.deps import ReadinessDep
from reel.api.envelope import success

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: the database answers (and a worker runs, when expected)")
def readyz(request: Request, readiness: ReadinessDep) -> JSONResponse:
    state = readiness.check(expect_worker=request.app.state.expect_worker)
    if not state.ready:
        return JSONResponse({"status": "unavailable", "reason": state.reason}, status_code=503)
    return JSONResponse({"status": "ready", "workers": state.workers})


@router.get("/api/v3/models", summary="Model ids served here, their backend and whether they are ready")
def models(readiness: ReadinessDep) -> JSONResponse:
    return success(
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
        ]
    )
