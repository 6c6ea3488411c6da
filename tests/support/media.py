"""Images for requests and checks on the videos that come back."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
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


ENCODER_NOISE = 3.0
"""The largest mean difference, in levels of 255, between two decoded encodings of the same frames.

This libx264 is not bit-exact run to run: its AVX-512 code, and its C code with frame threads,
now and then encode the same frames a little differently (the macroblock-tree rate control;
``mbtree=0`` or x264 without AVX-512 made 30 encodes out of 30 identical). Measured on the
noise-like frames of the tiny models at 960x960: up to 1.3 levels, where two seeds' frames
differ by 14.7. The product keeps both: ``mbtree=0`` made clips 1.8x (smooth) to 5x (noisy)
larger, and naming CPU features to x264 by hand risks an illegal instruction on another CPU.
"""


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    """Mean absolute difference of two equally shaped uint8 arrays (decoded videos)."""
    assert first.shape == second.shape
    return float(np.abs(first.astype(np.int16) - second.astype(np.int16)).mean())
