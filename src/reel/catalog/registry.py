"""Which model ids Reel serves and what each accepts: the model catalog.

The models come from a TOML registry file: ``models.toml`` next to this module, or the file
named by ``REEL_MODELS_FILE``. docs/models.md documents its format. Each entry maps an API
model id to a diffusers model family, its weights (a Hugging Face repo id or a local
directory), its defaults and its API parameters.

The catalog is data that the API (validation, the models listing), the domain and the workers
all read, so it sits below all of them and imports none of them; which backend serves an id
is ``reel.backends.build``'s business.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reel.catalog.diffusers_config import ConfigError, DiffusersConfig, parse_diffusers_config

BUNDLED_REGISTRY = Path(__file__).with_name("models.toml")
API_PARAMS = ("duration", "seed", "negative_prompt", "num_inference_steps", "guidance_scale")
"""Optional submit fields a model may accept besides prompt, image and aspect_ratio."""
TASKS = ("i2v", "t2v")
"""What a model id generates from: an image and a prompt, or a prompt alone."""
TEXT_TO_VIDEO_FAMILIES = ("wan2.2-ti2v", "ltx-video", "sandbox")
"""Families that can generate from a prompt alone (the 14B I2V checkpoints need an image)."""
LORA_FAMILIES = ("wan2.2-ti2v", "wan2.1-i2v", "wan2.2-i2v-a14b", "sandbox")
DEFAULT_MAX_LORAS = 3
"""WaveSpeed's limit on its Wan LoRA endpoints."""
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "num_inference_steps": (1, 100),
    "guidance_scale": (1.0, 20.0),
}
_MODEL_KEYS = {
    "title",
    "family",
    "like",
    "fps",
    "durations",
    "default_duration",
    "params",
    "ranges",
    "task",
    "loras",
    "max_loras",
}
_ENGINE_KEYS = {
    "weights",
    "revision",
    "sizes",
    "max_frames",
    "num_inference_steps",
    "guidance_scale",
    "guidance_scale_2",
    "flow_shift",
    "negative_prompt",
    "call",
    "dtype",
    "vae_dtype",
    "memory",
    "working_gib",
    "compile",
    "attention_backend",
    "allow_tf32",
    "text_cache_size",
    # Issue 12 (turbo tiers and speed options): see diffusers_config.py.
    "sampler",
    "dmd_timesteps",
    "distill_lora",
    "distill_lora_file",
    "distill_lora_2_file",
    "distill_lora_scale",
    "decode_chunk",
    "vae_compile",
    "channels_last",
    "cudnn_benchmark",
    "fp8",
    "step_cache",
    "step_cache_threshold",
}


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str
    durations: tuple[int, ...] = (5, 10)
    default_duration: int = 5
    fps: int = 24
    params: frozenset[str] = field(default_factory=frozenset)
    """Optional model-specific fields accepted besides prompt, image and aspect_ratio."""
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Inclusive bounds of the numeric parameters (num_inference_steps, guidance_scale)."""
    diffusers: DiffusersConfig | None = None
    """How the diffusers backend runs this id; None for sandbox-only ids."""
    task: str = "i2v"
    """``i2v``: a prompt and an image (required); ``t2v``: a prompt alone (no image)."""
    max_loras: int = 0
    """How many LoRA adapters a request may apply (per expert); 0 = this id takes none."""

    @property
    def text_to_video(self) -> bool:
        return self.task == "t2v"

    @property
    def two_experts(self) -> bool:
        """Wan 2.2 A14B: a request may give the high-noise and low-noise experts their own LoRAs."""
        return self.diffusers is not None and self.diffusers.family == "wan2.2-i2v-a14b"


def load_registry(path: Path) -> dict[str, ModelSpec]:
    """Parse a registry file. Raises ConfigError naming the file, model and key on any mistake."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"model registry {path}: cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model registry {path}: not valid TOML: {exc}") from exc
    unknown_top = set(document) - {"defaults", "models"}
    if unknown_top:
        raise ConfigError(f"model registry {path}: unknown top-level keys {sorted(unknown_top)}")
    defaults = document.get("defaults", {})
    bad_defaults = set(defaults) - _ENGINE_KEYS
    if bad_defaults:
        raise ConfigError(f"model registry {path}: [defaults] cannot set {sorted(bad_defaults)}")
    tables: dict[str, dict[str, Any]] = document.get("models", {})
    if not tables:
        raise ConfigError(f'model registry {path}: no [models."ID"] tables')
    specs = {}
    for model_id in tables:
        where = f"model registry {path}, model {model_id!r}"
        table = {**defaults, **_resolve_like(path, tables, model_id)}
        specs[model_id] = _parse_model(where, model_id, table, path.parent)
    return specs


