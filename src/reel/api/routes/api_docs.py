"""``/docs``: the API reference, Swagger UI over this server's ``/openapi.json``.

Swagger UI's files come from the ``swagger-ui-py`` wheel (a pinned dependency; nothing is
fetched from a CDN) and are served from memory under a fixed allow-list of names, with the
playground's strict Content-Security-Policy: the page starts Swagger UI from a file of our
own (``web/api-docs.js``), not from an inline script. Swagger UI sets styles through the DOM,
which ``style-src 'self'`` allows, so the policy is the playground's, unrelaxed.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from reel.api.deps import SettingsDep
from reel.api.routes.web import Asset, serve_asset

router = APIRouter(tags=["docs"], include_in_schema=False)

SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Reel API reference</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/static/api-docs.js"></script>
</body>
</html>
"""


def _swagger_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install -e . installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def load_docs_assets() -> dict[str, Asset]:
    assets = {
        name: Asset.of((_swagger_dir() / name).read_bytes(), kind) for name, kind in SWAGGER_FILES.items()
    }
    assets[""] = Asset.of(PAGE, "text/html; charset=utf-8")
    return assets


def _serve(name: str, request: Request, public_base: str) -> Response:
    # The playground's policy: the browser test fails on any violation it reports.
    return serve_asset(load_docs_assets().get(name), f"/docs/{name}", request, public_base)


@router.get("/docs", summary="The API reference (Swagger UI)")
def docs_page(request: Request, settings: SettingsDep) -> Response:
    return _serve("", request, settings.public_base)


@router.get("/docs/{name}", summary="Swagger UI's script and styles")
def docs_asset(name: str, request: Request, settings: SettingsDep) -> Response:
    return _serve(name, request, settings.public_base)
