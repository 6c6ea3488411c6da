"""Stock diffusers vs Reel's path, same model, size, frames and steps, in one run on one device.

    GPU (H100/H200):  OUT=/tmp/out python bench/diffusers_speed.py --device cuda
    CPU smoke test:   python bench/diffusers_speed.py --tiny --device cpu

Each model is built at FULL size from its configs with random weights directly on the device
(speed does not depend on weight values; nothing is downloaded): see
reel.backends.diffusers.components. The same pipeline object is timed twice:

1. stock: ``pipe(...)`` as the diffusers docs call it (fp32 VAE for Wan, default attention,
   no compile, the prompt encoded on every call, ``output_type="np"``);
2. Reel: ``DiffusersBackend.run`` with the registry entry's settings (``runtime.adopt`` applies
   the memory mode, regional torch.compile, the attention backend and the VAE dtype; cached
   prompt embeddings; frames cover-fitted to the API's 16:9 size on the device).

3. turbo (families with a turbo id, bench/common.py TURBO_IDS): the same pipeline through the
   turbo tier's registry entry: TI2V-5B with Reel's 3-step DMD sampler, the 14B ids with 4
   steps and no guidance (their distillation LoRA is not loaded: random weights, and a fused
   LoRA costs a step nothing), timed at the full step count, so its total is a clip's time;
4. queue: ``--queue`` predictions (default 4) through the turbo tier (or Reel's path where
   there is none), one after another as a worker without overlap would run them, then with
   the worker's overlap (the decode and encode of one on a thread while the next denoises):
   videos per GPU-hour = predictions / wall time x 3600.

Per path: a warm-up call (compilation happens there), then a timed call of ``--steps``
denoising steps. Reel's paths write real H.264 (``encode_s``: the encoder's share). Reported:
seconds per denoising step (median of step-to-step times, measured at the scheduler, or at the
transformer for DMD, with device syncs), text encoding, VAE decode, the timed call's total, peak
GPU memory, and seconds per 5 s video extrapolated to the registry's default step count:
``total + (default_steps - steps) * step``. JSON goes to ``$OUT/diffusers_speed.json``.
"""

from __future__ import annotations

import time

T0 = time.time()  # the --budget-s clock starts before the slow imports

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

