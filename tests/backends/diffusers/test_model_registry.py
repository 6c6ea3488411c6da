"""The model registry file, clip planning, size fitting, weight checks and device choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reel.backends.diffusers.device import choose_device
from reel.backends.diffusers.weights import check_model_dir, locate
from reel.catalog.diffusers_config import ConfigError
from reel.catalog.families import FAMILIES, generated_frames, segment_plan
from reel.catalog.registry import BUNDLED_REGISTRY, load_registry
from reel.errors import InvalidInput
from reel.media.images import RENDER_SIZES
from reel.predictions.inputs import parse_submit

BUNDLED = load_registry(BUNDLED_REGISTRY)


def test_the_bundled_registry_serves_every_family_at_supported_sizes() -> None:
    assert BUNDLED["runwayml/gen4-turbo"].diffusers is not None
    # Gen-4 Turbo is served by the 3-step distilled tier; the 50-step model keeps its own id.
    turbo = BUNDLED["runwayml/gen4-turbo"].diffusers
    assert turbo.weights == "FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers"
    assert (turbo.sampler, turbo.dmd_timesteps, turbo.guidance_scale) == ("dmd", (1000, 757, 522), 1.0)
    assert BUNDLED["wavespeed-ai/wan-2.2/i2v-5b-720p-turbo"].diffusers == turbo
    quality = BUNDLED["wavespeed-ai/wan-2.2/i2v-5b-720p"].diffusers
    assert quality is not None and quality.weights == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    assert (quality.sampler, quality.num_inference_steps) == ("pipeline", 50)
    for turbo_14b in ("wan-2.2/i2v-720p-turbo", "wan-2.2/i2v-480p-turbo", "wan-2.1/i2v-480p-turbo"):
        engine = BUNDLED[f"wavespeed-ai/{turbo_14b}"].diffusers
        assert engine is not None and engine.distill_lora and engine.num_inference_steps == 4
        assert engine.distilled and BUNDLED[f"wavespeed-ai/{turbo_14b}"].params == {"duration", "seed"}
    assert BUNDLED["runwayml/gen4-turbo"].durations == (5, 10)
    assert BUNDLED["runwayml/gen4-turbo"].params == {"duration", "seed"}
    assert "wavespeed-ai/wan-2.2/i2v-720p" in BUNDLED
    families = {spec.diffusers.family for spec in BUNDLED.values() if spec.diffusers}
    assert families == set(FAMILIES)
    for spec in BUNDLED.values():
        engine = spec.diffusers
        assert engine is not None
        assert set(engine.sizes) == set(RENDER_SIZES), spec.id
        multiple = engine.family_info.size_multiple
        for width, height in engine.sizes.values():
            assert width % multiple == 0 and height % multiple == 0


def test_like_copies_another_model_and_overrides(tmp_path: Path) -> None:
    spec = BUNDLED["wavespeed-ai/wan-2.1/i2v-720p"]
    base = BUNDLED["wavespeed-ai/wan-2.1/i2v-480p"]
    assert spec.diffusers and base.diffusers
    assert spec.diffusers.family == base.diffusers.family == "wan2.1-i2v"
    assert spec.diffusers.weights.endswith("720P-Diffusers")
    assert spec.diffusers.flow_shift == 5.0 and base.diffusers.flow_shift == 3.0
    assert spec.diffusers.sizes["16:9"] == (1280, 720)


def test_generation_size_is_the_nearest_ratio() -> None:
    engine = BUNDLED["runwayml/gen4-turbo"].diffusers
    assert engine is not None
    assert engine.size_for(1280, 720) == (1280, 704)
    assert engine.size_for(720, 1280) == (704, 1280)
    assert engine.size_for(1104, 832) == (1088, 832)
    assert engine.size_for(1584, 672) == (1504, 640)  # Runway's 21:9
    assert engine.size_for(1000, 200) == (1504, 640)  # any other ratio: the nearest listed


GOOD = {
    "title": '"A"',
    "family": '"wan2.2-ti2v"',
    "weights": '"./weights"',
    "max_frames": "121",
    "num_inference_steps": "4",
    "guidance_scale": "5.0",
    "sizes": '{ "16:9" = [1280, 704] }',
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, None),
        ({"family": '"wan9"'}, "family 'wan9' is unknown"),
        ({"sizes": '{ "16:9" = [1280, 700] }'}, "needs positive multiples of 32"),
        ({"speed": "3"}, "unknown keys ['speed']"),
        ({"memory": '"lots"'}, "memory 'lots' is not one of"),
        ({"params": '["steps"]'}, "params ['steps'] unknown"),
        ({"like": '"a/b"'}, "'like' loops"),
        ({"durations": "[5]", "default_duration": "10"}, "default_duration 10"),
        ({"num_inference_steps": None}, "num_inference_steps is required"),
        ({"task": '"v2v"'}, "task must be one of i2v, t2v"),
        ({"task": '"t2v"', "family": '"wan2.1-i2v"'}, "family wan2.1-i2v needs an input image"),
        ({"loras": '"yes"'}, "loras must be true or false"),
        ({"loras": "true", "max_loras": "0"}, "max_loras must be a whole number from 1 to 8"),
        ({"loras": "true", "family": '"ltx-video"'}, "LoRA adapters are supported for"),
    ],
)
def test_registry_mistakes_name_the_model_and_key(
    tmp_path: Path, changes: dict[str, str | None], message: str | None
) -> None:
    keys = {**GOOD, **changes}
    path = tmp_path / "models.toml"
    path.write_text('[models."a/b"]\n' + "\n".join(f"{k} = {v}" for k, v in keys.items() if v is not None))
    if message is None:
        spec = load_registry(path)["a/b"]
        assert spec.diffusers is not None
        assert spec.diffusers.weights == str((tmp_path / "weights").resolve())
        return
    with pytest.raises(ConfigError, match="model 'a/b'") as raised:
        load_registry(path)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("total", "max_frames", "multiple", "plan"),
    [
        (120, 121, 4, [(121, 120)]),
        (121, 121, 4, [(121, 121)]),
        (240, 121, 4, [(121, 121), (121, 119)]),
        (80, 81, 4, [(81, 80)]),
        (160, 81, 4, [(81, 81), (81, 79)]),
        (128, 81, 4, [(81, 81), (49, 47)]),
        (240, 257, 8, [(241, 240)]),
        (16, 9, 4, [(9, 9), (9, 7)]),
        (1, 81, 4, [(1, 1)]),
    ],
)
def test_segment_plan(total: int, max_frames: int, multiple: int, plan: list[tuple[int, int]]) -> None:
    assert segment_plan(total, max_frames, multiple) == plan
    assert sum(keep for _, keep in plan) == total
    for count, _ in plan:
        assert count <= max_frames and (count - 1) % multiple == 0


def test_generated_frames() -> None:
    assert [generated_frames(n, 4) for n in (1, 2, 5, 6, 120)] == [1, 5, 5, 9, 121]
    assert generated_frames(120, 8) == 121


def test_frames_are_cover_fitted_never_stretched() -> None:
    torch = pytest.importorskip("torch")
    from reel.backends.diffusers.frames import fit_frames

    # A 64x32 (2:1) frame: black left half, white right half, a red top band of 4 rows.
    frame = torch.zeros(1, 3, 32, 64)
    frame[:, :, :, 32:] = 1.0
    frame[:, 0, :4, :] = 1.0
    (out,) = list(fit_frames(frame, 1280, 720))
    assert out.shape == (720, 1280, 3)
    # Uniform scale 22.5x (to 1440x720), then 80 px cut from each side: the edge stays centred.
    row = out[360, :, 1].astype(int)
    edge = int((row > 127).argmax())
    assert abs(edge - 640) <= 2
    # The red band keeps its height ratio (4/32 of 720 = 90 rows): no vertical stretch.
    red_rows = int(((out[:, 100, 0] > 127) & (out[:, 100, 1] < 127)).sum())
    assert abs(red_rows - 90) <= 3


def test_a_complete_model_dir_passes_and_damage_is_named(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["wan2.1-i2v"], model)
    assert check_model_dir(model) == []
    (model / "image_encoder" / "model.safetensors").unlink()
    assert check_model_dir(model) == ["image_encoder/ has no weight file"]
    shutil.rmtree(model / "vae")
    assert "component folder vae/ is missing" in check_model_dir(model)
    index = model / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}))
    assert "transformer/ lacks shard part-1.safetensors (2 missing)" in check_model_dir(model)


def test_a_repo_missing_from_the_cache_is_reported_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = BUNDLED["wavespeed-ai/ltx-video/i2v"].diffusers
    assert engine is not None
    status = locate(engine)
    assert not status.ready
    assert "Lightricks/LTX-Video is not downloaded" in status.problem


def test_device_choice() -> None:
    assert choose_device("tpu").device is None
    assert "not auto, cpu" in choose_device("tpu").reason
    pytest.importorskip("diffusers")
    assert choose_device("cpu").device == "cpu"


def test_steps_and_guidance_are_validated_against_the_model_ranges() -> None:
    spec = BUNDLED["wavespeed-ai/wan-2.1/i2v-480p"]
    body = {"prompt": "p", "image": "https://example.com/a.png"}
    parsed = parse_submit(spec, {**body, "num_inference_steps": 30, "guidance_scale": 4.5})
    assert (parsed.num_inference_steps, parsed.guidance_scale) == (30, 4.5)
    for field, value in [
        ("num_inference_steps", 101),
        ("num_inference_steps", 1.5),
        ("guidance_scale", 25),
        ("guidance_scale", True),
    ]:
        with pytest.raises(InvalidInput, match=f"^{field}:"):
            parse_submit(spec, {**body, field: value})
    # A model that does not take the parameter ignores it, like any unknown field.
    gen4 = parse_submit(BUNDLED["runwayml/gen4-turbo"], {**body, "num_inference_steps": 1000})
    assert gen4.num_inference_steps is None


@pytest.mark.parametrize(
    ("free_gib", "mode"),
    [(80, "full"), (30, "vae_tiling"), (20, "model_offload"), (12, "sequential_offload")],
)
def test_auto_memory_mode_follows_free_vram(free_gib: int, mode: str) -> None:
    pytest.importorskip("torch")
    from reel.backends.diffusers.runtime import GIB, pick_memory_mode

    # Wan 2.2 TI2V-5B in bf16: transformer 10 GiB, UMT5-XXL 11 GiB, VAE 1.4 GiB; 20 GiB working.
    weights = {"transformer": 10 * GIB, "text_encoder": 11 * GIB, "vae": int(1.4 * GIB)}
    assert pick_memory_mode("auto", free_gib * GIB, weights, 20.0) == mode
    assert pick_memory_mode("model_offload", 200 * GIB, weights, 20.0) == "model_offload"


def test_weights_already_on_the_device_count_as_available() -> None:
    """A pipeline adopted where it already lives (the GPU benchmark) must not look like a tenant."""
    import torch

    from reel.backends.diffusers.components import build_pipeline
    from reel.backends.diffusers.runtime import _module_bytes, _resident_bytes

    pipe = build_pipeline("wan2.2-ti2v", "tiny")
    weights = sum(_module_bytes(pipe).values())
    resident = _resident_bytes(pipe, torch.device("cpu"))
    assert resident >= weights > 0  # parameters, plus buffers such as rotary tables
    assert _resident_bytes(pipe, torch.device("meta")) == 0
    assert _resident_bytes(None, torch.device("cpu")) == 0


def test_task_and_loras_keys(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    table = "\n".join(f"{k} = {v}" for k, v in GOOD.items())
    path.write_text(
        f'[models."a/t2v"]\n{table}\ntask = "t2v"\n'
        f'[models."a/lora"]\n{table}\nloras = true\nmax_loras = 2\n'
        f'[models."a/plain"]\n{table}\nmax_loras = 5\n'
    )
    specs = load_registry(path)
    assert specs["a/t2v"].text_to_video and specs["a/t2v"].max_loras == 0
    assert not specs["a/lora"].text_to_video and specs["a/lora"].max_loras == 2
    assert specs["a/plain"].max_loras == 0  # a maximum without loras = true takes none


def test_bundled_registry_serves_text_to_video_and_lora_ids() -> None:
    from reel.catalog.registry import BUNDLED_REGISTRY

    specs = load_registry(BUNDLED_REGISTRY)
    assert specs["wavespeed-ai/wan-2.2/t2v-5b-720p"].text_to_video
    assert specs["wavespeed-ai/ltx-video/t2v"].text_to_video
    lora_ids = [model_id for model_id, spec in specs.items() if spec.max_loras]
    assert sorted(lora_ids) == sorted(
        [
            "wavespeed-ai/wan-2.2/i2v-5b-720p-lora",
            "wavespeed-ai/wan-2.2/t2v-5b-720p-lora",
            "wavespeed-ai/wan-2.2/i2v-720p-lora",
            "wavespeed-ai/wan-2.2/i2v-480p-lora",
            "wavespeed-ai/wan-2.1/i2v-480p-lora",
            "wavespeed-ai/wan-2.1/i2v-720p-lora",
        ]
    )
    assert all(specs[model_id].max_loras == 3 for model_id in lora_ids)
    assert specs["wavespeed-ai/wan-2.2/i2v-720p-lora"].two_experts
