"""Images for requests and checks on the videos that come back."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png_bytes(width: int = 640, height: int = 360, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    # A gradient so the camera move is visible in the output.
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            image.putpixel((x, y), (x * 255 // width, y * 255 // height, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(*args: int) -> str:
    return base64.b64encode(png_bytes(*args)).decode()


def png_data_uri(*args: int) -> str:
    return "data:image/png;base64," + png_base64(*args)
