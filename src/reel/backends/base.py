"""The one interface every model backend implements.

A backend receives a :class:`GenerationRequest`, writes RGB frames into a :class:`FrameSink`
(the video encoder), reports progress through a callback and polls a cancel check between
steps. It raises :class:`GenerationCancelled` when the check says stop, and
:class:`GenerationError` for failures the user should see (any other exception is treated
as an internal error by the worker).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

ProgressCallback = Callable[[float], None]
"""Called with the fraction done, 0..1, as generation advances."""

CancelCheck = Callable[[], bool]
"""Returns True when the prediction was cancelled and generation should stop."""


@dataclass(frozen=True)
class GenerationRequest:
    prediction_id: str
    model: str
    prompt: str
    image: Image.Image | None
    """The input image: RGB, EXIF orientation already applied; None for text-to-video."""
    width: int
    """Output width in pixels (from the contract's aspect-ratio table)."""
    height: int
    fps: int
    num_frames: int
    seed: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    """Model-specific parameters that passed validation (negative_prompt, steps, ...; LoRA
    adapters as ``loras`` / ``high_noise_loras`` / ``low_noise_loras``: lists of {path, scale})."""


class FrameSink(Protocol):
    """Where a backend puts its frames: HxWx3 uint8 RGB arrays of the request's size."""

    def write(self, frame: np.ndarray) -> None: ...


class GenerationCancelled(Exception):
    """The cancel check returned True; the prediction was cancelled or deleted."""


class GenerationError(Exception):
    """A failure to report to the user as the prediction's error."""


class Backend(Protocol):
    kind: str
    """Short name shown in logs and the model listing, e.g. ``sandbox`` or ``diffusers``."""

    def readiness(self) -> tuple[bool, str]:
        """Whether this backend can generate now, and a human reason when it cannot."""
        ...

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None: ...
