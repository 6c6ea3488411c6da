"""Encode the same frames many times, with libx264's own CPU detection and with Reel's settings.

    .venv/bin/python bench/x264_determinism.py [--repeats 40]

Two clips: noise-like 960x960 frames such as the tiny test models make (8 frames), and a
smooth moving 1280x720 scene (121 frames, a 5 s video at 24 fps). For each clip and setting:
how many distinct MP4 files the repeats gave, the largest mean pixel difference of a decoded
repeat from the first one, the file size and the median encode time. A decode runs between
encodes, as a worker's memory sees other work between predictions. The figures go to
docs/benchmarks.md, the JSON to docs/bench-results/x264-determinism.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from reel.media import video
from reel.media.video import H264Writer, read_frames


def noise_clip() -> list[np.ndarray]:
    blocks = np.random.default_rng(0).integers(0, 255, (8, 60, 60, 3), dtype=np.uint8)
    return [np.kron(block, np.ones((16, 16, 1), dtype=np.uint8)) for block in blocks]


def smooth_clip() -> list[np.ndarray]:
    yy, xx = np.mgrid[0:720, 0:1280]
    frames = []
    for t in range(121):
        red = 128 + 100 * np.sin((xx + 4 * t) / 90)
        green = 128 + 90 * np.cos((yy - 2 * t) / 70)
        blue = (xx + yy + 3 * t) % 256
        frame = np.stack([red, green, blue], -1).astype(np.uint8)
        frame[(xx - 200 - 6 * t) ** 2 + (yy - 360) ** 2 < 80**2] = (240, 40, 40)
        frames.append(frame)
    return frames


def encode_repeats(frames: list[np.ndarray], repeats: int, workdir: Path) -> dict[str, object]:
    height, width = frames[0].shape[:2]
    digests, seconds, worst = set(), [], 0.0
    first: np.ndarray | None = None
    for index in range(repeats):
        path = workdir / f"{index % 2}.mp4"
        started = time.perf_counter()
        with H264Writer(path, width=width, height=height, fps=24) as writer:
            for frame in frames:
                writer.write(frame)
        seconds.append(time.perf_counter() - started)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        decoded = np.stack(read_frames(path)).astype(np.int16)
        if first is None:
            first = decoded
        worst = max(worst, float(np.abs(decoded - first).mean()))
    return {
        "distinct_files": len(digests),
        "worst_mean_pixel_difference": round(worst, 3),
        "bytes": path.stat().st_size,
        "median_encode_s": round(statistics.median(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    reel_options = video.x264_options()
    reel_label = f"Reel ({reel_options.get('x264-params', 'no x264-params')})"
    settings = {"x264 default": {}, reel_label: reel_options}
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip_name, frames in (("noise 960x960x8", noise_clip()), ("smooth 1280x720x121", smooth_clip())):
            for setting, options in settings.items():
                video.x264_options = lambda options=options: options  # type: ignore[assignment]
                figures = encode_repeats(frames, args.repeats, Path(tmp))
                results[f"{clip_name}, {setting}"] = figures
                print(f"{clip_name:>20}, {setting:<28} {figures}", flush=True)
    print(json.dumps({"repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
