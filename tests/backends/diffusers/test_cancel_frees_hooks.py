"""However a generation ends, the pipeline's offload hooks are freed.

diffusers' pipelines end ``__call__`` with ``maybe_free_model_hooks()``, which moves every
component back to the CPU after ``enable_model_cpu_offload``; a cancel raised from the step
callback, or a model error, leaves ``__call__`` before that line, and in the ``model_offload``
memory mode the transformer (or the text encoder) would stay on the GPU. Offload needs a GPU, so
these tests run the tiny model on the CPU and spy on the real pipeline's method: it must be called
on every exit path, whatever the memory mode.
"""

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

FAMILY = "wan2.1-i2v"


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def backend(models_file: Path) -> Any:
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.runtime import DiffusersRuntime

    return DiffusersBackend(load_registry(models_file)[MODEL_OF[FAMILY]], DiffusersRuntime("cpu"))


@pytest.fixture
def frees(backend: Any) -> Iterator[list[int]]:
    """Calls of the loaded pipeline's ``maybe_free_model_hooks``, which still does its work."""
    pipe = backend.load().pipe
    real = pipe.maybe_free_model_hooks
    calls: list[int] = []

    def spy() -> None:
        calls.append(1)
        real()

    pipe.maybe_free_model_hooks = spy  # on the instance: the class and other pipelines keep theirs
    yield calls
    del pipe.maybe_free_model_hooks


def request(prompt: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prediction_id="hooks",
        model=MODEL_OF[FAMILY],
        prompt=prompt,
        image=Image.new("RGB", (80, 60), (30, 90, 200)),
        width=640,
        height=360,
        fps=8,
        num_frames=8,
        seed=1,
        params=params,
    )


def generate(backend: Any, req: GenerationRequest, is_cancelled: Callable[[], bool]) -> ListSink:
    sink = ListSink()
    backend.generate(req, sink, lambda _fraction: None, is_cancelled)
    return sink


def test_a_cancel_during_denoising_frees_the_hooks(backend: Any, frees: list[int]) -> None:
    steps: list[int] = []
    transformer = backend.load().pipe.transformer
    handle = transformer.register_forward_hook(lambda *_: steps.append(1))
    try:
        with pytest.raises(GenerationCancelled):
            generate(backend, request("cancel mid-way", num_inference_steps=50), lambda: len(steps) >= 4)
    finally:
        handle.remove()
    assert 0 < len(steps) < 50 * 2  # stopped inside the pipeline, not before or after it
    assert frees == [1]


def test_a_cancel_after_the_text_encoder_frees_the_hooks(backend: Any, frees: list[int]) -> None:
    # The text encoder ran (on the GPU, with offload) and the pipeline was not called yet.
    encoded: list[int] = []
    handle = backend.load().pipe.text_encoder.register_forward_hook(lambda *_: encoded.append(1))
    try:
        with pytest.raises(GenerationCancelled):
            generate(backend, request("cancel before denoising"), lambda: bool(encoded))
    finally:
        handle.remove()
    assert encoded
    assert frees == [1]


@pytest.mark.parametrize("kind", ["model error", "out of memory"])
def test_a_model_error_frees_the_hooks(backend: Any, frees: list[int], kind: str) -> None:
    import torch

    error = torch.OutOfMemoryError("CUDA out of memory.") if kind == "out of memory" else RuntimeError("bad")
    armed = [True]

    def fail_once(*_: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise error

    handle = backend.load().pipe.transformer.register_forward_pre_hook(fail_once)
    try:
        with pytest.raises(GenerationError):
            generate(backend, request(f"a {kind}"), lambda: False)
    finally:
        handle.remove()
    assert frees == [1]
