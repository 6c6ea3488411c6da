"""The turbo tier on tiny random-weight models: the DMD sampler of the distilled TI2V-5B, the
14B ids with a fused distillation LoRA, the streamed decode, and the speed options' wiring.

Counted transformer calls are forward hooks on the real modules; nothing is stubbed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from reel.backends.base import GenerationCancelled, GenerationError, GenerationRequest
from reel.catalog.diffusers_config import ConfigError
from reel.catalog.registry import BUNDLED_REGISTRY, ModelSpec, load_registry
from reel.media.video import probe_video, read_frames
from support.media import png_base64
from support.server import LiveServer
from support.tiny_models import MODEL_OF, TINY_FPS, TURBO_OF

pytest.importorskip("diffusers")


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def specs(models_file: Path) -> dict[str, ModelSpec]:
    return load_registry(models_file)


@pytest.fixture(scope="module")
def runtime() -> Any:
    from reel.backends.diffusers.runtime import DiffusersRuntime

    return DiffusersRuntime("cpu")


def backend_for(specs: dict[str, ModelSpec], runtime: Any, model_id: str, **changes: Any) -> Any:
    from reel.backends.diffusers.backend import DiffusersBackend

    spec = specs[model_id]
    assert spec.diffusers is not None
    if changes:
        spec = replace(spec, diffusers=replace(spec.diffusers, **changes))
    return DiffusersBackend(spec, runtime)


def request(seed: int | None = 1, num_frames: int = 8, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prediction_id="turbo",
        model="tiny",
        prompt="a lighthouse at dusk",
        image=Image.new("RGB", (80, 60), (30, 90, 200)),
        width=640,
        height=360,
        fps=8,
        num_frames=num_frames,
        seed=seed,
        params=params,
    )


def run(backend: Any, req: GenerationRequest, is_cancelled: Callable[[], bool] = lambda: False) -> ListSink:
    sink = ListSink()
    backend.generate(req, sink, lambda _fraction: None, is_cancelled)
    return sink


@pytest.fixture
def calls() -> Iterator[Callable[[Any], list[float]]]:
    """Hook a loaded pipeline's transformer(s) and text encoder; list each forward's timestep."""
    handles: list[Any] = []

    def hook(loaded: Any) -> list[float]:
        seen: list[float] = []

        def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            seen.append(float(kwargs["timestep"].max()))

        for transformer in loaded.transformers:
            handles.append(transformer.register_forward_pre_hook(record, with_kwargs=True))
        return seen

    yield hook
    for handle in handles:
        handle.remove()


def test_a_turbo_ti2v_prediction_runs_the_three_published_steps_without_guidance(
    specs: dict[str, ModelSpec], runtime: Any, calls: Callable[[Any], list[float]]
) -> None:
    backend = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"])
    loaded = backend.load()
    # The tiny checkpoint's index names FastVideo's class: loaded part by part, not by diffusers.
    assert (loaded.pipe.config.expand_timesteps, type(loaded.pipe).__name__) == (
        True,
        "WanImageToVideoPipeline",
    )
    timesteps = calls(loaded)
    texts: list[int] = []
    handle = loaded.pipe.text_encoder.register_forward_hook(lambda *_: texts.append(1))
    try:
        loaded.texts.clear()
        # 8 frames at 8 fps -> one 9-frame segment; a request's guidance is ignored (distilled).
        sink = run(backend, request(guidance_scale=7.0, num_inference_steps=50))
    finally:
        handle.remove()
    assert timesteps == [1000.0, 757.0, 522.0]  # one conditional call per step: no CFG pair
    assert texts == [1]  # the prompt only: no negative prompt is encoded
    assert len(sink.frames) == 8 and sink.frames[0].shape == (360, 640, 3)


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["wan2.2-ti2v", "wan2.2-i2v-a14b"])
def test_a_turbo_prediction_through_the_api_makes_the_right_mp4(
    diffusers_server: LiveServer, diffusers_key: str, tmp_path: Path, family: str
) -> None:
    """wavespeed SDK -> reel serve (REEL_DEVICE=cpu) -> worker -> the turbo path -> MP4."""
    import httpx
    import wavespeed

    client = wavespeed.Client(api_key=diffusers_key, base_url=diffusers_server.url, max_connection_retries=0)
    # 2 s at 8 fps = 16 frames: two chained segments, the second one's decode deferred.
    result = client.run(
        TURBO_OF[family],
        {"prompt": "a red kite", "image": png_base64(96, 64), "aspect_ratio": "16:9", "duration": 2},
        poll_interval=0.05,
        timeout=120,
    )
    video = tmp_path / "out.mp4"
    video.write_bytes(httpx.get(result["outputs"][0], timeout=30).content)
    info = probe_video(video)
    assert (info.width, info.height, info.frame_count) == (1280, 720, 16)
    assert info.fps == pytest.approx(TINY_FPS)
    assert len(list(read_frames(video))) == 16


def test_turbo_is_deterministic_per_seed(specs: dict[str, ModelSpec], runtime: Any) -> None:
    backend = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"])
    first, again, other = (run(backend, request(seed=s)).frames for s in (7, 7, 8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_turbo_cancel_stops_between_steps(
    specs: dict[str, ModelSpec], runtime: Any, calls: Callable[[Any], list[float]]
) -> None:
    backend = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"])
    timesteps = calls(backend.load())
    sink = ListSink()
    fractions: list[float] = []
    with pytest.raises(GenerationCancelled):
        backend.generate(request(), sink, fractions.append, lambda: len(timesteps) >= 2)
    assert timesteps == [1000.0, 757.0] and sink.frames == []  # no third step, nothing decoded
    assert fractions and max(fractions) < 1.0


def test_the_dmd_sampler_renoises_its_clean_estimate_between_steps(
    specs: dict[str, ModelSpec], runtime: Any
) -> None:
    """Step i+1 sees (1 - s) * x0 + s * noise, with x0 = x_t - sigma_t * v of step i."""
    from reel.backends.diffusers.turbo import sample_dmd

    pipe = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"]).load().pipe
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any], out: Any) -> None:
        inputs.append(kwargs["hidden_states"])
        outputs.append(out[0])

    handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
    try:
        embeds = torch.zeros(1, 8, pipe.text_encoder.config.d_model)
        latents = sample_dmd(
            pipe,
            image=Image.new("RGB", (64, 32), (200, 10, 10)),
            height=32,
            width=64,
            num_frames=9,
            prompt_embeds=embeds,
            timesteps=[1000, 500],
            generator=torch.Generator().manual_seed(3),
            on_step=lambda _i: None,
        )
    finally:
        handle.remove()
    x0_first = inputs[0] - 1.0 * outputs[0]
    x0_last = inputs[1] - 0.5 * outputs[1]
    torch.testing.assert_close(latents[:, :, 1:], x0_last[:, :, 1:])  # the result: the clean estimate
    noise_part = inputs[1][:, :, 1:] - 0.5 * x0_first[:, :, 1:]  # what re-noising added
    assert noise_part.std().item() == pytest.approx(0.5, rel=0.2)  # 0.5 x unit noise
    torch.testing.assert_close(inputs[0][:, :, :1], inputs[1][:, :, :1])  # the image frame stays clean


@pytest.mark.parametrize("family", ["wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_a_14b_turbo_id_fuses_its_lora_and_runs_four_steps_without_guidance(
    specs: dict[str, ModelSpec], runtime: Any, calls: Callable[[Any], list[float]], family: str
) -> None:
    base = backend_for(specs, runtime, MODEL_OF[family]).load()
    turbo = backend_for(specs, runtime, TURBO_OF[family])
    loaded = turbo.load()
    assert loaded is not base
    for fused, plain in zip(loaded.transformers, base.transformers, strict=True):
        assert not any("lora" in name for name, _ in fused.named_modules())  # fused, adapters gone
        name = "blocks.0.attn1.to_q.weight"
        changed = fused.state_dict()[name] - plain.state_dict()[name]
        assert changed.abs().max() > 1e-3  # the LoRA is in the weights
        assert fused.state_dict()["blocks.0.ffn.net.0.proj.weight"].equal(
            plain.state_dict()["blocks.0.ffn.net.0.proj.weight"]
        )
    timesteps = calls(loaded)
    sink = run(turbo, request())
    assert len(timesteps) == 4 and len(sink.frames) == 8  # 4 steps, one call each (no CFG)


def test_streamed_decode_equals_one_decode(specs: dict[str, ModelSpec], runtime: Any) -> None:
    from reel.backends.diffusers.turbo import _to_unit, decode_frames

    vae = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"]).load().pipe.vae
    latents = torch.randn(1, vae.config.z_dim, 5, 2, 4, generator=torch.Generator().manual_seed(1))
    whole = torch.cat(list(decode_frames(vae, latents, 0, stream=False)))
    pieces = list(decode_frames(vae, latents, 2))
    assert [p.shape[0] for p in pieces] == [5, 8, 4]  # latent frames 2+2+1: 1+4, 4+4, 4 frames
    torch.testing.assert_close(torch.cat(pieces), whole)
    assert whole.shape[0] == 17 and _to_unit is not None


def test_fp8_is_refused_clearly_on_a_cpu(specs: dict[str, ModelSpec], runtime: Any) -> None:
    backend = backend_for(specs, runtime, MODEL_OF["wan2.2-ti2v"], fp8=True)
    with pytest.raises(GenerationError, match=r"fp8 = true needs a CUDA GPU .* Set fp8 = false"):
        backend.load()


def test_a_step_cache_hooks_the_transformer_and_generation_runs(
    specs: dict[str, ModelSpec], runtime: Any
) -> None:
    backend = backend_for(
        specs, runtime, MODEL_OF["wan2.2-ti2v"], step_cache="first_block", step_cache_threshold=0.5
    )
    loaded = backend.load()
    hooked = [
        name
        for name, module in loaded.pipe.transformer.named_modules()
        if getattr(getattr(module, "_diffusers_hook", None), "hooks", None)
    ]
    assert hooked, "no diffusers cache hook in the transformer"
    for seed in (1, 2):  # twice: the hooks' state resets between generations
        assert len(run(backend, request(seed=seed)).frames) == 8
    # The DMD sampler gives the hooks the cache context they need, as the pipelines do.
    turbo = backend_for(specs, runtime, TURBO_OF["wan2.2-ti2v"], step_cache="first_block")
    assert len(run(turbo, request()).frames) == 8


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('sampler = "dmd"\nfamily = "ltx-video"', 'sampler "dmd" is for family "wan2.2-ti2v"'),
        ('sampler = "fast"', "sampler 'fast' is not one of pipeline, dmd"),
        ("dmd_timesteps = [522, 757]", "dmd_timesteps must be decreasing"),
        ('distill_lora_file = "x.safetensors"', "distill_lora_file needs distill_lora"),
        ('distill_lora = "a/b"\ndistill_lora_2_file = "y"', "distill_lora_2_file is for the two-expert"),
        ('step_cache = "mag"', "step_cache 'mag' is not one of first_block"),
        ("decode_chunk = -1", "decode_chunk must be 0"),
    ],
)
def test_bad_turbo_keys_are_named(tmp_path: Path, keys: str, message: str) -> None:
    lines = [
        '[models."m"]',
        'title = "M"',
        'weights = "/nowhere"',
        "max_frames = 81",
        "num_inference_steps = 3",
        "guidance_scale = 1.0",
        'sizes = { "16:9" = [1280, 704] }',
    ]
    if "family" not in keys:
        lines.append('family = "wan2.2-ti2v"')
    path = tmp_path / "models.toml"
    path.write_text("\n".join([*lines, *keys.split("\n")]) + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_registry(path)


def test_compile_caches_live_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reel.backends.diffusers.speed import use_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE"):
        monkeypatch.delenv(name, raising=False)
    assert use_compile_cache(tmp_path) == tmp_path / "compile-cache" / "inductor"
    import os

    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "compile-cache" / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/operator/choice")
    assert use_compile_cache(tmp_path) == Path("/operator/choice")


def test_a_checkpoint_naming_classes_diffusers_lacks_loads_by_its_parts(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """FastWan's index names FastVideo classes; the DMD loop needs no scheduler of theirs."""
    import json
    import shutil

    from reel.backends.diffusers.turbo import load_parts

    model = tmp_path / "fastwan-like"
    shutil.copytree(tiny_dirs[TURBO_OF["wan2.2-ti2v"]], model)
    index = json.loads((model / "model_index.json").read_text())
    index["scheduler"] = ["fastvideo", "FlowUniPCMultistepScheduler"]
    (model / "model_index.json").write_text(json.dumps(index))
    pipe = load_parts(model, {"default": torch.float32})
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel"
    index["vae"] = ["fastvideo", "FastVAE"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"vae is a fastvideo\.FastVAE, not installed"):
        load_parts(model, {"default": torch.float32})


def test_a_lora_not_in_the_hub_cache_is_named_with_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reel.backends.diffusers.weights import lora_problem

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    spec = load_registry(BUNDLED_REGISTRY)["wavespeed-ai/wan-2.2/i2v-720p-turbo"]
    assert spec.diffusers is not None
    assert lora_problem(spec.diffusers) == (
        "distillation LoRA lightx2v/Wan2.2-Lightning/"
        "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/high_noise_model.safetensors is not downloaded"
    )
