"""405 with ``Allow`` for a known path asked with a method it does not take.

"Known" means documented: the methods come from ``/openapi.json``'s paths, so the answer and
the document agree. Starlette answers 405 by itself when a path matches but no route takes the
method, though its ``Allow`` names only the first route's methods; and the ``/api/v3``
catch-alls (model ids contain slashes) match every path, so they ask here too.
"""

from __future__ import annotations

import re
from typing import NoReturn

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException

from reel.errors import NotFound

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _path_patterns(app: FastAPI) -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
    patterns = getattr(app.state, "path_patterns", None)
    if patterns is None:
        patterns = []
        for template, item in app.openapi().get("paths", {}).items():
            regex = "".join(
                "[^/]+" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
            methods = frozenset(m.upper() for m in item if m in HTTP_METHODS)
            patterns.append((re.compile(f"^{regex}$"), template.count("{"), methods))
        app.state.path_patterns = patterns
    return patterns


def allowed_methods(request: Request) -> list[str]:
    """The methods ``/openapi.json`` declares for this request's path, sorted; [] if none. As in
    routing, a literal path wins over a template: ``/api/v3/predictions/delete`` is not the
    prediction ``delete``."""
    matches = [
        (params, declared)
        for pattern, params, declared in _path_patterns(request.app)
        if pattern.match(request.url.path)
    ]
    if not matches:
        return []
    fewest = min(params for params, _ in matches)
    return sorted({method for params, declared in matches if params == fewest for method in declared})


def method_not_allowed(request: Request, methods: list[str]) -> HTTPException:
    allow = ", ".join(methods)
    return HTTPException(
        405,
        f"method {request.method} not allowed on {request.url.path}; use {allow}",
        headers={"Allow": allow},
    )


def no_route(request: Request, not_found: str) -> NoReturn:
    """405 naming the methods this path takes, or a 404 saying ``not_found``."""
    methods = allowed_methods(request)
    if methods:
        raise method_not_allowed(request, methods)
    raise NotFound(not_found)
