"""Dependency wiring, so route signatures read like sentences.

The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
a worker thread, and a thread hop per dependency was most of a result poll's cost. The key
check reads the database only when its cache cannot answer, and then in a worker thread.
:func:`quick` is where the routes polled most run their database read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from reel.predictions.keys import KeyService, Principal
from reel.predictions.readiness import ReadinessService
from reel.predictions.views import PredictionRow, PredictionViews
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


class KeyVerifications:
    """Requests that present the same key while it is not cached share one database read
    (in a worker thread) instead of one read each.

    Under load a key falls out of the cache with hundreds of its requests in flight; each
    reading it for itself queued them all behind the API's few threads (a poll run's p99 went
    from 0.2 s to 2 s, measured). One of the app's per event loop."""

    def __init__(self, keys: KeyService) -> None:
        self._keys = keys
        self._running: dict[str, asyncio.Future[Principal]] = {}

    async def verify(self, presented: str | None) -> Principal:
        if not presented:
            return self._keys.verify(presented)  # raises at once: nothing to read
        running = self._running.get(presented)
        if running is None:
            running = asyncio.ensure_future(run_in_threadpool(self._keys.verify, presented))
            self._running[presented] = running
            running.add_done_callback(lambda _: self._running.pop(presented, None))
        # Shielded: a client that hangs up must not cancel the read the others wait for.
        return await asyncio.shield(running)


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
    verifications: KeyVerifications = request.app.state.key_verifications
    return await verifications.verify(presented)


CurrentKey = Annotated[Principal, Depends(current_key)]

T = TypeVar("T")


async def quick(services: Services, read: Callable[[], T]) -> T:
    """``read()`` (lookups by primary key and CPU work, no blob I/O) where it costs least: on
    the event loop when the database is SQLite, in a worker thread on PostgreSQL.

    A SQLite read is a local file in WAL mode, which never waits for a writer: a lookup takes
    tens of microseconds, and the hop to a worker thread and back cost more than the whole
    read (a result poll took 386 us in process inline, 610 us through a thread, measured).
    A PostgreSQL read is a network round trip, and a database outage can hold one for
    seconds: the event loop, which serves every other request, must not wait for that."""
    if services.local_database:
        return read()
    return await run_in_threadpool(read)


async def rendered(
    services: Services, views: PredictionViews, row: PredictionRow, render: Callable[[], T]
) -> T:
    """``render()`` of ``row``: :func:`quick` unless rendering it calls the blob store (a base64
    video to read, URLs to sign), which always runs in a worker thread."""
    if views.reads_blobs(row):
        return await run_in_threadpool(render)
    return await quick(services, render)
