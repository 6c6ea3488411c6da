"""The application factory: routes, error mapping and limits, nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from reel import __version__
from reel.api.body_limit import BodyLimitMiddleware
from reel.api.errors import install_error_handlers
from reel.api.routes import media, predictions, system
from reel.wiring import Services

# JSON envelopes with a base64 image are bigger than the image itself (4/3) plus fields.
JSON_OVERHEAD = 1.4


def create_app(services: Services, *, expect_worker: bool = True) -> FastAPI:
    settings = services.settings
    app = FastAPI(
        title="Reel",
        version=__version__,
        description="Self-hosted image-to-video generation speaking WaveSpeedAI's v3 API.",
    )
    app.state.services = services
    app.state.expect_worker = expect_worker
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=max(settings.max_body_bytes, int(settings.max_upload_bytes * JSON_OVERHEAD) + 65536),
    )
    app.include_router(system.router)
    app.include_router(media.router)
    app.include_router(predictions.router)
    # Last: model ids contain slashes, so the submit route catches every other POST /api/v3/...
    app.include_router(predictions.submit_router)
    return app
