"""NSFW flag for generated videos: run NudeNet's detector on a few sampled frames.

NudeNet ships its ONNX model inside its wheel, so this works offline. The model is loaded on
first use (it costs a moment and some memory that a server with the checker switched off
should not pay) and shared by all threads: onnxruntime sessions are safe to run
concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reel.media.video import count_frames, read_frames

EXPOSED_CLASSES = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
"""Detector classes that make a frame NSFW. Covered or merely bare (belly, feet) ones do not."""


class NsfwClassifier:
    """Flags frames or videos showing exposed nudity, using NudeNet's bundled detector."""

    def __init__(self, *, threshold: float = 0.5, samples: int = 4) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.threshold = threshold
        self.samples = samples
        self._detector: Any = None
        self._lock = threading.Lock()

    def _get_detector(self) -> Any:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    # Imported here too: nudenet pulls in OpenCV, which is slow to import.
                    from nudenet import NudeDetector

                    self._detector = NudeDetector()
        return self._detector

    def is_nsfw(self, frames: Sequence[np.ndarray]) -> bool:
        """True if any HxWx3 uint8 RGB frame shows an exposed class scoring >= threshold."""
        if not frames:
            return False
        detector = self._get_detector()
        for frame in frames:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {frame.dtype} {frame.shape}")
            # NudeNet treats arrays like cv2.imread output, i.e. BGR.
            bgr = np.ascontiguousarray(frame[..., ::-1])
            for detection in detector.detect(bgr):
                if detection["class"] in EXPOSED_CLASSES and detection["score"] >= self.threshold:
                    return True
        return False

    def check_video(self, path: Path) -> bool:
        """Run :meth:`is_nsfw` on ``samples`` evenly spaced frames of the video at ``path``."""
        indices = sample_indices(count_frames(path), self.samples)
        return self.is_nsfw(read_frames(path, indices=indices))


def sample_indices(frame_count: int, samples: int) -> list[int]:
    """Up to ``samples`` distinct, evenly spaced frame indices, first and last included."""
    if frame_count <= 0:
        return []
    if samples == 1 or frame_count == 1:
        return [frame_count // 2]
    n = min(samples, frame_count)
    return sorted({round(i * (frame_count - 1) / (n - 1)) for i in range(n)})
