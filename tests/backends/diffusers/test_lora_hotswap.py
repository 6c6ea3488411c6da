"""LoRA hot-swap mode (what a compiled pipeline uses), in-process on the tiny TI2V model.

torch.compile runs on CUDA only, so recompiles cannot be observed here; what can is that the
slot mechanics give the same videos as the plain adapter mode: a pipeline prepared with
``enable_lora_hotswap`` before its first adapter, LoRAs swapped into fixed slots, unused slots
and LoRA-less runs at scale 0, and a LoRA over the hot-swap rank refused before denoising.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reel.backends.base import GenerationError, GenerationRequest
from reel.catalog.registry import load_registry
from reel.settings import Settings
from support.tiny_models import MODEL_OF

pytest.importorskip("diffusers")
pytest.importorskip("peft")

MODEL = MODEL_OF["wan2.2-ti2v"]


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reel.backends.diffusers.tiny_lora import make_tiny_lora

    folder = tmp_path_factory.mktemp("loras")
    make_tiny_lora(folder, "wan2.2-ti2v", seed=1, name="one")
    make_tiny_lora(folder, "wan2.2-ti2v", seed=2, name="two")
    make_tiny_lora(folder, "wan2.2-ti2v", seed=3, rank=8, name="wide")
    return folder


def _backend(models_file: Path, lora_dir: Path, tmp_path: Path, *, hotswap_rank: int | None) -> Any:
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.loras import prepare_hotswap
    from reel.backends.diffusers.runtime import DiffusersRuntime

    settings = Settings(data_dir=tmp_path, lora_dir=lora_dir, lora_cache=4)
    backend = DiffusersBackend(load_registry(models_file)[MODEL], DiffusersRuntime("cpu"), settings)
    if hotswap_rank is not None:
        prepare_hotswap(backend.load(), hotswap_rank)  # what the runtime does before compiling
    return backend


def _video(backend: Any, loras: list[dict[str, Any]] | None = None) -> np.ndarray:
    request = GenerationRequest(
        prediction_id="unit",
        model=MODEL,
        prompt="a kite",
        image=Image.new("RGB", (80, 60), (30, 90, 200)),
        width=128,
        height=72,
        fps=8,
        num_frames=9,
        seed=3,
        params={"loras": loras} if loras else {},
    )
    sink = ListSink()
    backend.generate(request, sink, lambda _: None, lambda: False)
    return np.stack(sink.frames)


def test_hot_swapped_adapters_give_the_plain_modes_videos(
    models_file: Path, lora_dir: Path, tmp_path: Path
) -> None:
    one, two = [{"path": "one", "scale": 1.0}], [{"path": "two", "scale": 0.7}]
    both = [{"path": "one", "scale": 1.0}, {"path": "two", "scale": 0.7}]
    plain = _backend(models_file, lora_dir, tmp_path / "plain", hotswap_rank=None)
    expected = {
        name: _video(plain, loras)
        for name, loras in [("none", None), ("one", one), ("two", two), ("both", both)]
    }

    swapping = _backend(models_file, lora_dir, tmp_path / "swap", hotswap_rank=8)
    order = [("none", None), ("both", both), ("one", one), ("two", two), ("none", None), ("one", one)]
    for name, loras in order:
        assert np.array_equal(_video(swapping, loras), expected[name]), name
    state = swapping.load().lora_state
    assert len(state.slots["transformer"]) == 2  # slots made once, then swapped into


def test_a_lora_over_the_hotswap_rank_is_refused_before_denoising(
    models_file: Path, lora_dir: Path, tmp_path: Path
) -> None:
    swapping = _backend(models_file, lora_dir, tmp_path, hotswap_rank=4)
    with pytest.raises(
        GenerationError, match=r"loras\[0\]\.path: rank 8 is over .* 4 \(REEL_LORA_HOTSWAP_RANK\)"
    ):
        _video(swapping, [{"path": "wide", "scale": 1.0}])
