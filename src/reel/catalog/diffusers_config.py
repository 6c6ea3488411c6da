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
    )


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
