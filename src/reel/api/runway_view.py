"""Reel's predictions in Runway's vocabulary: task ids, the task object, failure codes and
Runway's error shape ``{"error": "..."}``.

The official SDKs pick a task's type by its ``status`` and require each type's fields:
PENDING and THROTTLED need ``estimatedCost``; RUNNING also ``progress``; SUCCEEDED needs
``cost`` and ``output``; FAILED ``cost``, ``failure`` and ``failureCode``; CANCELLED ``cost``.
Reel charges nothing, so every cost is 0 credits.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import JSONResponse

from reel.lifecycle.clock import iso_ms
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.predictions.views import PredictionRow, Waiting, output_urls
from reel.storage.base import BlobStore

PREFIX = "/v1"
RUNWAY_VERSION = "2024-11-06"
"""The only ``X-Runway-Version`` this server speaks."""

TASK_STATUS: dict[str, str] = {
    Status.CREATED: "PENDING",
    Status.PROCESSING: "RUNNING",
    Status.COMPLETED: "SUCCEEDED",
    Status.FAILED: "FAILED",
    Status.CANCELLED: "CANCELLED",
}

# Runway's task-failure codes (docs.dev.runwayml.com/errors/task-failures): INTERNAL may be
# retried; SAFETY.* should not be. A failure with no recorded code is INTERNAL.
FAILURE_CODES: dict[str, str] = {
    FailureCode.GENERATION: "INTERNAL",
    FailureCode.INTERNAL: "INTERNAL",
    FailureCode.UNSAFE_OUTPUT: "SAFETY.OUTPUT.VIDEO",
}
DEFAULT_FAILURE_CODE = "INTERNAL"


def _credits() -> dict[str, int]:
    return {"credits": 0}


def is_runway_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def task_id(prediction_id: str) -> str:
    """A prediction id (32 hex digits) in Runway's UUID spelling."""
    try:
        return str(uuid.UUID(hex=prediction_id))
    except ValueError:
        return prediction_id


def prediction_id(task_id: str) -> str:
    """The prediction id a task id names; an id that is no UUID is returned as is (to 404)."""
    try:
        return uuid.UUID(task_id).hex
    except ValueError:
        return task_id


def created_task(row: PredictionRow) -> dict[str, Any]:
    """The answer to ``POST /v1/image_to_video``."""
    return {"id": task_id(row.id), "estimatedCost": _credits()}


def failure_code(row: PredictionRow) -> str:
    return FAILURE_CODES.get(row.failure_code or "", DEFAULT_FAILURE_CODE)


def task_object(
    row: PredictionRow, public_base: str, blobs: BlobStore, waiting: Waiting | None = None
) -> dict[str, Any]:
    """``GET /v1/tasks/{id}``: the fields Runway's task type for this status requires. A
    waiting task whose key is at its ``max_concurrent`` (``waiting``) is THROTTLED, as on
    Runway."""
    status = TASK_STATUS.get(row.status, "FAILED")
    if status == "PENDING" and waiting is not None and waiting.throttled:
        status = "THROTTLED"
    task: dict[str, Any] = {"id": task_id(row.id), "status": status, "createdAt": iso_ms(row.created_at)}
    if status in ("PENDING", "THROTTLED", "RUNNING"):
        task["estimatedCost"] = _credits()
    else:
        task["cost"] = _credits()
    if status == "RUNNING":
        task["progress"] = round(row.progress, 4)
    elif status == "SUCCEEDED":
        task["output"] = output_urls(row, public_base, blobs)
    elif status == "FAILED":
        task["failure"] = row.error or "the task failed"
        task["failureCode"] = failure_code(row)
    return task


def runway_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Runway's error body: ``{"error": message}`` with the status in the HTTP status line."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)
