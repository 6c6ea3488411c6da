"""How one API model id runs through diffusers: the parsed ``[models."ID"]`` table of the registry.

Pure Python (no torch). ``reel.catalog.registry`` reads the TOML file and builds these; the
backend and the runtime only read them. docs/models.md documents every key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reel.catalog.families import FAMILIES, Family

MEMORY_MODES = ("auto", "full", "vae_tiling", "model_offload", "sequential_offload")
"""From most to least GPU memory used (``auto`` picks one of the others by free VRAM)."""
DTYPES = ("bfloat16", "float16", "float32")
SAMPLERS = ("pipeline", "dmd")
"""``pipeline``: the diffusers pipeline's own loop; ``dmd``: Reel's few-step distilled sampler."""
DEFAULT_DMD_TIMESTEPS = (1000, 757, 522)
"""FastWan2.2-TI2V-5B's published denoising timesteps (its pipeline config)."""
STEP_CACHES = ("", "first_block")
"""diffusers' step-cache hooks: First-Block cache; ``""`` = none (lossy: off by default). MagCache
is left out: diffusers needs per-model calibrated ratios for it, which Wan has none of yet."""


@dataclass(frozen=True)
class DiffusersConfig:
    family: str
    weights: str
    """A Hugging Face repo id (``org/name``) or a local model directory."""
    sizes: Mapping[str, tuple[int, int]]
    """Generation size (width, height) per aspect ratio; the output is then cover-fitted."""
    max_frames: int
    """Frames one generation makes at most; longer clips follow the family's long-clip method."""
    num_inference_steps: int
    guidance_scale: float
    guidance_scale_2: float | None = None
    """Low-noise expert's guidance (two-expert models); None = same as guidance_scale."""
    flow_shift: float | None = None
    """Scheduler flow shift; None keeps the checkpoint's scheduler config."""
    negative_prompt: str = ""
    call: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the pipeline call (e.g. LTX's decode_timestep)."""
    revision: str | None = None
    dtype: str = "bfloat16"
    """Transformer(s) and text encoder dtype."""
    vae_dtype: str = "float32"
    memory: str = "auto"
    working_gib: float = 16.0
    """GPU memory a generation needs beyond the weights, without VAE tiling (for ``auto``)."""
    compile: bool = False
    """Regional torch.compile of the transformer blocks (CUDA only; the first call compiles)."""
    attention_backend: str = ""
    """A diffusers attention backend, e.g. ``_native_cudnn``; empty = the default (CUDA only)."""
    allow_tf32: bool = True
    """TF32 matmuls and convolutions for float32 work (the fp32 VAE) on CUDA."""
    text_cache_size: int = 32
    """Prompt embeddings kept per loaded pipeline (0 disables the cache)."""
    # --- issue 12: turbo tiers and speed options ---
    sampler: str = "pipeline"
    """``dmd`` runs a distilled checkpoint with Reel's few-step sampler (reel.backends.diffusers.turbo)."""
    dmd_timesteps: tuple[int, ...] = DEFAULT_DMD_TIMESTEPS
    """The distillation's timesteps, one transformer call each (``sampler = "dmd"``)."""
    distill_lora: str = ""
    """A step-distillation LoRA (a Hugging Face repo id or a local file/folder), fused at load."""
    distill_lora_file: str = ""
    """The LoRA's weight file inside ``distill_lora`` (the transformer's, or the high-noise expert's)."""
    distill_lora_2_file: str = ""
    """Two-expert models: the low-noise expert's LoRA file (loaded into ``transformer_2``)."""
    distill_lora_scale: float = 1.0
    decode_chunk: int = 0
    """Latent frames per VAE decode chunk streamed into the encoder (0 = the whole clip at once)."""
    vae_compile: bool = False
    """torch.compile of the VAE decoder (CUDA; off unless measured to help)."""
    channels_last: bool = False
    """channels-last memory format for the VAE (CUDA; off unless measured to help)."""
    cudnn_benchmark: bool = False
    """cuDNN autotuning of convolutions (CUDA; off unless measured to help)."""
    fp8: bool = False
    """FP8 linear layers of the transformer(s) through torchao (CUDA with FP8 support only)."""
    step_cache: str = ""
    """A diffusers step cache on the transformer(s): ``first_block`` (lossy)."""
    step_cache_threshold: float = 0.05
    """The step cache's threshold (higher: more steps reused, faster, further from the full output)."""

    @property
    def distilled(self) -> bool:
        """A few-step distilled model (no classifier-free guidance)."""
        return self.sampler == "dmd" or bool(self.distill_lora)

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """The generation size whose aspect ratio is nearest (log scale) to width:height."""
        target = math.log(width / height)
        return min(self.sizes.values(), key=lambda wh: (abs(math.log(wh[0] / wh[1]) - target), -wh[0]))


class ConfigError(ValueError):
    """The registry file is wrong; the message names the file, the model and the key."""


def parse_diffusers_config(where: str, table: Mapping[str, Any]) -> DiffusersConfig:
    """Build and check a DiffusersConfig from a model's TOML table (already merged with defaults)."""
    family = _get(where, table, "family", str)
    if family not in FAMILIES:
        raise ConfigError(f"{where}: family {family!r} is unknown; use one of {', '.join(FAMILIES)}")
    info = FAMILIES[family]
    sizes_raw = _get(where, table, "sizes", dict)
    sizes: dict[str, tuple[int, int]] = {}
    for ratio, pair in sizes_raw.items():
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        ):
            raise ConfigError(f"{where}: sizes.{ratio!r} must be [width, height]")
        width, height = pair
        if width <= 0 or height <= 0 or width % info.size_multiple or height % info.size_multiple:
            raise ConfigError(
                f"{where}: sizes.{ratio!r} = {width}x{height}: {info.title} needs positive multiples "
                f"of {info.size_multiple}"
            )
        sizes[ratio] = (width, height)
    if not sizes:
        raise ConfigError(f"{where}: sizes must list at least one aspect ratio")
    max_frames = _get(where, table, "max_frames", int)
    if max_frames < info.frame_multiple + 1:
        raise ConfigError(f"{where}: max_frames must be at least {info.frame_multiple + 1}")
    memory = table.get("memory", "auto")
    if memory not in MEMORY_MODES:
        raise ConfigError(f"{where}: memory {memory!r} is not one of {', '.join(MEMORY_MODES)}")
    for key in ("dtype", "vae_dtype"):
        if table.get(key, "bfloat16") not in DTYPES:
            raise ConfigError(f"{where}: {key} {table[key]!r} is not one of {', '.join(DTYPES)}")
    call = table.get("call", {})
    if not isinstance(call, dict):
        raise ConfigError(f"{where}: call must be a table of pipeline arguments")
    return DiffusersConfig(
        family=family,
        weights=_get(where, table, "weights", str, info.default_repo),
        sizes=sizes,
        max_frames=max_frames,
        num_inference_steps=_get(where, table, "num_inference_steps", int),
        guidance_scale=float(_get(where, table, "guidance_scale", (int, float))),
        guidance_scale_2=_optional_float(where, table, "guidance_scale_2"),
        flow_shift=_optional_float(where, table, "flow_shift"),
        negative_prompt=_get(where, table, "negative_prompt", str, ""),
        call=dict(call),
        revision=table.get("revision") or None,
        dtype=table.get("dtype", "bfloat16"),
        vae_dtype=table.get("vae_dtype", "float32"),
        memory=memory,
        working_gib=float(_get(where, table, "working_gib", (int, float), 16.0)),
        compile=_get(where, table, "compile", bool, False),
        attention_backend=_get(where, table, "attention_backend", str, ""),
        allow_tf32=_get(where, table, "allow_tf32", bool, True),
        text_cache_size=_get(where, table, "text_cache_size", int, 32),
        **_turbo_options(where, table),
    )


