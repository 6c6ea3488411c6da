"""The application factory: routes, error mapping and limits, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from anyio import to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from reel import __version__
from reel.api.body_limit import BodyLimitMiddleware
from reel.api.deps import KeyVerifications
from reel.api.errors import install_error_handlers
from reel.api.http_metrics import HttpMetricsMiddleware
from reel.api.openapi import finish, register_body
from reel.api.routes import api_docs, media, predictions, runway, runway_organization, system, web
from reel.api.submit_schemas import runway_create_model, runway_text_model
from reel.catalog.registry import MODELS
from reel.predictions.fleet_metrics import MetricsService
from reel.wiring import Services

# JSON envelopes with a base64 image are bigger than the image itself (4/3) plus fields.
JSON_OVERHEAD = 1.4


class Companion(Protocol):
    """Something that lives as long as the app, e.g. the supervised worker process."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def create_app(services: Services, *, companion: Companion | None = None) -> FastAPI:
    """The API. ``companion`` (the worker supervisor) is started and stopped with the app, so a
    SIGTERM to the server hands the worker's prediction back before the process exits."""
    settings = services.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking work (database reads, blob I/O) runs in this many threads; more threads on
        # a few cores mostly fight over the GIL (anyio's default is 40).
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        if companion is not None:
            companion.start()
        try:
            yield
        finally:
            if companion is not None:
                await run_in_threadpool(companion.stop)

    app = FastAPI(
        title="Reel",
        version=__version__,
        description="Self-hosted image-to-video generation speaking WaveSpeedAI's v3 and Runway's /v1 APIs.",
        lifespan=lifespan,
        # /docs is Reel's own page (assets in the package, no CDN); ReDoc is not served.
        docs_url=None,
        # Operation ids are the route functions' names: what a generated client's methods are called.
        generate_unique_id_function=lambda route: route.name,
        redoc_url=None,
    )
    app.state.services = services
    app.state.key_verifications = KeyVerifications(services.keys)
    app.state.expect_worker = companion is not None
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=max(settings.max_body_bytes, int(settings.max_upload_bytes * JSON_OVERHEAD) + 65536),
    )
    # Added last, so outermost: the time it records includes the body limit's work.
    app.add_middleware(HttpMetricsMiddleware)
    app.state.metrics = MetricsService(services.sessions)
    app.include_router(system.router)
    app.include_router(media.router)
    app.include_router(predictions.router)
    app.include_router(web.router)
    app.include_router(runway.router)
    app.include_router(runway.upload_router)
    app.include_router(runway_organization.router)
    app.include_router(api_docs.router)
    models = list(MODELS.values())
    register_body(runway_create_model(models))
    register_body(runway_text_model(models))
    app.include_router(predictions.model_router(models))
    # Last: model ids contain slashes, so these catch every other path under /api/v3/...
    app.include_router(predictions.submit_router)
    app.openapi = lambda: finish(app)  # type: ignore[method-assign]
    return app
