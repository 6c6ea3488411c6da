"""A small synchronous client for the WaveSpeed v3 API as Reel serves it (httpx).

Only public endpoints, with the caller's key, the same calls the official SDKs make. Every
failure is a :class:`ClientError` carrying the server's own message.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import httpx

TERMINAL = frozenset({"completed", "failed", "cancelled", "deleted", "timeout"})
"""Statuses after which a prediction never changes (the SDKs stop polling on these)."""

DEFAULT_TIMEOUT_S = 30.0


class ClientError(Exception):
    """A request failed. ``status`` is the HTTP status, or 0 when the server was not reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _envelope_data(response: httpx.Response) -> Any:
    """``data`` from a ``{"code", "message", "data"}`` reply, or the error it reports."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ClientError(f"HTTP {response.status_code} from {response.request.url}", response.status_code)
    if response.status_code != 200 or payload.get("code") != 200:
        message = str(payload.get("message") or f"HTTP {response.status_code}")
        raise ClientError(message, response.status_code)
    return payload.get("data")


class ReelClient:
    """One server, one key.

    ``server`` is the base URL (``http://127.0.0.1:8000``); ``transport`` lets tests or callers
    plug in another httpx transport.
    """

    def __init__(
        self,
        server: str,
        key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {key}", "X-Client-Name": "reel-cli"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> ReelClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ClientError(f"could not reach {self.server}: {exc}") from exc
        return _envelope_data(response)

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "/api/v3/models")
        return data

    def upload(self, path: Path) -> str:
        """Upload a local file with the two-step upload; returns its ``download_url``."""
        size = path.stat().st_size
        content_type = mimetypes.guess_type(path.name)[0]
        ticket = self._call(
            "POST",
            "/api/v3/media/uploads",
            {"filename": path.name, "size": size, "content_type": content_type},
        )
        upload = ticket["upload"]
        # The upload URL carries its own one-time credential: no Authorization header, as the SDKs do.
        try:
            with path.open("rb") as body:
                response = httpx.request(
                    upload.get("method", "PUT"),
                    upload["url"],
                    content=body,
                    headers={**upload.get("headers", {}), "Content-Length": str(size)},
                    timeout=self._http.timeout,
                )
        except httpx.HTTPError as exc:
            raise ClientError(f"upload to {upload['url']} failed: {exc}") from exc
        if not response.is_success:
            _envelope_data(response)  # raises with the server's message
            raise ClientError(f"upload failed with HTTP {response.status_code}", response.status_code)
        return str(ticket["download_url"])

    def submit(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = self._call("POST", f"/api/v3/{model}", payload)
        return data

    def result(self, prediction_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", f"/api/v3/predictions/{prediction_id}/result")
        return data

    def cancel(self, prediction_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call("POST", f"/api/v3/predictions/{prediction_id}/cancel", {})
        return data

    def history(
        self, *, page: int = 1, page_size: int = 20, model: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"page": page, "page_size": page_size}
        if model:
            body["model"] = model
        if status:
            body["status"] = status
        data: dict[str, Any] = self._call("POST", "/api/v3/predictions", body)
        return data

    def download(self, url: str, dest: Path) -> Path:
        """Stream ``url`` to ``dest`` (written to a temporary name, renamed when complete)."""
        partial = dest.with_name(f".{dest.name}.part")
        try:
            # Output URLs are unguessable file URLs: they need no key, like a CDN's.
            with httpx.stream("GET", url, timeout=self._http.timeout, follow_redirects=True) as response:
                if not response.is_success:
                    response.read()
                    _envelope_data(response)
                    raise ClientError(f"download failed with HTTP {response.status_code}")
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            partial.replace(dest)
        except httpx.HTTPError as exc:
            raise ClientError(f"download of {url} failed: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return dest