def _turbo_options(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """The issue-12 keys: the distilled samplers and the speed options."""
    sampler = _get(where, table, "sampler", str, "pipeline")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where}: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if sampler == "dmd" and table.get("family") != "wan2.2-ti2v":
        raise ConfigError(f'{where}: sampler "dmd" is for family "wan2.2-ti2v" (FastWan2.2-TI2V-5B)')
    timesteps = table.get("dmd_timesteps", list(DEFAULT_DMD_TIMESTEPS))
    if (
        not isinstance(timesteps, list)
        or not timesteps
        or not all(isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in timesteps)
        or sorted(timesteps, reverse=True) != timesteps
        or len(set(timesteps)) != len(timesteps)
    ):
        raise ConfigError(f"{where}: dmd_timesteps must be decreasing whole numbers in 1..1000")
    lora = _get(where, table, "distill_lora", str, "")
    lora_file = _get(where, table, "distill_lora_file", str, "")
    lora_2_file = _get(where, table, "distill_lora_2_file", str, "")
    if (lora_file or lora_2_file) and not lora:
        raise ConfigError(f"{where}: distill_lora_file needs distill_lora (the repo or folder)")
    if lora_2_file and table.get("family") != "wan2.2-i2v-a14b":
        raise ConfigError(f"{where}: distill_lora_2_file is for the two-expert family wan2.2-i2v-a14b")
    if lora and sampler == "dmd":
        raise ConfigError(f'{where}: sampler "dmd" runs a distilled checkpoint; it takes no distill_lora')
    step_cache = _get(where, table, "step_cache", str, "")
    if step_cache not in STEP_CACHES:
        raise ConfigError(f'{where}: step_cache {step_cache!r} is not one of first_block (or "")')
    decode_chunk = _get(where, table, "decode_chunk", int, 0)
    if decode_chunk < 0:
        raise ConfigError(f"{where}: decode_chunk must be 0 (whole clip) or a positive latent frame count")
    return {
        "sampler": sampler,
        "dmd_timesteps": tuple(timesteps),
        "distill_lora": lora,
        "distill_lora_file": lora_file,
        "distill_lora_2_file": lora_2_file,
        "distill_lora_scale": float(_get(where, table, "distill_lora_scale", (int, float), 1.0)),
        "decode_chunk": decode_chunk,
        "vae_compile": _get(where, table, "vae_compile", bool, False),
        "channels_last": _get(where, table, "channels_last", bool, False),
        "cudnn_benchmark": _get(where, table, "cudnn_benchmark", bool, False),
        "fp8": _get(where, table, "fp8", bool, False),
        "step_cache": step_cache,
        "step_cache_threshold": float(_get(where, table, "step_cache_threshold", (int, float), 0.05)),
    }


_MISSING = object()


def _get(
    where: str, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = _MISSING
) -> Any:
    if key not in table:
        if default is _MISSING:
            raise ConfigError(f"{where}: {key} is required")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{where}: {key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}: {key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _optional_float(where: str, table: Mapping[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    return float(_get(where, table, key, (int, float)))
