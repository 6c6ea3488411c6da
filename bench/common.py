"""What the GPU benchmarks share (bench/diffusers_speed.py, bench/gpu_memory_modes.py).

``MODELS``: which registry entry (its Reel settings) each family is benchmarked with, and at
which size.

A :class:`Stopwatch` times one call of whatever runs a diffusers pipeline: the call's total,
seconds per denoising step (median step-to-step time at the scheduler), text encoding, VAE
decoding and peak GPU memory, with device syncs around each so the times are real.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

MODELS = {
    # The quality tier (50 steps with guidance); the turbo tier is TURBO_IDS' (Gen-4 Turbo's default).
    "wan2.2-ti2v": ("wavespeed-ai/wan-2.2/i2v-5b-720p", (1280, 704, 121), (64, 32, 9)),
    "wan2.1-i2v": ("wavespeed-ai/wan-2.1/i2v-480p", (832, 480, 81), (48, 32, 9)),
    "wan2.2-i2v-a14b": ("wavespeed-ai/wan-2.2/i2v-480p", (832, 480, 81), (48, 32, 9)),
    "ltx-video": ("wavespeed-ai/ltx-video/i2v", (1024, 576, 121), (64, 32, 9)),
}
"""family -> (model id, full-size width/height/frames, tiny width/height/frames)"""
TURBO_IDS = {
    "wan2.2-ti2v": "wavespeed-ai/wan-2.2/i2v-5b-720p-turbo",
    "wan2.1-i2v": "wavespeed-ai/wan-2.1/i2v-480p-turbo",
    "wan2.2-i2v-a14b": "wavespeed-ai/wan-2.2/i2v-480p-turbo",
}
"""family -> its turbo tier's model id (same architecture: timed on the same random-weight pipeline)."""
OUTPUT_16_9 = (1280, 720)
"""The API's 16:9 output size: Reel's path cover-fits the generated frames to it."""


class Stopwatch:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2) if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def timed_call(self, run: Callable[[int], Any], steps: int, pipe: Any) -> dict[str, Any]:
        """Run ``run(steps)`` once; the figures of that call."""
        probe = _Probe(self.sync)
        self.reset_peak()
        with probe.watching(pipe):
            self.sync()
            started = time.perf_counter()
            run(steps)
            self.sync()
            total = time.perf_counter() - started
        return {
            "total_s": round(total, 3),
            "steps": steps,
            "step_s": round(probe.step_s(), 4),
            "text_encode_s": round(sum(probe.text), 4),
            # vae.decode when something called it; else Reel's streamed decode (decoder calls).
            "vae_decode_s": round(sum(probe.decode) or sum(probe.decoder_calls), 3),
            "peak_gib": self.peak_gib(),
        }


def test_image(width: int, height: int) -> Any:
    from PIL import Image

    return Image.effect_mandelbrot((width, height), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")


class _Probe:
    """Times text encoding, VAE decoding and scheduler steps of whatever runs the pipeline."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.text: list[float] = []
        self.decode: list[float] = []
        self.decoder_calls: list[float] = []
        self.step_marks: list[float] = []
        self.transformer_marks: list[float] = []
        """Transformer call starts: the step marks of samplers without a scheduler (DMD)."""

    @contextlib.contextmanager
    def watching(self, pipe: Any) -> Iterator[None]:
        undo = [
            self._wrap(pipe, "encode_prompt", self.text),
            self._wrap(pipe.vae, "decode", self.decode),
            self._mark_steps(type(pipe.scheduler), self.step_marks),
            self._time_calls(getattr(pipe.vae, "decoder", None), self.decoder_calls),
            self._mark_calls(getattr(pipe, "transformer", None), self.transformer_marks),
        ]
        try:
            yield
        finally:
            for restore in undo:
                restore()

    def step_s(self) -> float:
        marks = self.step_marks if len(self.step_marks) >= 2 else self.transformer_marks
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        return statistics.median(gaps) if gaps else float("nan")

    def _time_calls(self, module: Any, into: list[float]) -> Callable[[], None]:
        if module is None:
            return lambda: None
        sync = self.sync
        started: list[float] = []

        def before(*_: Any) -> None:
            sync()
            started.append(time.perf_counter())

        def after(*_: Any) -> None:
            sync()
            into.append(time.perf_counter() - started.pop())

        handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

        def remove() -> None:
            for handle in handles:
                handle.remove()

        return remove

    def _mark_calls(self, module: Any, into: list[float]) -> Callable[[], None]:
        if module is None:
            return lambda: None
        sync = self.sync

        def before(*_: Any) -> None:
            sync()
            into.append(time.perf_counter())

        handle = module.register_forward_pre_hook(before)
        return handle.remove

    def _wrap(self, owner: Any, name: str, into: list[float]) -> Callable[[], None]:
        original = getattr(owner, name)
        shadowed = name in vars(owner)  # an instance attribute already (e.g. another wrapper)
        sync = self.sync

        def timed(*args: Any, **kwargs: Any) -> Any:
            sync()
            started = time.perf_counter()
            result = original(*args, **kwargs)
            sync()
            into.append(time.perf_counter() - started)
            return result

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original) if shadowed else delattr(owner, name)

    def _mark_steps(self, scheduler_class: type, into: list[float]) -> Callable[[], None]:
        original = scheduler_class.step
        sync = self.sync

        def marked(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            sync()
            into.append(time.perf_counter())
            return result

        scheduler_class.step = marked  # type: ignore[attr-defined]
        return lambda: setattr(scheduler_class, "step", original)