def _resolve_like(path: Path, tables: dict[str, dict[str, Any]], model_id: str) -> dict[str, Any]:
    """The model's table with ``like = "OTHER"`` expanded: OTHER's keys, then this one's."""
    chain = [model_id]
    table = dict(tables[model_id])
    while "like" in table:
        other = table.pop("like")
        if other not in tables:
            raise ConfigError(f"model registry {path}, model {chain[-1]!r}: like {other!r} is not a model")
        if other in chain:
            loop = " -> ".join([*chain, other])
            raise ConfigError(f"model registry {path}, model {model_id!r}: 'like' loops through {loop}")
        chain.append(other)
        table = {**tables[other], **table}
    return table


def _parse_model(where: str, model_id: str, table: dict[str, Any], base_dir: Path) -> ModelSpec:
    unknown = set(table) - _MODEL_KEYS - _ENGINE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    title = table.get("title")
    if not isinstance(title, str) or not title:
        raise ConfigError(f"{where}: title is required")
    durations = table.get("durations", [5, 10])
    if not durations or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in durations):
        raise ConfigError(f"{where}: durations must be a list of positive whole seconds")
    default_duration = table.get("default_duration", durations[0])
    if default_duration not in durations:
        raise ConfigError(f"{where}: default_duration {default_duration} is not one of durations")
    fps = table.get("fps", 24)
    if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 120:
        raise ConfigError(f"{where}: fps must be a whole number from 1 to 120")
    params = table.get("params", ["duration", "seed"])
    bad = [p for p in params if p not in API_PARAMS]
    if bad:
        raise ConfigError(f"{where}: params {bad} unknown; a model may accept {', '.join(API_PARAMS)}")
    ranges = dict(DEFAULT_RANGES)
    for name, bounds in table.get("ranges", {}).items():
        if name not in DEFAULT_RANGES:
            raise ConfigError(f"{where}: ranges.{name}: only {', '.join(DEFAULT_RANGES)} have ranges")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            or bounds[0] > bounds[1]
        ):
            raise ConfigError(f"{where}: ranges.{name} must be [low, high]")
        ranges[name] = (bounds[0], bounds[1])
    family = table.get("family", "sandbox")
    task = table.get("task", "i2v")
    if task not in TASKS:
        raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}")
    if task == "t2v" and family not in TEXT_TO_VIDEO_FAMILIES:
        raise ConfigError(
            f'{where}: family {family} needs an input image; text-to-video (task = "t2v") '
            f"works with {', '.join(TEXT_TO_VIDEO_FAMILIES)}"
        )
    loras = table.get("loras", False)
    if not isinstance(loras, bool):
        raise ConfigError(f"{where}: loras must be true or false")
    max_loras = table.get("max_loras", DEFAULT_MAX_LORAS)
    if not isinstance(max_loras, int) or isinstance(max_loras, bool) or not 1 <= max_loras <= 8:
        raise ConfigError(f"{where}: max_loras must be a whole number from 1 to 8")
    if loras and family not in LORA_FAMILIES:
        raise ConfigError(f"{where}: LoRA adapters are supported for {', '.join(LORA_FAMILIES)}")
    engine = None
    if family != "sandbox":
        engine = parse_diffusers_config(where, table)
        engine = _with_local_weights(engine, base_dir)
    return ModelSpec(
        id=model_id,
        title=title,
        durations=tuple(durations),
        default_duration=default_duration,
        fps=fps,
        params=frozenset(params),
        ranges={name: ranges[name] for name in DEFAULT_RANGES if name in params},
        diffusers=engine,
        task=task,
        max_loras=max_loras if loras else 0,
    )


def _with_local_weights(engine: DiffusersConfig, base_dir: Path) -> DiffusersConfig:
    """Relative local paths (``./x``, ``../x``) are relative to the registry file's folder."""
    from dataclasses import replace

    weights = engine.weights
    if weights.startswith(("./", "../")):
        return replace(engine, weights=str((base_dir / weights).resolve()))
    if weights.startswith("~"):
        return replace(engine, weights=str(Path(weights).expanduser()))
    return engine


def registry_path() -> Path:
    from reel.settings import Settings

    return Settings(**{}).models_file or BUNDLED_REGISTRY


@cache
def _models() -> dict[str, ModelSpec]:
    return load_registry(registry_path())


class _Models(Mapping[str, ModelSpec]):
    """The registry, read on first use (so a bad file fails with its message, not at import)."""

    def __getitem__(self, model_id: str) -> ModelSpec:
        return _models()[model_id]

    def __iter__(self) -> Any:
        return iter(_models())

    def __len__(self) -> int:
        return len(_models())


MODELS: Mapping[str, ModelSpec] = _Models()


def get_spec(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)