STOCK_VAE_DTYPE = {"ltx-video": "bfloat16"}
"""The VAE dtype the diffusers docs use per family (Wan: float32)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="wan2.2-ti2v,wan2.1-i2v", help="comma list of families (bench/common.py)"
    )  # wan2.1-i2v's turbo path is the one 14B turbo id timed by default
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and sizes (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of each timed call (>= 3)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps of each warm-up call")
    parser.add_argument("--paths", default="stock,reel,turbo,queue", help="which paths to time")
    parser.add_argument("--queue", type=int, default=4, help="predictions of the queue path")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip models that would pass this")
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for the JSON (default $OUT)")
    return parser.parse_args()


ARGS = parse_args()

import torch  # noqa: E402

from common import MODELS, OUTPUT_16_9, TURBO_IDS, Stopwatch, test_image  # noqa: E402
from reel.backends.base import GenerationRequest  # noqa: E402
from reel.backends.diffusers.backend import DiffusersBackend  # noqa: E402
from reel.backends.diffusers.components import build_pipeline  # noqa: E402
from reel.backends.diffusers.runtime import TORCH_DTYPES, DiffusersRuntime  # noqa: E402
from reel.catalog.registry import BUNDLED_REGISTRY, ModelSpec, load_registry  # noqa: E402
from reel.media.video import H264Writer  # noqa: E402

DEVICE = torch.device(ARGS.device)
CUDA = DEVICE.type == "cuda"
WATCH = Stopwatch(DEVICE)
RESULTS: dict[str, Any] = {"args": vars(ARGS), "env": {}, "models": {}, "errors": []}


def log(message: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {message}", flush=True)


@contextlib.contextmanager
def recorded(row: dict[str, Any], family: str, path: str) -> Iterator[None]:
    """An error in one path is printed and recorded; the other path still gets its figures."""
    try:
        yield
    except Exception as exc:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"[:500]
        row.setdefault("path_errors", {})[path] = message
        RESULTS["errors"].append({"model": family, "path": path, "error": message})
        WATCH.reset_peak()
    finally:
        save()


class TimedEncoder:
    """A real H.264 writer that adds up the time its ``write`` calls take (the encoder's share)."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.writer = H264Writer(path, width=width, height=height, fps=fps)
        self.frames = 0
        self.seconds = 0.0

    def write(self, frame: Any) -> None:
        started = time.perf_counter()
        self.writer.write(frame)
        self.seconds += time.perf_counter() - started
        self.frames += 1

    def close(self) -> None:
        started = time.perf_counter()
        self.writer.close()
        self.seconds += time.perf_counter() - started


def clip_request(spec: ModelSpec, prompt: str, image: Any, steps: int, seed: int = 0) -> GenerationRequest:
    engine = spec.diffusers
    assert engine is not None
    out_w, out_h = OUTPUT_16_9
    out_frames = engine.max_frames - 1  # e.g. 121 generated -> 120 frames = 5 s at 24 fps
    return GenerationRequest(
        "bench", spec.id, prompt, image, out_w, out_h, spec.fps, out_frames, seed=seed,
        params={"num_inference_steps": steps},
    )  # fmt: skip


def time_reel(
    row: dict[str, Any],
    runtime: DiffusersRuntime,
    spec: ModelSpec,
    pipe: Any,
    image: Any,
    prompt: str,
    warmup_steps: int,
    *,
    path: str = "reel",
    steps: int | None = None,
) -> None:
    """Reel's path: the registry settings applied by ``runtime.adopt``, run by ``DiffusersBackend``."""
    engine = spec.diffusers
    assert engine is not None
    for previous in runtime.loaded():  # another path's settings on the same pipeline
        runtime.evict(previous)
    loaded = runtime.adopt(engine, pipe)
    row[f"{path}_memory_mode"] = loaded.memory
    backend = DiffusersBackend(spec, runtime)
    written = [0]
    encoders: list[TimedEncoder] = []
    scratch = Path(tempfile.mkdtemp(prefix="reel-bench-"))

    def reel(call_steps: int) -> None:
        request = clip_request(spec, prompt, image, call_steps)
        sink = TimedEncoder(scratch / f"{path}-{len(encoders)}.mp4", request.width, request.height, spec.fps)
        encoders.append(sink)
        backend.run(loaded, request, sink, lambda _f: None, lambda: False)
        sink.close()
        written[0] += sink.frames

    log(f"{path}: warm-up (compiles when compile = true; the prompt's embeddings get cached)")
    warm = WATCH.timed_call(reel, warmup_steps, pipe)
    row[f"{path}_warmup"] = warm
    timed = WATCH.timed_call(reel, steps or ARGS.steps, pipe)
    timed["text_encode_uncached_s"] = warm["text_encode_s"]
    timed["text_cache_hits"] = loaded.texts.hits
    timed["frames_written"] = written[0]
    timed["encode_s"] = round(encoders[-1].seconds, 3)
    row[path] = timed
    log(f"{path}: {row[path]}")


def time_queue(
    row: dict[str, Any], runtime: DiffusersRuntime, spec: ModelSpec, image: Any, prompt: str, steps: int
) -> None:
    """``--queue`` clips back to back, without and with the worker's overlap: videos per GPU-hour."""
    (loaded,) = runtime.loaded()
    backend = DiffusersBackend(spec, runtime)
    scratch = Path(tempfile.mkdtemp(prefix="reel-queue-"))
    result: dict[str, Any] = {"model_id": spec.id, "predictions": ARGS.queue, "steps": steps}
    for overlap in (False, True):
        pending: list[threading.Thread] = []
        WATCH.sync()
        started = time.perf_counter()
        for index in range(ARGS.queue):
            request = clip_request(spec, prompt, image, steps, seed=index)
            sink = TimedEncoder(scratch / f"{overlap}-{index}.mp4", request.width, request.height, spec.fps)
            rest = backend.run(loaded, request, sink, lambda _f: None, lambda: False, defer=overlap)

            def finish(rest: Any = rest, sink: TimedEncoder = sink) -> None:
                if rest is not None:
                    rest()
                sink.close()

            for thread in pending:  # one post-processing at a time, as the worker does
                thread.join()
            pending = [threading.Thread(target=finish)]
            pending[0].start()
            if not overlap:
                pending[0].join()
        for thread in pending:
            thread.join()
        WATCH.sync()
        wall = time.perf_counter() - started
        key = "overlapped" if overlap else "sequential"
        result[f"{key}_s"] = round(wall, 2)
        result[f"{key}_videos_per_gpu_hour"] = round(ARGS.queue / wall * 3600, 1)
        log(f"queue {key}: {ARGS.queue} clips in {wall:.2f} s")
    row["queue"] = result


def bench_engine(family: str, spec: ModelSpec) -> ModelSpec:
    """``spec`` pinned to the benchmark's size (and fp32 for --tiny), as bench_model does."""
    _, full_size, tiny_size = MODELS[family]
    width, height, frames = tiny_size if ARGS.tiny else full_size
    engine = spec.diffusers
    assert engine is not None
    if ARGS.tiny:
        engine = replace(engine, dtype="float32", vae_dtype="float32")
    engine = replace(engine, sizes={"16:9": (width, height)}, max_frames=frames, distill_lora="")
    engine = replace(engine, distill_lora_file="", distill_lora_2_file="")
    return replace(spec, diffusers=engine)


def bench_model(family: str, registry: dict[str, ModelSpec]) -> dict[str, Any]:
    model_id, full_size, tiny_size = MODELS[family]
    spec = registry[model_id]
    engine = spec.diffusers
    assert engine is not None
    width, height, frames = tiny_size if ARGS.tiny else full_size
    dtype = torch.float32 if ARGS.tiny else TORCH_DTYPES[engine.dtype]
    stock_vae = torch.float32 if ARGS.tiny else TORCH_DTYPES[STOCK_VAE_DTYPE.get(family, "float32")]
    if ARGS.tiny:
        engine = replace(engine, dtype="float32", vae_dtype="float32")
    # Reel generates at the registry's 16:9 size; the bench pins that size for both paths.
    engine = replace(engine, sizes={"16:9": (width, height)}, max_frames=frames)
    spec = replace(spec, diffusers=engine)
    row: dict[str, Any] = {
        "model_id": model_id,
        "size": f"{width}x{height}x{frames}",
        "default_steps": engine.num_inference_steps,
        "reel_settings": {
            k: getattr(engine, k) for k in ("dtype", "vae_dtype", "memory", "compile", "attention_backend")
        },
    }
    log(f"=== {family} ({model_id}) {row['size']}: building full-size={not ARGS.tiny} pipeline on {DEVICE}")
    started = time.perf_counter()
    pipe = build_pipeline(
        family, "tiny" if ARGS.tiny else "full", device=DEVICE, dtype=dtype, vae_dtype=stock_vae
    )
    pipe.set_progress_bar_config(disable=True)
    row["build_s"] = round(time.perf_counter() - started, 1)
    params = sum(
        p.numel() for c in pipe.components.values() if isinstance(c, torch.nn.Module) for p in c.parameters()
    )
    row["parameters_b"] = round(params / 1e9, 3)
    log(f"built in {row['build_s']} s, {row['parameters_b']} B parameters")
    image = test_image(width, height)
    # LTX's terminal sigma shift needs at least 2 steps (the registry's range says so too).
    warmup_steps = max(ARGS.warmup_steps, spec.ranges.get("num_inference_steps", (1, 0))[0], 1)
    prompt = "a slow push-in on a lighthouse at dusk, waves breaking"
    negative = engine.negative_prompt
    guidance = engine.guidance_scale
    if engine.flow_shift is not None:  # what the diffusers docs do per checkpoint; no effect on speed
        names = [n for n in ("flow_shift", "shift") if n in pipe.scheduler.config]
        if names:
            pipe.scheduler = type(pipe.scheduler).from_config(
                pipe.scheduler.config, **{names[0]: engine.flow_shift}
            )

    if "stock" in ARGS.paths:
        extra = dict(engine.call)
        if family == "ltx-video":
            extra["frame_rate"] = spec.fps

        def stock(steps: int) -> Any:
            return pipe(
                image=image,
                prompt=prompt,
                negative_prompt=negative,
                height=height,
                width=width,
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="np",
                **extra,
            )

        with recorded(row, family, "stock"):
            log("stock: warm-up")
            stock(warmup_steps)
            row["stock"] = WATCH.timed_call(stock, ARGS.steps, pipe)
            log(f"stock: {row['stock']}")

    if "reel" in ARGS.paths:
        pipe.vae.to(TORCH_DTYPES[engine.vae_dtype])  # what from_pretrained(dtype=...) does on load
        runtime = DiffusersRuntime(str(DEVICE))
        with recorded(row, family, "reel"):
            time_reel(row, runtime, spec, pipe, image, prompt, warmup_steps)
        if "reel" not in row and (engine.compile or engine.attention_backend):
            # Still worth a figure: the same path without the speed options that failed.
            plain = replace(engine, compile=False, attention_backend="")
            for loaded in runtime.loaded():
                runtime.uncompile(loaded)
                for transformer in loaded.transformers:
                    transformer.reset_attention_backend()
                runtime.evict(loaded)
            with recorded(row, family, "reel without compile/attention backend"):
                time_reel(row, runtime, replace(spec, diffusers=plain), pipe, image, prompt, warmup_steps)
                row["reel_fallback"] = "compile and attention backend off after an error"

    turbo_spec = bench_engine(family, registry[TURBO_IDS[family]]) if family in TURBO_IDS else None
    if "turbo" in ARGS.paths and turbo_spec is not None:
        turbo_engine = turbo_spec.diffusers
        assert turbo_engine is not None
        row["turbo_model_id"] = turbo_spec.id
        runtime = DiffusersRuntime(str(DEVICE))
        with recorded(row, family, "turbo"):
            time_reel(
                row, runtime, turbo_spec, pipe, image, prompt, 1,
                path="turbo", steps=turbo_engine.num_inference_steps,
            )  # fmt: skip
            row["turbo"]["video_s_est"] = round(row["turbo"]["total_s"], 1)  # a whole clip
    if "queue" in ARGS.paths:
        queue_spec = turbo_spec if "turbo" in row and turbo_spec is not None else spec
        queue_engine = queue_spec.diffusers
        assert queue_engine is not None
        runtime = DiffusersRuntime(str(DEVICE))
        runtime.adopt(queue_engine, pipe)
        queue_steps = queue_engine.num_inference_steps if queue_spec is turbo_spec else ARGS.steps
        with recorded(row, family, "queue"):
            time_queue(row, runtime, queue_spec, image, prompt, queue_steps)

    for path in ("stock", "reel"):
        if path in row:
            r = row[path]
            r["video_s_est"] = round(r["total_s"] + (row["default_steps"] - r["steps"]) * r["step_s"], 1)
    if "stock" in row and "reel" in row:
        row["reel_vs_stock"] = {
            "step": round(row["stock"]["step_s"] / row["reel"]["step_s"], 3),
            "vae_decode": round(row["stock"]["vae_decode_s"] / max(row["reel"]["vae_decode_s"], 1e-9), 3),
            "video": round(row["stock"]["video_s_est"] / row["reel"]["video_s_est"], 3),
        }
    if "stock" in row and "turbo" in row:
        row["turbo_vs_stock_video"] = round(row["stock"]["video_s_est"] / row["turbo"]["video_s_est"], 3)
    return row


def save() -> None:
    if ARGS.out:
        Path(ARGS.out).mkdir(parents=True, exist_ok=True)
        (Path(ARGS.out) / "diffusers_speed.json").write_text(json.dumps(RESULTS, indent=1))


def main() -> None:
    import diffusers

    env = RESULTS["env"]
    env.update(
        python=platform.python_version(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        device=str(DEVICE),
        tiny=ARGS.tiny,
    )
    if CUDA:
        props = torch.cuda.get_device_properties(DEVICE)
        env.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    log("env " + json.dumps(env))
    registry = load_registry(BUNDLED_REGISTRY)
    for family in filter(None, ARGS.models.split(",")):
        if family not in MODELS:
            raise SystemExit(f"--models: unknown family {family!r}; use {', '.join(MODELS)}")
        if RESULTS["models"] and time.time() - T0 > ARGS.budget_s * 0.5:
            log(f"[skip] {family}: past half of --budget-s")
            RESULTS["errors"].append({"model": family, "error": "skipped: budget"})
            continue
        try:
            RESULTS["models"][family] = bench_model(family, registry)
        except Exception as exc:  # one failed model must not lose the others' figures
            traceback.print_exc()
            RESULTS["errors"].append({"model": family, "error": f"{type(exc).__name__}: {exc}"[:500]})
            WATCH.reset_peak()
        save()
    RESULTS["total_s"] = round(time.time() - T0, 1)
    save()
    print("\n" + "=" * 100)
    columns = ("model", "path", "s/step", "text s", "decode s", "total s", "GiB", "5 s video")
    print("{:16} {:6} {:>8} {:>8} {:>9} {:>8} {:>6} {:>10}".format(*columns))
    for family, row in RESULTS["models"].items():
        for path in ("stock", "reel", "turbo"):
            if path in row:
                r = row[path]
                gib = r["peak_gib"] or float("nan")
                print(
                    f"{family:16} {path:6} {r['step_s']:>8.3f} {r['text_encode_s']:>8.3f} "
                    f"{r['vae_decode_s']:>9.2f} {r['total_s']:>8.2f} {gib:>6.1f} {r['video_s_est']:>10.1f}"
                )
        if "reel_fallback" in row:
            print(f"{family:16} reel: {row['reel_fallback']} ({row['path_errors']['reel']})")
        if "reel_vs_stock" in row:
            print(f"{family:16} reel speed-up vs stock: {row['reel_vs_stock']}")
        if "queue" in row:
            q = row["queue"]
            print(
                f"{family:16} queue of {q['predictions']} ({q['model_id']}): videos per GPU-hour "
                f"{q['sequential_videos_per_gpu_hour']} sequential, "
                f"{q['overlapped_videos_per_gpu_hour']} overlapped"
            )
    for error in RESULTS["errors"]:
        print(f"ERROR {error}")
    print(f"total {RESULTS['total_s']} s")


if __name__ == "__main__":
    main()
