"""Decoding untrusted input images, and the output sizes the models render at.

Every image a caller sends (uploaded, fetched or base64 in JSON) passes through ``accept_image``
(``decode_image`` for a caller that wants the pixels): only JPEG, PNG and WebP are decoded,
sizes are checked from the header before any pixel is decoded (at most the configured pixel
count, at least ``MIN_IMAGE_SIDE`` on the shorter side), every pixel is decoded, and what is
kept opens as an RGB image with EXIF orientation applied.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Pillow plugin names of the formats we decode. Passing these to Image.open also keeps every
# other (rarely exercised, more attack-prone) decoder from ever looking at caller bytes.
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
_SEND_INSTEAD = "send JPEG, PNG or WebP"

# Magic numbers of formats people commonly send by mistake, only to name them in the refusal.
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_ISO_BMFF_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF"}

# Transparent pixels are composited onto white: the usual look of a cut-out on a page, and what
# a viewer of the source image most likely saw.
_BACKGROUND = (255, 255, 255)

MIN_IMAGE_SIDE = 64
"""Smallest shorter side, in px, of an input image. Every model cover-fits the image to hundreds
of px a side, so below this there is next to nothing to animate: a 1×1 px "image" is a client's
mistake (a tracking pixel, a placeholder), refused rather than turned into a video."""

# Output frame sizes (width, height) per aspect ratio; both sides are multiples of 16.
OUTPUT_SIZES: dict[str, tuple[int, int]] = {
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "4:3": (1104, 832),
    "3:4": (832, 1104),
    "1:1": (960, 960),
}
RUNWAY_ONLY_SIZES: dict[str, tuple[int, int]] = {"21:9": (1584, 672)}
"""Runway's ``1584:672``: offered by the ``/v1`` dialect only, so not a WaveSpeed ``aspect_ratio``."""
RENDER_SIZES: dict[str, tuple[int, int]] = {**OUTPUT_SIZES, **RUNWAY_ONLY_SIZES}
"""Every size a prediction may be rendered at, by ratio name."""
# The multiplication sign for size messages, escaped because ruff flags the literal as ambiguous.
_TIMES = "\u00d7"
_RATIOS: dict[str, float] = {"16:9": 16 / 9, "4:3": 4 / 3, "1:1": 1.0, "3:4": 3 / 4, "9:16": 9 / 16}


class ImageRejected(Exception):
    """The bytes are not an acceptable image. ``message`` says why, for the API caller to read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImageDecodeLimits:
    """Limits applied to every decoded input image (from settings)."""

    max_bytes: int
    max_pixels: int


def _format_pixels(pixels: int) -> str:
    if pixels >= 1_000_000:
        return f"{pixels / 1_000_000:g} MP"
    return f"{pixels} px"


def _sniff_unsupported(data: bytes) -> str | None:
    """Name a known non-allowed format from its magic number, or None."""
    for signature, name in _KNOWN_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        return _ISO_BMFF_BRANDS.get(data[8:12], "ISO media (HEIF/AVIF/MP4)")
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "SVG"
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode Pillow opens JPEG/PNG/WebP as to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit PNGs (I;16, I;16B, I) hold 0..65535; Pillow's own conversion clips that at 255,
        # turning most of the image white, so scale it down instead.
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or (values.size and values.max() > 255):
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    # L, 1, P, CMYK (Pillow already undoes Adobe's inverted CMYK JPEGs), YCbCr, LAB...
    return image.convert("RGB")


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_ORIENTATION = 0x0112
"""The EXIF tag of which way is up (1: as stored)."""


@dataclass(frozen=True)
class AcceptedImage:
    """An input image that passed :func:`accept_image`: its size (upright), and the bytes Reel
    keeps of it, in ``extension``'s format."""

    size: tuple[int, int]
    stored: bytes
    extension: str


