"""The diffusers backend in-process, on a tiny model: the text cache, cancellation, and recovery
from model errors. CUDA out-of-memory cannot happen on a CPU, so that one error is raised from
inside the transformer by a forward hook (the only stand-in in these tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reel.backends.base import GenerationCancelled, GenerationError, GenerationRequest
from reel.catalog.registry import load_registry
from support.tiny_models import MODEL_OF

pytest.importorskip("diffusers")


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def backends(models_file: Path) -> dict[str, Any]:
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.runtime import DiffusersRuntime

    runtime = DiffusersRuntime("cpu")
    specs = load_registry(models_file)
    return {family: DiffusersBackend(specs[model_id], runtime) for family, model_id in MODEL_OF.items()}


def request(prompt: str = "a lighthouse", seed: int | None = 1, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prediction_id="unit",
        model="tiny",
        prompt=prompt,
        image=Image.new("RGB", (80, 60), (30, 90, 200)),
        width=640,
        height=360,
        fps=8,
        num_frames=8,
        seed=seed,
        params=params,
    )


def run(backend: Any, req: GenerationRequest, is_cancelled: Callable[[], bool] = lambda: False) -> ListSink:
    sink = ListSink()
    backend.generate(req, sink, lambda _fraction: None, is_cancelled)
    return sink


@pytest.fixture
def text_encoder_calls(backends: dict[str, Any]) -> Iterator[list[int]]:
    loaded = backends["wan2.2-ti2v"].load()
    calls: list[int] = []
    handle = loaded.pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def test_a_repeated_prompt_skips_the_text_encoder(
    backends: dict[str, Any], text_encoder_calls: list[int]
) -> None:
    backend = backends["wan2.2-ti2v"]
    texts = backend.load().texts
    texts.clear()
    hits, misses = texts.hits, texts.misses
    run(backend, request("a cache test"))
    assert (texts.hits - hits, texts.misses - misses) == (0, 1)
    assert len(text_encoder_calls) == 2  # the prompt and the negative prompt
    run(backend, request("a cache test", seed=2))
    assert (texts.hits - hits, texts.misses - misses) == (1, 1)
    assert len(text_encoder_calls) == 2
    run(backend, request("a cache test", negative_prompt="blurry"))
    assert texts.misses - misses == 2
    assert len(text_encoder_calls) == 4


def test_cached_embeddings_give_the_same_frames(backends: dict[str, Any]) -> None:
    backend = backends["ltx-video"]
    backend.load().texts.clear()
    fresh = run(backend, request("same frames"))
    cached = run(backend, request("same frames"))
    assert np.array_equal(np.stack(fresh.frames), np.stack(cached.frames))


def test_same_seed_same_frames_and_another_seed_others(backends: dict[str, Any]) -> None:
    backend = backends["wan2.2-ti2v"]
    first, again, other = (np.stack(run(backend, request(seed=seed)).frames) for seed in (11, 11, 12))
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


def test_cancel_stops_at_the_next_step(backends: dict[str, Any]) -> None:
    backend = backends["wan2.1-i2v"]
    transformer = backend.load().pipe.transformer
    forwards: list[int] = []
    handle = transformer.register_forward_hook(lambda *_: forwards.append(1))
    fractions: list[float] = []
    sink = ListSink()
    try:
        with pytest.raises(GenerationCancelled):
            backend.generate(
                request(num_inference_steps=50), sink, fractions.append, lambda: len(fractions) >= 3
            )
    finally:
        handle.remove()
    assert len(forwards) == 3 * 2  # three steps, each a conditional and an unconditional forward
    assert sink.frames == []
    assert 0 < fractions[-1] < 0.1


def _fail_once(module: Any, error: BaseException) -> Any:
    state = {"armed": True}

    def hook(*_: Any) -> None:
        if state["armed"]:
            state["armed"] = False
            raise error

    return module.register_forward_pre_hook(hook)


def test_out_of_memory_fails_that_prediction_and_the_next_one_runs(backends: dict[str, Any]) -> None:
    import torch

    backend = backends["wan2.2-i2v-a14b"]
    # torch's own wording, as a real OOM on an H100 put it (bench/gpu_memory_modes.py)
    oom = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 672.00 MiB. GPU 0 has a total capacity of 79.18 GiB "
        "of which 49.70 GiB is free. Including non-PyTorch memory, this process has 29.47 GiB memory "
        "in use. 29.11 GiB allowed; Of the allocated memory 27.32 GiB is allocated by PyTorch, and "
        "1.38 GiB is reserved by PyTorch but unallocated."
    )
    handle = _fail_once(backend.load().pipe.transformer, oom)
    try:
        with pytest.raises(GenerationError, match="out of GPU memory") as raised:
            run(backend, request())
    finally:
        handle.remove()
    assert "(CUDA out of memory. Tried to allocate 672.00 MiB.)" in str(raised.value)
    assert "PyTorch" not in str(raised.value)  # the allocator's accounting is left out
    assert "HTTP 5" not in str(raised.value)
    assert len(run(backend, request()).frames) == 8


def test_a_model_error_fails_that_prediction_and_the_next_one_runs(backends: dict[str, Any]) -> None:
    backend = backends["ltx-video"]
    handle = _fail_once(backend.load().pipe.transformer, RuntimeError("shape mismatch in block 3"))
    try:
        with pytest.raises(
            GenerationError, match="the model failed: RuntimeError: shape mismatch in block 3"
        ):
            run(backend, request())
    finally:
        handle.remove()
    assert len(run(backend, request()).frames) == 8


def test_the_request_overrides_the_registry_defaults(backends: dict[str, Any]) -> None:
    backend = backends["wan2.2-i2v-a14b"]
    assert backend.options({}) == {
        "num_inference_steps": 2,
        "guidance_scale": 5.0,
        "guidance_scale_2": 5.0,
        "negative_prompt": "",
    }
    options = backend.options({"num_inference_steps": 7, "guidance_scale": 2.5, "negative_prompt": "fog"})
    assert options == {
        "num_inference_steps": 7,
        "guidance_scale": 2.5,
        "guidance_scale_2": 2.5,
        "negative_prompt": "fog",
    }


def test_guidance_off_skips_the_negative_prompt(
    backends: dict[str, Any], text_encoder_calls: list[int]
) -> None:
    backend = backends["wan2.2-ti2v"]
    backend.load().texts.clear()
    assert len(run(backend, request("unguided", guidance_scale=1.0)).frames) == 8
    assert len(text_encoder_calls) == 1
