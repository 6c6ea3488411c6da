"""Images for requests and checks on the videos that come back."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from reel.media.video import probe_video


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


def check_video(url: str, tmp_path: Path, size: tuple[int, int], seconds: int) -> None:
    """The MP4 at ``url`` is an H.264 video of ``size`` lasting ``seconds`` at 24 fps."""
    path = tmp_path / "out.mp4"
    path.write_bytes(httpx.get(url, timeout=30).raise_for_status().content)
    info = probe_video(path)
    assert (info.width, info.height) == size
    assert info.codec == "h264"
    assert info.fps == pytest.approx(24)
    assert info.frame_count == seconds * 24