def accept_image(data: bytes, *, max_bytes: int, max_pixels: int) -> AcceptedImage:
    """Check ``data`` as :func:`decode_image` does (every pixel decoded: a corrupt image is
    refused here, not by the worker), and say what to keep of it: the bytes as sent when they
    already open as that image (RGB, upright: the worker's plain ``convert("RGB")`` reads them
    the same), otherwise a PNG of the upright RGB image. Encoding an 800x600 PNG again took
    20 ms, most of a submission's CPU time (measured)."""
    with _header_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as opened, _decoding(max_pixels):
        opened.load()
        as_sent = opened.mode == "RGB" and opened.getexif().get(_ORIENTATION, 1) == 1
        if as_sent and opened.format in _EXTENSIONS:
            return AcceptedImage(opened.size, data, _EXTENSIONS[opened.format])
        image = _upright_rgb(opened)
    png = io.BytesIO()
    image.save(png, format="PNG")
    return AcceptedImage(image.size, png.getvalue(), "png")


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into a fully loaded RGB image, upright per its EXIF orientation.

    Raises ImageRejected for anything too large or too small, not JPEG/PNG/WebP, or not decodable.
    """
    with _header_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as opened, _decoding(max_pixels):
        opened.load()
        return _upright_rgb(opened)


def _header_checked(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """``data`` opened (its header only: no pixel decoded yet) once its format and size pass."""
    if len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data:
        raise ImageRejected("image is empty")
    try:
        opened = Image.open(io.BytesIO(data), formats=list(_ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own bomb guard (MAX_IMAGE_PIXELS, left untouched: it is process-global).
        raise ImageRejected(f"image is over the {_format_pixels(max_pixels)} limit ({exc})") from None
    except Exception:
        # Any failure to identify caller bytes is a rejection; which one does not matter.
        unsupported = _sniff_unsupported(data)
        if unsupported is not None:
            raise ImageRejected(f"unsupported format {unsupported}; {_SEND_INSTEAD}") from None
        raise ImageRejected(f"not a recognisable image; {_SEND_INSTEAD}") from None
    width, height = opened.size
    name = opened.format or "image"
    problem = None
    if width * height > max_pixels:
        problem = f"{name} is {width}{_TIMES}{height} px, over the {_format_pixels(max_pixels)} limit"
    elif width <= 0 or height <= 0:
        problem = f"{name} has no pixels ({width}{_TIMES}{height})"
    elif min(width, height) < MIN_IMAGE_SIDE:
        problem = (
            f"{name} is {width}{_TIMES}{height} px; the shorter side must be at least {MIN_IMAGE_SIDE} px"
        )
    if problem is not None:
        opened.close()
        raise ImageRejected(problem)
    return opened


@contextmanager
def _decoding(max_pixels: int) -> Iterator[None]:
    """Pixel decoding's failures, as the caller's :class:`ImageRejected`."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image is over the {_format_pixels(max_pixels)} limit ({exc})") from None
    except ImageRejected:
        raise
    except Exception as exc:
        # Decoders raise many types (OSError, SyntaxError, ValueError, EOFError...) on bad
        # input; all mean the same thing to the caller.
        raise ImageRejected(f"could not decode the image: {exc or type(exc).__name__}") from None


def _upright_rgb(opened: Image.Image) -> Image.Image:
    """A loaded image as an RGB image of its own, turned upright per its EXIF orientation."""
    result = _to_rgb(ImageOps.exif_transpose(opened))
    if result is opened:  # must not share state with the file object closed after this
        result = result.copy()
    result.load()
    return result


_WHITESPACE = re.compile(r"\s+")


def decode_base64_image(text: str) -> bytes:
    """Decode a ``data:`` URI or bare base64 into bytes (not yet checked to be an image).

    Tolerates whitespace and line breaks, the URL-safe alphabet and missing ``=`` padding, since
    clients produce all of these.
    """
    payload = text.strip()
    if payload[:5].lower() == "data:":
        header, comma, rest = payload.partition(",")
        if not comma:
            raise ImageRejected("data URI has no ',' before its data")
        if ";base64" not in header.lower():
            raise ImageRejected("data URI must be base64-encoded (data:image/png;base64,...)")
        payload = rest
    if not payload:
        raise ImageRejected("image is empty")
    try:
        # Most clients send plain padded base64: decode it as it is, without the clean-up
        # below (a regex over every character: most of this function's time, measured).
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        pass
    payload = _WHITESPACE.sub("", payload).rstrip("=")
    payload = payload.replace("-", "+").replace("_", "/")
    if not payload:
        raise ImageRejected("image is empty")
    if len(payload) % 4 == 1:
        raise ImageRejected("image is not valid base64 (its length is impossible)")
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("image is not valid base64") from None


def closest_aspect_ratio(width: int, height: int) -> str:
    """The OUTPUT_SIZES ratio nearest to width:height, compared on a log scale.

    Log scale so that a ratio and its inverse are equally far from 1:1.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}{_TIMES}{height}")
    target = math.log(width / height)
    return min(_RATIOS, key=lambda name: abs(target - math.log(_RATIOS[name])))
