"""The CPU "sandbox" backend: a deterministic stand-in for a video model. Not AI generation.

It animates the input image with a camera move (a slow push-in plus a pan), so the whole
service path (queue, progress, cancel, encode, storage, webhooks) is real and testable on a
machine without a GPU. Every frame carries a small "SANDBOX" label so its output is never
mistaken for generated video, and the backend reports ``kind = "sandbox"``.

Without an input image (a text-to-video model) it animates a generated test card instead:
colour bars, a grid and a centre label reading "SANDBOX TEXT-TO-VIDEO" with the start of the
prompt, in colours derived from the prompt, so that a text-to-video client sees a moving,
unmistakably labelled placeholder.

The motion is fixed by the request: the input image is cover-fitted to the output size
(centre crop, never stretched), then zoomed from 1.0x to 1.15x while panning in a direction
and by an amount derived from ``seed`` (or from the prompt when there is no seed). The same
image, size, frame count and seed always give byte-identical frames.

Prompt directives
-----------------
Tags anywhere in the prompt, case-insensitive, let tests and demos exercise slow and failing
predictions:

``[sandbox:delay=SECONDS]``
    Take SECONDS longer in total (spread over the steps; capped at 600). Cancelling still
    takes effect within about 0.1 s. A value that is not a number of seconds fails the
    prediction.
``[sandbox:fail]``
    Fail part-way through (after some progress) with the error
    ``sandbox: failure requested by the prompt tag [sandbox:fail]``.
``[sandbox:fail=MESSAGE]``
    Fail part-way through with MESSAGE as the error.

Any other ``[sandbox:...]`` tag fails the prediction, so a typo is not silently ignored.
When a tag appears more than once, the last one wins.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reel.backends.base import (
    CancelCheck,
    FrameSink,
    GenerationCancelled,
    GenerationError,
    GenerationRequest,
    ProgressCallback,
)

READINESS_MESSAGE = "CPU sandbox: animates the input image, not AI generation"
DEFAULT_FAIL_MESSAGE = "sandbox: failure requested by the prompt tag [sandbox:fail]"
MAX_DELAY_S = 600.0
ZOOM_END = 1.15
FAIL_AFTER_STEPS = 2
"""A requested failure happens after this many steps, so it looks like a mid-run failure."""
CANCEL_POLL_S = 0.05
"""Sleep slice during a delay: keeps cancellation well inside its 0.1 s promise."""
LABEL_TEXT = "SANDBOX"
RENDER_AHEAD = 3
"""Frames rendered ahead of the encoder (about 2.7 MB each at 720p)."""

_DIRECTIVE = re.compile(
    r"\[\s*sandbox\s*:\s*(?P<name>[^\]=]*?)\s*(?:=\s*(?P<value>[^\]]*?)\s*)?\]",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SandboxDirectives:
    """What the prompt's ``[sandbox:...]`` tags ask for."""

    delay_s: float = 0.0
    fail: str | None = None
    """The error message to fail with, or None to succeed."""


def parse_directives(prompt: str) -> SandboxDirectives:
    """Read the ``[sandbox:...]`` tags in ``prompt`` (see the module docstring).

    Raises :class:`GenerationError` for a malformed or unknown tag.
    """
    delay_s = 0.0
    fail: str | None = None
    for match in _DIRECTIVE.finditer(prompt):
        name = match.group("name").lower()
        value = match.group("value")
        if name == "delay":
            delay_s = _parse_delay(match.group(0), value)
        elif name == "fail":
            fail = value or DEFAULT_FAIL_MESSAGE
        else:
            raise GenerationError(
                f"prompt: unknown sandbox tag {match.group(0)}; the sandbox understands "
                "[sandbox:delay=SECONDS], [sandbox:fail] and [sandbox:fail=MESSAGE]"
            )
    return SandboxDirectives(delay_s=delay_s, fail=fail)


