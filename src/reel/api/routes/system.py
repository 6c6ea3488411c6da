"""Health, readiness and the model listing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reel.api.deps import ServicesDep
from reel.api.envelope import success
from reel.catalog.registry import MODELS
from reel.store.db import ping
from reel.worker.presence import live_workers

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: the database answers (and a worker runs, when expected)")
def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    try:
        ping(services.engine)
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "reason": f"database: {exc}"}, status_code=503)
    with services.sessions() as session:
        workers = len(live_workers(session))
    if request.app.state.expect_worker and workers == 0:
        return JSONResponse({"status": "unavailable", "reason": "no live worker yet"}, status_code=503)
    return JSONResponse({"status": "ready", "workers": workers})


@router.get("/api/v3/models", summary="Model ids served here, their backend and whether they are ready")
def models(services: ServicesDep) -> JSONResponse:
    with services.sessions() as session:
        workers = live_workers(session)
    items = []
    for spec in MODELS.values():
        reports = [w.models[spec.id] for w in workers if spec.id in w.models]
        ready = any(r.get("ready") for r in reports)
        if reports:
            backend = str(reports[0].get("backend"))
            reason = "" if ready else str(reports[0].get("reason", ""))
        else:
            backend = "none"
            reason = "no worker serving this model is running; start one with `reel worker`"
        items.append(
            {
                "id": spec.id,
                "title": spec.title,
                "backend": backend,
                "sandbox": backend == "sandbox",
                "ready": ready,
                "reason": reason,
                "workers": len(reports),
                "durations": list(spec.durations),
                "parameters": sorted({"prompt", "image", "aspect_ratio", *spec.params}),
            }
        )
    return success(items)
