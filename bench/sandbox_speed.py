"""Time the sandbox backend end to end: frames generated and encoded to H.264, per aspect ratio.

    .venv/bin/python bench/sandbox_speed.py [--repeats 3] [--seconds 5]

Prints one line per output size and a JSON summary; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from reel.backends.base import GenerationRequest
from reel.backends.sandbox import SandboxBackend
from reel.media.images import OUTPUT_SIZES
from reel.media.video import H264Writer, probe_video


def time_one(width: int, height: int, frames: int, workdir: Path) -> tuple[float, int]:
    image = Image.effect_mandelbrot((1280, 720), (-2.0, -1.2, 1.0, 1.2), 100).convert("RGB")
    request = GenerationRequest("bench", "bench", "bench", image, width, height, 24, frames, seed=7)
    path = workdir / f"{width}x{height}.mp4"
    started = time.perf_counter()
    with H264Writer(path, width=width, height=height, fps=24) as sink:
        SandboxBackend().generate(request, sink, lambda _f: None, lambda: False)
    elapsed = time.perf_counter() - started
    assert probe_video(path).frame_count == frames
    return elapsed, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ratio, (width, height) in OUTPUT_SIZES.items():
            runs = [time_one(width, height, args.seconds * 24, Path(tmp)) for _ in range(args.repeats)]
            median = statistics.median(t for t, _ in runs)
            results[ratio] = {"size": f"{width}x{height}", "median_s": round(median, 2), "bytes": runs[-1][1]}
            print(f"{ratio:>5} {width}x{height}: median {median:.2f} s for a {args.seconds} s clip")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
