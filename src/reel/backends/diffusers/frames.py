"""Fitting images and frames between the API's sizes and a model's generation size.

Both directions are a *cover fit*: one uniform scale so the target is fully covered, then a
centre crop. Nothing is ever stretched; at most a thin band (a few percent) is cropped where a
model's size grid does not hit the API's aspect ratio exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CHUNK_FRAMES = 8
"""Frames resized at once: bounds the memory of the float32 copy (about 90 MiB at 720p)."""


def cover_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    """The centred (left, top, right, bottom) box of the source that has the target's aspect ratio."""
    target = dst_w / dst_h
    if src_w / src_h > target:
        crop_w, crop_h = src_h * target, float(src_h)
    else:
        crop_w, crop_h = float(src_w), src_w / target
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """The input image cover-fitted to the generation size (the first frame the model sees)."""
    source = image if image.mode == "RGB" else image.convert("RGB")
    box = cover_box(source.width, source.height, width, height)
    return source.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def fit_frames(frames: torch.Tensor, width: int, height: int) -> Iterator[np.ndarray]:
    """Frames (F, 3, H, W) with values in 0..1, cover-fitted to width x height, as HxWx3 uint8 RGB.

    Resizing runs where the frames are (the GPU, usually), a chunk at a time.
    """
    _, _, src_h, src_w = frames.shape
    scale = max(width / src_w, height / src_h)
    scaled_w, scaled_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    for chunk in frames.split(CHUNK_FRAMES):
        x = chunk.float()
        if (scaled_w, scaled_h) != (src_w, src_h):
            x = F.interpolate(
                x, size=(scaled_h, scaled_w), mode="bicubic", antialias=True, align_corners=False
            )
        x = x[:, :, top : top + height, left : left + width]
        pixels = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from pixels


def to_image(frame: torch.Tensor) -> Image.Image:
    """One frame (3, H, W) in 0..1 as a PIL image (the next segment's first frame)."""
    pixels = (frame.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
