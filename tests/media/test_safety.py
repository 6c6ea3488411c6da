"""NsfwClassifier with NudeNet's real bundled model; only its detect is faked for thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nudenet import NudeDetector

from reel.media.safety import NsfwClassifier, sample_indices
from reel.media.video import H264Writer


@pytest.fixture(scope="module")
def classifier() -> NsfwClassifier:
    return NsfwClassifier()


def _noise(seed: int = 0, shape: tuple[int, int] = (360, 640)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_noise_and_plain_colour_are_not_flagged(classifier: NsfwClassifier) -> None:
    plain = np.full((360, 640, 3), (230, 180, 150), dtype=np.uint8)  # a skin-like tone
    assert classifier.is_nsfw([_noise(), plain]) is False
    assert classifier.is_nsfw([]) is False


def test_check_video_on_an_encoded_clip(classifier: NsfwClassifier, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with H264Writer(path, width=320, height=240, fps=24) as writer:
        for i in range(10):
            writer.write(_noise(i, (240, 320)))
    assert classifier.check_video(path) is False


def test_rejects_non_rgb_frames(classifier: NsfwClassifier) -> None:
    with pytest.raises(ValueError):
        classifier.is_nsfw([np.zeros((10, 10), dtype=np.uint8)])


def _fake_detect(detections: list[dict[str, Any]], seen: list[np.ndarray]) -> Any:
    def detect(self: NudeDetector, image: np.ndarray) -> list[dict[str, Any]]:
        seen.append(image)
        return detections

    return detect


@pytest.mark.parametrize(
    ("detections", "threshold", "expected"),
    [
        ([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.6, "box": [0, 0, 5, 5]}], 0.5, True),
        ([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.6, "box": [0, 0, 5, 5]}], 0.7, False),
        ([{"class": "MALE_GENITALIA_EXPOSED", "score": 0.5, "box": [0, 0, 5, 5]}], 0.5, True),
        ([{"class": "BUTTOCKS_EXPOSED", "score": 0.49, "box": [0, 0, 5, 5]}], 0.5, False),
        ([{"class": "ANUS_EXPOSED", "score": 0.9, "box": [0, 0, 5, 5]}], 0.5, True),
        ([{"class": "FEMALE_GENITALIA_EXPOSED", "score": 0.9, "box": [0, 0, 5, 5]}], 0.5, True),
        # Covered or harmless classes never count, however confident.
        ([{"class": "FEMALE_BREAST_COVERED", "score": 0.99, "box": [0, 0, 5, 5]}], 0.5, False),
        ([{"class": "BELLY_EXPOSED", "score": 0.99, "box": [0, 0, 5, 5]}], 0.5, False),
        ([{"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 5, 5]}], 0.5, False),
        ([], 0.5, False),
    ],
)
def test_threshold_and_classes(
    monkeypatch: pytest.MonkeyPatch, detections: list[dict[str, Any]], threshold: float, expected: bool
) -> None:
    seen: list[np.ndarray] = []
    monkeypatch.setattr(NudeDetector, "detect", _fake_detect(detections, seen))
    assert NsfwClassifier(threshold=threshold).is_nsfw([_noise()]) is expected
    assert len(seen) == 1


def test_frames_reach_nudenet_as_bgr(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[np.ndarray] = []
    monkeypatch.setattr(NudeDetector, "detect", _fake_detect([], seen))
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    NsfwClassifier().is_nsfw([red])
    assert seen[0][0, 0].tolist() == [0, 0, 255]
    assert seen[0].flags.c_contiguous


def test_check_video_samples_evenly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with H264Writer(path, width=64, height=64, fps=24) as writer:
        for i in range(24):
            writer.write(np.full((64, 64, 3), i * 10, dtype=np.uint8))
    seen: list[np.ndarray] = []
    monkeypatch.setattr(NudeDetector, "detect", _fake_detect([], seen))
    assert NsfwClassifier(samples=4).check_video(path) is False
    assert len(seen) == 4
    levels = [round(float(frame.mean()) / 10) for frame in seen]
    assert levels == [0, 8, 15, 23]


def test_stops_at_the_first_flagged_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[np.ndarray] = []
    hit = [{"class": "ANUS_EXPOSED", "score": 0.9, "box": [0, 0, 5, 5]}]
    monkeypatch.setattr(NudeDetector, "detect", _fake_detect(hit, seen))
    assert NsfwClassifier().is_nsfw([_noise(1), _noise(2), _noise(3)]) is True
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("count", "samples", "expected"),
    [(0, 4, []), (1, 4, [0]), (3, 4, [0, 1, 2]), (120, 4, [0, 40, 79, 119]), (120, 1, [60])],
)
def test_sample_indices(count: int, samples: int, expected: list[int]) -> None:
    assert sample_indices(count, samples) == expected


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        NsfwClassifier(threshold=0)
    with pytest.raises(ValueError):
        NsfwClassifier(samples=0)
