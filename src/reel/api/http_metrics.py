"""Times every HTTP request into ``reel_http_request_duration_seconds{method,route,status}``.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (which adds a task and a
stream per request): it is on the hot path of result polling. The ``route`` label is the
matched route's template (``/api/v3/predictions/{prediction_id}/result``), never the raw path,
so no id reaches a label; a path no route matches is ``unmatched``, and a method outside the
standard ones is ``other``, so a client cannot grow the label sets.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reel.metrics import HTTP_DURATION

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, route, status) -> the histogram's child: .labels() takes a lock and
        # validates its arguments on every call; this dict lookup does not.
        self._children: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        # FastAPI's router puts the matched route in the scope (also for a 405 on its path).
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HTTP_DURATION.labels(method, route, str(status))
        child.observe(seconds)
