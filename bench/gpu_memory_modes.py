"""Reel's memory modes and its out-of-memory recovery, on a real GPU, through DiffusersBackend.run.

    GPU:       SCRIPT=bench/gpu_memory_modes.py bash bench/gpu_bench.sh
    CPU smoke: python bench/gpu_memory_modes.py --tiny --device cpu --fake-oom

One full-size pipeline with random weights (see bench/diffusers_speed.py), two drills:

1. **Out of memory.** The registry entry in memory mode ``auto`` is adopted on the GPU (``auto``
   picks ``full``), then this process's CUDA allocator is capped at the resident weights plus
   ``--cap-gib``, so a generation really runs out of memory (a ``torch.OutOfMemoryError`` from
   the allocator, not a faked one). Expected, as in a worker: that generation fails with a clear
   reason naming the next memory mode, the pipeline steps down, and the next generation in the
   same process succeeds. Up to four tries, each one recorded.
2. **Memory modes.** Without the cap, one timed generation per mode in ``--modes``: seconds per
   step, VAE decode, total, GPU memory held at rest (weights) and peak. ``sequential_offload``
   comes last because removing its hooks leaves no weights behind; on an H100 it did not finish
   3 steps of 720p TI2V in 148 s, so leave it out of ``--modes`` when device time is short.

``--fake-oom`` (CPU smoke test only) raises the OOM from an untiled VAE decode in drill 1
instead. On a CPU every mode runs as ``full``: only the code path is smoke-tested. JSON goes to
``$OUT/memory_modes.json``.
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="wan2.2-ti2v")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and sizes (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per generation (>= 3)")
    parser.add_argument("--cap-gib", type=float, default=6.0, help="allocator cap above the weights")
    parser.add_argument("--modes", default="vae_tiling,model_offload,sequential_offload")
    parser.add_argument("--fake-oom", action="store_true", help="CPU smoke test: OOM from untiled decode")
    parser.add_argument("--budget-s", type=float, default=240.0, help="skip modes that would pass this")
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for the JSON (default $OUT)")
    return parser.parse_args()


ARGS = parse_args()

import torch  # noqa: E402

from common import MODELS, OUTPUT_16_9, Stopwatch, test_image  # noqa: E402
from reel.backends.base import GenerationError, GenerationRequest  # noqa: E402
from reel.backends.diffusers.backend import DiffusersBackend  # noqa: E402
from reel.backends.diffusers.components import build_pipeline  # noqa: E402
from reel.backends.diffusers.runtime import TORCH_DTYPES, DiffusersRuntime, LoadedPipeline  # noqa: E402
from reel.catalog.registry import BUNDLED_REGISTRY, load_registry  # noqa: E402

DEVICE = torch.device(ARGS.device)
CUDA = DEVICE.type == "cuda"
WATCH = Stopwatch(DEVICE)
GIB = 2**30
RESULTS: dict[str, Any] = {"args": vars(ARGS), "env": {}, "oom": [], "modes": {}, "errors": []}


def log(message: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {message}", flush=True)


def save() -> None:
    if ARGS.out:
        Path(ARGS.out).mkdir(parents=True, exist_ok=True)
        (Path(ARGS.out) / "memory_modes.json").write_text(json.dumps(RESULTS, indent=1))


def resident_gib() -> float | None:
    return round(torch.cuda.memory_allocated(DEVICE) / GIB, 2) if CUDA else None


def cap_allocator(gib: float | None) -> None:
    """Cap this process's CUDA allocator at ``gib`` (None: the whole card)."""
    if CUDA:
        total = torch.cuda.get_device_properties(DEVICE).total_memory
        fraction = min(1.0, gib * GIB / total) if gib else 1.0
        torch.cuda.set_per_process_memory_fraction(fraction, DEVICE.index or 0)  # needs an index


def fake_oom_when_untiled(pipe: Any) -> Any:
    """Only for the OOM drill: the memory-mode drill after it runs with the real decode. Raised
    from the decoder itself, which both ``vae.decode`` and Reel's streamed decode call; returns
    the hook's handle (``.remove()``)."""

    def decoder_runs(*_: Any) -> None:
        if not getattr(pipe.vae, "use_tiling", False):
            raise torch.OutOfMemoryError("CUDA out of memory. (faked by --fake-oom)")

    return pipe.vae.decoder.register_forward_pre_hook(decoder_runs)


