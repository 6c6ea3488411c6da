"""What ``/openapi.json`` declares besides the routes' own types: every error status an
operation can answer, in its dialect's error shape, and the request bodies the routes read
themselves (they parse JSON by hand to keep each dialect's error messages).

``errors("v3", 400, 404)`` is a ``responses=`` argument for a route; :func:`finish` fixes up
the generated document once (request-body schemas into ``components``, FastAPI's default 422
"validation error" answers removed: Reel answers a malformed request with a 400 in the
dialect's shape, never FastAPI's body).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from reel.api.schemas import ErrorEnvelope, RunwayError

Dialect = Literal["v3", "runway"]

WHY: dict[int, str] = {
    400: "Invalid request: a field is missing or wrong (the message names it)",
    401: "Missing or unknown API key (Authorization: Bearer KEY)",
    404: "Unknown or foreign id, or no such model",
    405: "Method not allowed on this path (Allow lists the methods it takes)",
    409: "The prediction's state does not allow this (e.g. it already ended)",
    413: "Body, upload, image or inlined output over a configured limit",
    416: "Range not satisfiable",
    422: "Idempotency-Key reused with a different request",
    429: "Over the key's rate or daily limit; nothing was created: retry after Retry-After seconds",
    503: "The database or the blob storage is unavailable; try again shortly",
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    405: {"Allow": {"description": "the methods this path takes", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
}
EXAMPLE_MESSAGES: dict[int, str] = {
    400: "prompt: is required and must be a non-empty string",
    401: "missing or invalid API key",
    404: "prediction 'abc' not found",
    405: "method GET not allowed on /api/v3/runwayml/gen4-turbo; use POST",
    409: "prediction already ended",
    413: "body: over the 33554432-byte limit",
    416: "range not satisfiable",
    422: "Idempotency-Key: already used with a different request",
    429: "rate limit reached; retry in 2 s",
    503: "database unavailable, try again shortly",
}


def errors(dialect: Dialect, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its dialect's error schema, plus 405."""
    model: type[BaseModel] = ErrorEnvelope if dialect == "v3" else RunwayError
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 405}):
        message = EXAMPLE_MESSAGES[status]
        example = (
            {"code": status, "message": message, "data": None} if dialect == "v3" else {"error": message}
        )
        entry: dict[str, Any] = {
            "model": model,
            "description": WHY[status],
            "content": {"application/json": {"example": example}},
        }
        if status in ERROR_HEADERS:
            entry["headers"] = ERROR_HEADERS[status]
        declared[status] = entry
    return declared


REQUEST_BODIES: dict[str, type[BaseModel]] = {}
"""Request-body models routes read themselves, by component name (filled by :func:`json_body`)."""


def json_body(
    model: type[BaseModel],
    *,
    required: bool = True,
    example: Any = None,
    examples: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the request body of a route that parses it itself."""
    register_body(model)
    return named_json_body(
        model.__name__, required=required, example=example, examples=examples, content_type=content_type
    )


def register_body(model: type[BaseModel]) -> None:
    """Put ``model``'s schema in the document's components under its class name."""
    REQUEST_BODIES[model.__name__] = model


def named_json_body(
    name: str,
    *,
    required: bool = True,
    example: Any = None,
    examples: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """:func:`json_body` for a model registered later (:func:`register_body`) under ``name``."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{name}"}}
    if example is not None:
        media["example"] = example
    if examples is not None:
        media["examples"] = examples
    return {"requestBody": {"required": required, "content": {content_type: media}}}


def finish(app: FastAPI) -> dict[str, Any]:
    """The document, built once: FastAPI's, plus the hand-parsed request bodies, minus its 422s."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in REQUEST_BODIES.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            default_422 = (
                responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            )
            if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def links(
    status: int, id_pointer: str, targets: dict[str, tuple[str, str]], content: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry linking an answer's id to the operations that take it (what a
    client, or a stateful contract test, does next): ``{link: (operation_id, parameter)}``;
    ``content`` adds to the answer's media types (examples)."""
    entry: dict[str, Any] = {
        "links": {
            name: {"operationId": operation, "parameters": {parameter: f"$response.body#{id_pointer}"}}
            for name, (operation, parameter) in targets.items()
        }
    }
    if content is not None:
        entry["content"] = content
    return {status: entry}
