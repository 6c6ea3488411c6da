"""405 with ``Allow`` for a known path asked with a method it does not take.

Starlette answers 405 by itself when no route matches a request fully, but the ``/api/v3``
catch-alls (model ids contain slashes) match every path, so they ask here: the methods the
other routes take for this path make a 405 with ``Allow``; none make a 404.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.routing import Route

from reel.errors import NotFound


def allowed_methods(request: Request) -> set[str]:
    """Methods the app's schema-visible routes take for this request's path."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.include_in_schema and route.path_regex.match(path):
            methods.update(route.methods or ())
    return methods


def no_route(request: Request, not_found: str) -> NoReturn:
    """405 naming the methods this path takes, or a 404 saying ``not_found``."""
    methods = allowed_methods(request)
    if methods:
        allow = ", ".join(sorted(methods))
        raise HTTPException(
            405,
            f"method {request.method} not allowed on {request.url.path}; use {allow}",
            headers={"Allow": allow},
        )
    raise NotFound(not_found)
