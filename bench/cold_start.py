"""Cold start: from a worker process's start to its first finished video, weights on local disk,
with torch.compile's caches cold (empty) and then warm (what the first run left).

    GPU:            OUT=/tmp/out python bench/cold_start.py --model-id runwayml/gen4-turbo
    CPU smoke test: python bench/cold_start.py --tiny --device cpu

Each run is a fresh Python process doing what ``reel worker`` does before its first video
(the database claim aside, a few milliseconds): import Reel and torch, read the registry,
point the compile caches at the data directory (``reel.backends.diffusers.speed.
use_compile_cache``: ``DATA_DIR/compile-cache``), load the weights, generate one clip at the
model's first size and default duration, and write it as H.264. Run 1 starts from an empty
data directory; run 2 reuses it, so the compiled kernels come from the cache. Reported per
run: process start to import done, weights loaded, video written (wall clock, seconds), as
JSON in ``$OUT/cold_start.json``. ``--tiny`` writes a tiny turbo TI2V model first and serves
it from a registry made for it.
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-id", default="runwayml/gen4-turbo")
    parser.add_argument(
        "--registry", default="", help="a registry file (default: REEL_MODELS_FILE or bundled)"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny turbo model on the CPU (smoke test)")
    parser.add_argument("--runs", type=int, default=2, help="run 1 cold, the others warm")
    parser.add_argument("--data-dir", default="", help="the worker's data dir (default: a fresh temp dir)")
    parser.add_argument("--out", default=os.environ.get("OUT", ""))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args: argparse.Namespace) -> None:
    """One worker-like process: the phases' wall-clock times since the process started."""
    started = float(os.environ["REEL_BENCH_SPAWNED"])
    marks: dict[str, float] = {}
    import torch
    from PIL import Image

    from reel.backends.base import GenerationRequest
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.runtime import DiffusersRuntime
    from reel.backends.diffusers.speed import use_compile_cache
    from reel.catalog.registry import load_registry, registry_path
    from reel.media.video import H264Writer

    marks["imported_s"] = time.time() - started
    cache = use_compile_cache(Path(args.data_dir))
    spec = load_registry(Path(args.registry) if args.registry else registry_path())[args.model_id]
    engine = spec.diffusers
    assert engine is not None
    backend = DiffusersBackend(spec, DiffusersRuntime(args.device))
    backend.load()
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        torch.cuda.synchronize()
    marks["loaded_s"] = time.time() - started
    width, height = next(iter(engine.sizes.values()))
    frames = spec.default_duration * spec.fps
    request = GenerationRequest(
        "cold-start", spec.id, "a lighthouse at dusk", Image.new("RGB", (width, height), (40, 90, 160)),
        width, height, spec.fps, frames, seed=0,
    )  # fmt: skip
    video = Path(args.data_dir) / "cold-start.mp4"
    with H264Writer(video, width=width, height=height, fps=spec.fps) as sink:
        backend.generate(request, sink, lambda _f: None, lambda: False)
    marks["first_video_s"] = time.time() - started
    marks["compile_cache"] = str(cache)  # type: ignore[assignment]
    marks["compile"] = engine.compile  # type: ignore[assignment]
    print("COLD_START " + json.dumps(marks), flush=True)


def tiny_registry(root: Path) -> tuple[str, str]:
    from reel.backends.diffusers.tiny import make_tiny, registry_snippet

    model_id = "tiny/wan2.2-ti2v-turbo"
    directory = make_tiny(root / "model", "wan2.2-ti2v", turbo=True)
    registry = root / "models.toml"
    registry.write_text(registry_snippet(model_id, directory, "wan2.2-ti2v", turbo=True))
    return str(registry), model_id


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    scratch = Path(tempfile.mkdtemp(prefix="reel-cold-start-"))
    data_dir = Path(args.data_dir) if args.data_dir else scratch / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    registry, model_id = tiny_registry(scratch) if args.tiny else (Path(args.registry), args.model_id)
    results: dict[str, Any] = {
        "model_id": model_id,
        "device": args.device,
        "data_dir": str(data_dir),
        "runs": [],
    }
    for run in range(args.runs):
        command = [
            sys.executable, __file__, "--child", "--model-id", model_id, "--device", args.device,
            "--data-dir", str(data_dir), *(["--registry", str(registry)] if registry else []),
        ]  # fmt: skip
        env = {**os.environ, "REEL_BENCH_SPAWNED": repr(time.time())}
        for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            env.pop(name, None)  # the data dir's cache, as a worker uses it
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        line = next((x for x in done.stdout.splitlines() if x.startswith("COLD_START ")), None)
        if done.returncode != 0 or line is None:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"run {run + 1} failed (exit {done.returncode})")
        marks = json.loads(line.removeprefix("COLD_START "))
        marks["cache"] = "cold" if run == 0 else "warm"
        results["runs"].append(marks)
        print(f"run {run + 1} ({marks['cache']} compile cache): {marks}", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "cold_start.json").write_text(json.dumps(results, indent=1))
    print(f"total {time.time() - T0:.1f} s")


if __name__ == "__main__":
    main()
