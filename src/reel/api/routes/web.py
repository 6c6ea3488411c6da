"""The web playground: ``/`` and its static assets, shipped in the package (no build step).

The page is plain HTML, CSS and one ES module. It talks only to the public API, with the key
the user pastes, so it gets no privileges of its own. Assets are read once from the installed
package and served from memory under a fixed allow-list of names: no path ever reaches the
filesystem. Every answer carries a strict Content-Security-Policy (scripts from this origin
only, no inline script or style) and an ETag with ``no-cache``, so browsers revalidate
cheaply and never run a stale script after an upgrade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response

from reel.api.deps import SettingsDep
from reel.errors import NotFound

router = APIRouter(tags=["playground"], include_in_schema=False)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
INDEX = "index.html"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


@cache
def load_assets() -> dict[str, Asset]:
    """Every servable file of the ``reel/web`` package directory, by file name."""
    assets = {}
    for entry in resources.files("reel").joinpath("web").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            assets[entry.name] = Asset.of(entry.read_bytes(), CONTENT_TYPES[suffix])
    return assets


def content_security_policy(public_base: str) -> str:
    """Scripts and styles from this origin only. Videos, uploads and API calls may also go to
    the configured public URL (the API returns absolute URLs on it, which can differ from the
    address the browser used). Pasted image URLs are previewed, so images may come from any
    http(s) origin; they are only ever displayed."""
    parts = urlsplit(public_base)
    public_origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob: http: https:",
            f"media-src 'self' blob: {public_origin}".rstrip(),
            f"connect-src 'self' {public_origin}".rstrip(),
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def serve_asset(asset: Asset | None, path: str, request: Request, public_base: str) -> Response:
    """``asset`` as the pages serve their files: revalidated by ETag, under the Content-Security
    Policy; a 404 naming ``path`` when there is no such asset."""
    if asset is None:
        raise NotFound(f"no such file: {path}")
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": content_security_policy(public_base),
    }
    if asset.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, media_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        response.headers["Content-Length"] = str(len(asset.body))
    return response


def _serve(name: str, request: Request, public_base: str) -> Response:
    return serve_asset(load_assets().get(name), f"/static/{name}", request, public_base)


@router.api_route("/", methods=["GET", "HEAD"], summary="The web playground")
def playground(request: Request, settings: SettingsDep) -> Response:
    return _serve(INDEX, request, settings.public_base)


@router.api_route("/static/{name}", methods=["GET", "HEAD"], summary="The playground's scripts and styles")
def static_asset(name: str, request: Request, settings: SettingsDep) -> Response:
    return _serve(name, request, settings.public_base)
