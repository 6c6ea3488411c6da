"""WaveSpeed's response envelope: ``{"code", "message", "data"}`` on every reply."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def success(data: Any) -> JSONResponse:
    return JSONResponse({"code": 200, "message": "success", "data": data})


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"code": status, "message": message, "data": None}, status_code=status, headers=headers
    )
