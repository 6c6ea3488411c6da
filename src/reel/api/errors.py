"""The only place that maps errors to HTTP status codes.

Every error leaves in its API's shape: WaveSpeed's envelope, or Runway's ``{"error": ...}``
for requests under ``/v1``. A bug becomes a logged 500 with a generic message, never a
traceback in the response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reel.api.envelope import failure
from reel.api.method_not_allowed import allowed_methods, method_not_allowed
from reel.api.runway_view import is_runway_path, runway_error
from reel.errors import (
    Conflict,
    DatabaseUnavailable,
    IdempotencyMismatch,
    InvalidInput,
    LowDiskSpace,
    NotFound,
    RateLimited,
    ReelError,
    ServiceUnavailable,
    TooLarge,
    Unauthorized,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[ReelError], int]] = [
    (TooLarge, 413),
    # 422, not Stripe's 400/409: the Runway SDKs retry 409, and a retry cannot fix a reused key.
    (IdempotencyMismatch, 422),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (ServiceUnavailable, 503),
]


# What a caller reads when something Reel depends on is away. The error's own message carries
# internals (the database's host, port and user in the driver's text; the S3 endpoint, bucket
# and object key), and the caller may hold no key at all (an upload URL, a file URL): those go
# to the log.
DATABASE_UNAVAILABLE_MESSAGE = "database unavailable, try again shortly"
STORAGE_UNAVAILABLE_MESSAGE = "storage unavailable, try again shortly"
LOW_DISK_SPACE_MESSAGE = "the server is low on disk space and accepts no new work for now; try again later"
LOW_DISK_SPACE_RETRY_AFTER_S = 30


def status_for(exc: ReelError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def error_response(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the shape of the API the request was made to."""
    if is_runway_path(request.url.path):
        return runway_error(status, message, headers)
    return failure(status, message, headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ReelError)
    async def reel_error(request: Request, exc: ReelError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, RateLimited):
            # Both official SDKs retry a 429; runwayml waits for Retry-After (up to 60 s).
            headers = {"Retry-After": str(exc.retry_after_s)}
        message = exc.message
        if isinstance(exc, LowDiskSpace):
            # The message names paths and byte counts: those go to the log, as for the others.
            log.warning("%s %s answered 503: %s", request.method, request.url.path, exc.message)
            message = LOW_DISK_SPACE_MESSAGE
            headers = {"Retry-After": str(LOW_DISK_SPACE_RETRY_AFTER_S)}
        elif isinstance(exc, ServiceUnavailable):
            log.warning("%s %s answered 503: %s", request.method, request.url.path, exc.message)
            message = (
                DATABASE_UNAVAILABLE_MESSAGE
                if isinstance(exc, DatabaseUnavailable)
                else STORAGE_UNAVAILABLE_MESSAGE
            )
        return error_response(request, status, message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (
            exc.status_code == 405
            and exc.detail == "Method Not Allowed"
            and (methods := allowed_methods(request))
        ):
            # Starlette's own 405 names only the first matching route's methods.
            exc = method_not_allowed(request, methods)
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return error_response(request, exc.status_code, message, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal server error; the server log has the details")
