"""Refuse request bodies over a size cap before they are read into memory."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reel.api.runway_view import is_runway_path


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI so streaming bodies (chunked uploads) are counted as they arrive.

    Args:
        app: the wrapped application.
        max_bytes: the largest body accepted on any route; routes apply tighter limits.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, send)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"body: larger than the {self.max_bytes}-byte limit"
        # Each dialect's own error shape (see reel.api.errors); this reply is built before routing.
        if is_runway_path(scope.get("path", "")):
            payload: dict[str, object] = {"error": message}
        else:
            payload = {"code": 413, "message": message, "data": None}
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