def _parse_delay(tag: str, value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise GenerationError(f"prompt: {tag} needs a number of seconds")
    return min(seconds, MAX_DELAY_S)


class SandboxBackend:
    """Deterministic CPU backend that animates the input image (see the module docstring)."""

    kind = "sandbox"

    def __init__(self, *, step_count: int = 12) -> None:
        if step_count < 1:
            raise ValueError(f"step_count must be at least 1, got {step_count}")
        self.step_count = step_count

    def readiness(self) -> tuple[bool, str]:
        return True, READINESS_MESSAGE

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None:
        directives = parse_directives(request.prompt)
        width, height, total = request.width, request.height, request.num_frames
        camera = _Camera.for_request(request)
        source = request.image if request.image is not None else test_card(request.prompt, width, height)
        base = _cover_fit(source, width, height)
        label = _Label(width, height)

        def render(index: int) -> np.ndarray:
            frame = camera.render(base, index, total, width, height)
            label.stamp(frame)
            return frame

        steps = self.step_count
        # Frame i belongs to step s when bounds[s] <= i < bounds[s + 1]; with fewer frames
        # than steps some steps are empty, which still reads as "a denoising step".
        bounds = [round(s * total / steps) for s in range(steps + 1)]
        pause_s = directives.delay_s / steps
        fail_after = min(FAIL_AFTER_STEPS, steps)

        # Pillow's transform releases the GIL, so one helper thread renders the next frames
        # while this thread encodes: about a third faster on two cores.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-render")
        try:
            frames = _ordered_prefetch(pool, render, total)
            for step in range(steps):
                if is_cancelled():
                    raise GenerationCancelled()
                _sleep_unless_cancelled(pause_s, is_cancelled)
                for _ in range(bounds[step], bounds[step + 1]):
                    sink.write(next(frames))
                progress((step + 1) / steps)
                if directives.fail is not None and step + 1 == fail_after:
                    raise GenerationError(directives.fail)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ordered_prefetch(
    pool: ThreadPoolExecutor, render: Callable[[int], np.ndarray], total: int
) -> Iterator[np.ndarray]:
    """Yield ``render(0) .. render(total - 1)`` in order, keeping RENDER_AHEAD in flight."""
    pending: deque[Future[np.ndarray]] = deque()
    next_index = 0
    while next_index < total or pending:
        while next_index < total and len(pending) < RENDER_AHEAD:
            pending.append(pool.submit(render, next_index))
            next_index += 1
        yield pending.popleft().result()


def _sleep_unless_cancelled(seconds: float, is_cancelled: CancelCheck) -> None:
    """Sleep ``seconds`` in short slices, raising GenerationCancelled as soon as asked."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if is_cancelled():
            raise GenerationCancelled()
        time.sleep(min(CANCEL_POLL_S, remaining))


CARD_TITLE = "SANDBOX TEXT-TO-VIDEO"
_BARS = ((192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192))


def test_card(prompt: str, width: int, height: int) -> Image.Image:
    """The picture a text-to-video request animates: a test card labelled as the sandbox's.

    ZOOM_END times the output size, so the push-in stays sharp. The same prompt and size
    always give the same card (the tint comes from a hash of the prompt).
    """
    card_w, card_h = round(width * ZOOM_END), round(height * ZOOM_END)
    tint = hashlib.sha256(prompt.encode()).digest()[:3]
    card = Image.new("RGB", (card_w, card_h), tuple(40 + b // 4 for b in tint))
    draw = ImageDraw.Draw(card)
    bar_w = card_w / len(_BARS)
    for index, colour in enumerate(_BARS):
        draw.rectangle((round(index * bar_w), 0, round((index + 1) * bar_w), card_h // 3), fill=colour)
    step = max(8, min(card_w, card_h) // 12)
    for x in range(0, card_w, step):
        draw.line((x, card_h // 3, x, card_h), fill=(90, 90, 90))
    for y in range(card_h // 3, card_h, step):
        draw.line((0, y, card_w, y), fill=(90, 90, 90))
    font_px = max(10, min(card_w, card_h) // 14)
    title_font = ImageFont.load_default(size=font_px)
    text_font = ImageFont.load_default(size=max(8, font_px // 2))
    centre = (card_w / 2, card_h * 0.6)
    draw.text(
        centre,
        CARD_TITLE,
        fill=(255, 255, 255),
        font=title_font,
        anchor="md",
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    caption = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    draw.text(
        (centre[0], centre[1] + font_px // 2),
        caption,
        fill=(255, 255, 255),
        font=text_font,
        anchor="ma",
        stroke_width=1,
        stroke_fill=(0, 0, 0),
    )
    return card


def _cover_fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop ``image`` to the output aspect ratio and resize it for the camera move.

    The result is up to ZOOM_END times the output size (when the source has the pixels), so
    the end of the push-in is not a blurry upscale.
    """
    source = image if image.mode == "RGB" else image.convert("RGB")
    src_w, src_h = source.size
    target_aspect = width / height
    if src_w / src_h > target_aspect:
        crop_w, crop_h = src_h * target_aspect, float(src_h)
    else:
        crop_w, crop_h = float(src_w), src_w / target_aspect
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    scale = min(max(crop_w / width, 1.0), ZOOM_END)
    size = (round(width * scale), round(height * scale))
    # reducing_gap: a cheap box pre-shrink makes huge uploads fast at no visible cost.
    return source.resize(
        size,
        Image.Resampling.LANCZOS,
        box=(left, top, left + crop_w, top + crop_h),
        reducing_gap=3.0,
    )


@dataclass(frozen=True)
class _Camera:
    """A push-in from 1.0x to ZOOM_END with a pan towards (pan_x, pan_y), each in [-1, 1]."""

    pan_x: float
    pan_y: float

    @classmethod
    def for_request(cls, request: GenerationRequest) -> _Camera:
        # A cryptographic hash rather than hash() or random: stable across processes,
        # Python versions and platforms, which the determinism promise needs.
        key = f"seed:{request.seed}" if request.seed is not None else f"prompt:{request.prompt}"
        digest = hashlib.sha256(key.encode()).digest()
        angle = int.from_bytes(digest[0:4], "big") / 2**32 * 2 * math.pi
        # At least half the available room, so the pan is always noticeable.
        amount = 0.5 + 0.5 * int.from_bytes(digest[4:8], "big") / 2**32
        return cls(pan_x=amount * math.cos(angle), pan_y=amount * math.sin(angle))

    def render(self, base: Image.Image, index: int, total: int, width: int, height: int) -> np.ndarray:
        """Frame ``index`` of ``total`` as an HxWx3 uint8 RGB array."""
        t = index / (total - 1) if total > 1 else 0.0
        ease = t * t * (3 - 2 * t)  # smoothstep: the camera starts and stops gently
        zoom = 1.0 + (ZOOM_END - 1.0) * ease
        base_w, base_h = base.size
        view_w, view_h = base_w / zoom, base_h / zoom
        # The pan only uses the margin the zoom has opened up, so the view never leaves
        # the image and no border ever shows.
        centre_x = base_w / 2 + self.pan_x * (base_w - view_w) / 2
        centre_y = base_h / 2 + self.pan_y * (base_h - view_h) / 2
        left, top = centre_x - view_w / 2, centre_y - view_h / 2
        affine = (view_w / width, 0.0, left, 0.0, view_h / height, top)
        frame = base.transform(
            (width, height), Image.Transform.AFFINE, affine, resample=Image.Resampling.BILINEAR
        )
        return np.array(frame)


class _Label:
    """The translucent "SANDBOX" badge in the bottom-right corner, pre-rendered once."""

    def __init__(self, width: int, height: int) -> None:
        font_px = max(10, min(width, height) // 45)
        font = ImageFont.load_default(size=font_px)
        pad = max(3, font_px // 3)
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, top, right, bottom = probe.textbbox((0, 0), LABEL_TEXT, font=font)
        box_w = min(int(right - left) + 2 * pad, width)
        box_h = min(int(bottom - top) + 2 * pad, height)
        text = Image.new("L", (box_w, box_h), 0)
        ImageDraw.Draw(text).text((pad - left, pad - top), LABEL_TEXT, fill=255, font=font)
        text_alpha = np.asarray(text, dtype=np.float32)[..., None] / 255.0 * 0.85
        box_alpha = 0.45
        # Black box at box_alpha, then white text over it: out = pixel * keep + add.
        self._keep = (1.0 - box_alpha) * (1.0 - text_alpha)
        self._add = 255.0 * text_alpha + 0.5  # + 0.5 so the uint8 cast rounds
        margin = max(4, font_px // 2)
        self._y = max(0, height - box_h - margin)
        self._x = max(0, width - box_w - margin)

    def stamp(self, frame: np.ndarray) -> None:
        """Draw the badge onto ``frame`` in place."""
        h, w = self._keep.shape[:2]
        region = frame[self._y : self._y + h, self._x : self._x + w]
        region[...] = (region * self._keep + self._add).astype(np.uint8)