def main() -> None:
    import diffusers

    RESULTS["env"].update(torch=torch.__version__, diffusers=diffusers.__version__, device=str(DEVICE))
    if CUDA:
        props = torch.cuda.get_device_properties(DEVICE)
        RESULTS["env"].update(gpu=props.name, gpu_mem_gib=round(props.total_memory / GIB, 1))
    log("env " + json.dumps(RESULTS["env"]))
    model_id, full_size, tiny_size = MODELS[ARGS.family]
    spec = load_registry(BUNDLED_REGISTRY)[model_id]
    engine = spec.diffusers
    assert engine is not None
    width, height, frames = tiny_size if ARGS.tiny else full_size
    if ARGS.tiny:
        engine = replace(engine, dtype="float32", vae_dtype="float32")
    engine = replace(engine, memory="auto", sizes={"16:9": (width, height)}, max_frames=frames)
    spec = replace(spec, diffusers=engine)
    log(f"=== {ARGS.family} ({model_id}) {width}x{height}x{frames}: building on {DEVICE}")
    pipe = build_pipeline(
        ARGS.family,
        "tiny" if ARGS.tiny else "full",
        device=DEVICE,
        dtype=TORCH_DTYPES[engine.dtype],
        vae_dtype=TORCH_DTYPES[engine.vae_dtype],
    )
    fake_oom = fake_oom_when_untiled(pipe) if ARGS.fake_oom else None
    runtime = DiffusersRuntime(str(DEVICE))
    backend = DiffusersBackend(spec, runtime)
    image = test_image(width, height)
    out_w, out_h = OUTPUT_16_9

    def generate(loaded: LoadedPipeline) -> dict[str, Any]:
        def run(steps: int) -> None:
            request = GenerationRequest(
                "drill", model_id, "a lighthouse at dusk", image, out_w, out_h, spec.fps, frames - 1,
                seed=0, params={"num_inference_steps": steps},
            )  # fmt: skip
            backend.run(loaded, request, _NullSink(), lambda _f: None, lambda: False)

        return WATCH.timed_call(run, ARGS.steps, loaded.pipe)

    # --- 1. a real out-of-memory error, and the recovery ------------------------------------------
    loaded = runtime.adopt(engine, pipe)
    weights = resident_gib()
    cap = weights + ARGS.cap_gib if weights is not None else None
    log(f"adopted: memory {loaded.memory} (auto); resident {weights} GiB; allocator cap {cap} GiB")
    cap_allocator(cap)
    try:
        for attempt in range(1, 5):
            mode = loaded.memory
            entry: dict[str, Any] = {"attempt": attempt, "mode": mode}
            try:
                entry.update(generate(loaded), outcome="completed")
            except GenerationError as exc:
                entry.update(outcome="failed", reason=str(exc), next_mode=loaded.memory)
            RESULTS["oom"].append(entry)
            log(f"oom drill: {entry}")
            save()
            if entry["outcome"] == "completed":
                break
    finally:
        cap_allocator(None)
        if fake_oom is not None:
            fake_oom.remove()

    # --- 2. the memory modes, uncapped ---------------------------------------------------------------
    for mode in filter(None, ARGS.modes.split(",")):
        if time.time() - T0 > ARGS.budget_s:
            RESULTS["errors"].append({"mode": mode, "error": "skipped: budget"})
            log(f"[skip] {mode}: past --budget-s")
            continue
        runtime.uncompile(loaded)
        runtime.evict(loaded)
        pipe.remove_all_hooks()
        pipe.vae.disable_tiling()
        pipe.to(DEVICE if mode in ("full", "vae_tiling") else "cpu")
        try:
            loaded = runtime.adopt(replace(engine, memory=mode), pipe)
            at_rest = resident_gib()
            row = generate(loaded)
            row.update(memory=loaded.memory, resident_gib=at_rest, compiled=loaded.compiled)
            RESULTS["modes"][mode] = row
            log(f"mode {mode}: {row}")
        except Exception as exc:  # one mode's failure must not lose the others' figures
            traceback.print_exc()
            RESULTS["errors"].append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"[:500]})
        save()

    RESULTS["total_s"] = round(time.time() - T0, 1)
    save()
    print("\n" + "=" * 100)
    for entry in RESULTS["oom"]:
        detail = entry.get("reason") or f"{entry['total_s']} s, peak {entry['peak_gib']} GiB"
        print(f"oom drill try {entry['attempt']} in {entry['mode']:<18} {entry['outcome']}: {detail}")
    print(f"{'mode':18} {'s/step':>8} {'decode s':>9} {'total s':>8} {'rest GiB':>9} {'peak GiB':>9}")
    for mode, row in RESULTS["modes"].items():
        print(
            f"{mode:18} {row['step_s']:>8.3f} {row['vae_decode_s']:>9.2f} {row['total_s']:>8.2f} "
            f"{row['resident_gib'] or float('nan'):>9.1f} {row['peak_gib'] or float('nan'):>9.1f}"
        )
    for error in RESULTS["errors"]:
        print(f"ERROR {error}")
    print(f"total {RESULTS['total_s']} s")


class _NullSink:
    frames = 0

    def write(self, frame: Any) -> None:
        self.frames += 1


if __name__ == "__main__":
    main()
