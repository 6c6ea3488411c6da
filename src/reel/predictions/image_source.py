"""Turn a submit body's ``image`` string into a decoded, checked picture.

Five spellings are accepted: this server's own ``download_url`` (read from storage, no HTTP
round trip), a ``runway://`` URI from a Runway-dialect upload (read from storage), any other
http(s) URL (through the SSRF-safe fetcher), a ``data:`` URI, or bare base64. Uploads are
only readable by the key that made them. ``field`` names the request field in errors
(``image`` in WaveSpeed's dialect, ``promptImage`` in Runway's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reel.errors import InvalidInput
from reel.media.fetch import BlockedAddress, FetchError, fetch_url_safely
from reel.media.images import AcceptedImage, ImageRejected, accept_image, decode_base64_image
from reel.predictions.files import FileService
from reel.predictions.keys import Principal

_OWN_FILE_PATH = re.compile(r"^/files/([A-Za-z0-9_-]{16,64})/[^/]+$")
RUNWAY_URI_PREFIX = "runway://uploads/"
_RUNWAY_URI = re.compile(r"^runway://uploads/([A-Za-z0-9_-]{16,64})$")


def runway_uri(file_id: str) -> str:
    """The ``runway://`` URI naming an upload, accepted as ``promptImage`` by its owner."""
    return f"{RUNWAY_URI_PREFIX}{file_id}"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    fetch_timeout_s: float
    allow_private_urls: bool


class ImageSource:
    def __init__(self, files: FileService, public_base: str, limits: ImageLimits) -> None:
        self._files = files
        self._public_base = public_base.rstrip("/")
        self._limits = limits

    def load(self, owner: Principal, image: str, *, field: str = "image") -> AcceptedImage:
        try:
            return accept_image(
                self._bytes(owner, image, field),
                max_bytes=self._limits.max_bytes,
                max_pixels=self._limits.max_pixels,
            )
        except ImageRejected as exc:
            raise InvalidInput(field, exc.message) from exc

    def _bytes(self, owner: Principal, image: str, field: str) -> bytes:
        own_file = self._own_file_id(image)
        if own_file is not None:
            return self._files.read_owned_upload(owner, own_file, field=field)
        if image.startswith("runway://"):
            match = _RUNWAY_URI.match(image)
            if match is None:
                raise InvalidInput(field, f"not a runway:// URI this server made ({RUNWAY_URI_PREFIX}ID)")
            return self._files.read_owned_upload(owner, match.group(1), field=field)
        if image.startswith(("http://", "https://")):
            try:
                return fetch_url_safely(
                    image,
                    max_bytes=self._limits.max_bytes,
                    timeout_s=self._limits.fetch_timeout_s,
                    allow_private=self._limits.allow_private_urls,
                ).content
            except BlockedAddress as exc:
                raise InvalidInput(field, f"URL refused: {exc.message}") from exc
            except FetchError as exc:
                raise InvalidInput(field, f"could not fetch the URL: {exc.message}") from exc
        if re.match(r"^[a-z][a-z0-9+.-]*://", image, re.IGNORECASE):
            raise InvalidInput(field, "only http and https URLs are accepted")
        try:
            return decode_base64_image(image)
        except ImageRejected as exc:
            raise InvalidInput(field, exc.message) from exc

    def _own_file_id(self, image: str) -> str | None:
        if not image.startswith(self._public_base + "/"):
            return None
        match = _OWN_FILE_PATH.match(image[len(self._public_base) :].split("?", 1)[0])
        return match.group(1) if match else None
