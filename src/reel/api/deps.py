"""Dependency wiring, so route signatures read like sentences.

The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
a worker thread, and a thread hop per dependency was most of a result poll's cost. The key
check reads the database only when its cache cannot answer, and then in a worker thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from reel.predictions.keys import Principal
from reel.predictions.readiness import ReadinessService
from reel.predictions.views import PredictionViews
from reel.settings import Settings
from reel.wiring import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_readiness(services: ServicesDep) -> ReadinessService:
    return services.readiness


ReadinessDep = Annotated[ReadinessService, Depends(get_readiness)]


async def get_views(services: ServicesDep) -> PredictionViews:
    settings = services.settings
    return PredictionViews(
        settings.public_base, services.blobs, settings.max_inline_bytes, services.predictions.waiting
    )


ViewsDep = Annotated[PredictionViews, Depends(get_views)]
"""Rendering may read whole blobs: from async code, call it in a worker thread."""


BEARER = HTTPBearer(auto_error=False, scheme_name="apiKey", description="an API key from `reel keys create`")
"""Declares the key in /openapi.json; the header is read below, so a 401 keeps the dialect's shape."""


async def current_key(
    request: Request,
    services: ServicesDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    cached = services.keys.cached(presented)
    if cached is not None:
        return cached
    return await run_in_threadpool(services.keys.authenticate, presented)


CurrentKey = Annotated[Principal, Depends(current_key)]
