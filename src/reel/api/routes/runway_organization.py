"""Runway's ``/v1/organization`` routes: the calling key's limits and usage, in the shapes the
official SDKs' ``organization.retrieve()`` and ``retrieve_usage()`` read. Models are named
by their Runway name where they have one (``gen4_turbo``), else by their Reel id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reel.api.deps import CurrentKey, ServicesDep
from reel.api.json_body import read_json
from reel.api.openapi import errors, json_body
from reel.api.routes.runway import require_runway_version
from reel.api.schemas import Organization, UsageQuery, UsageReport, wire
from reel.catalog.registry import MODELS
from reel.errors import InvalidInput
from reel.predictions.runway_inputs import RUNWAY_MODELS
from reel.predictions.usage import parse_day

router = APIRouter(prefix="/v1", tags=["runway"], dependencies=[Depends(require_runway_version)])

RUNWAY_NAMES = {reel_id: name for name, reel_id in RUNWAY_MODELS.items()}


def runway_name(model: str) -> str:
    return RUNWAY_NAMES.get(model, model)


@router.get(
    "/organization",
    summary="The calling key's limits and today's usage",
    response_model=Organization,
    responses=errors("runway", 400, 401, 503),
    operation_id="get_organization",
)
def organization(key: CurrentKey, services: ServicesDep) -> JSONResponse:
    usage = services.usage.current(key)
    limits = usage.limits
    tier = {
        runway_name(model): {
            "maxConcurrentGenerations": limits.max_concurrent,
            "maxDailyGenerations": limits.per_day,
        }
        for model in MODELS
    }
    return JSONResponse(
        wire(
            Organization,
            {
                "creditBalance": 0,  # Reel charges nothing
                "tier": {"maxMonthlyCreditSpend": 0, "models": tier},
                "usage": {
                    "models": {
                        runway_name(model): {"dailyGenerations": usage.today.get(model, 0)}
                        for model in MODELS
                    }
                },
            },
        )
    )


@router.post(
    "/organization/usage",
    summary="The calling key's daily usage over a date range",
    response_model=UsageReport,
    responses=errors("runway", 400, 401, 503),
    operation_id="get_organization_usage",
    openapi_extra=json_body(UsageQuery, required=False, example={"startDate": "2026-12-01"}),
)
async def organization_usage(request: Request, key: CurrentKey, services: ServicesDep) -> JSONResponse:
    raw = await request.body()
    body: Any = await read_json(request) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    start = parse_day("startDate", body.get("startDate"))
    before = parse_day("beforeDate", body.get("beforeDate"))
    usage = await run_in_threadpool(services.usage.between, key, start, before)
    results: dict[str, list[dict[str, Any]]] = {}
    for entry in usage.days:
        results.setdefault(entry.day.isoformat(), []).append(
            # amount: credits, always 0 here; generations: Reel's extension, what was made.
            {"model": runway_name(entry.model), "amount": 0, "generations": entry.count}
        )
    return JSONResponse(
        wire(
            UsageReport,
            {
                "models": sorted({runway_name(entry.model) for entry in usage.days}),
                "results": [{"date": day, "usedCredits": used} for day, used in sorted(results.items())],
            },
        )
    )
