"""Per-model speed options beyond the runtime's defaults, each a registry key (docs/models.md).

- ``distill_lora``: a step-distillation LoRA (lightx2v's 4-step Wan weights) loaded with
  diffusers' ``load_lora_weights`` (``load_into_transformer_2`` for the low-noise expert) and
  fused into the weights once at load, so the steps pay nothing for it.
- ``fp8``: the transformers' linear layers in FP8 through torchao (CUDA with FP8 support;
  near-lossless, off by default). Refused with a clear reason elsewhere.
- ``step_cache``: diffusers' own First-Block cache hooks (lossy: a step may reuse the previous
  step's residual; off by default). MagCache needs per-model calibrated ratios that diffusers
  does not ship for Wan, so it is not offered.
- ``vae_compile``, ``channels_last``, ``cudnn_benchmark``: VAE decode options, off unless
  measured to help (bench/diffusers_speed.py).
- :func:`use_compile_cache`: torch's inductor cache under the data directory, so a restarted
  worker does not compile again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from reel.catalog.diffusers_config import DiffusersConfig

log = logging.getLogger(__name__)


class SpeedOptionError(ValueError):
    """A speed option cannot apply here; the message says why and what to change."""


def lora_location(engine: DiffusersConfig, file: str) -> tuple[str, str | None]:
    """``(where, weight_name)`` for load_lora_weights: a local folder or file, or a repo id."""
    source = engine.distill_lora
    if source.startswith("/") and Path(source).is_file():
        return str(Path(source).parent), Path(source).name
    return source, file or None


def fuse_distill_lora(pipe: Any, engine: DiffusersConfig) -> None:
    """Load the step-distillation LoRA into the transformer(s), fuse it, drop the adapter."""
    two_experts = getattr(pipe, "transformer_2", None) is not None
    loads: list[tuple[str, dict[str, Any]]] = [("distill", {})]
    if two_experts:
        # The low-noise expert has its own LoRA file (Wan 2.2 Lightning ships high and low).
        loads.append(("distill_2", {"load_into_transformer_2": True}))
    for adapter, extra in loads:
        file = engine.distill_lora_2_file if extra else engine.distill_lora_file
        where, weight_name = lora_location(engine, file)
        kwargs: dict[str, Any] = {"adapter_name": adapter, **extra}
        if weight_name:
            kwargs["weight_name"] = weight_name
        if not where.startswith("/"):
            kwargs["local_files_only"] = True  # `reel models pull` fetched it; never download at load
        pipe.load_lora_weights(where, **kwargs)
    components = ["transformer", *(["transformer_2"] if two_experts else [])]
    pipe.fuse_lora(
        components=components,
        lora_scale=engine.distill_lora_scale,
        adapter_names=[name for name, _ in loads],
    )
    pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    log.info("fused distillation LoRA %s into %s", engine.distill_lora, ", ".join(components))


def check_fp8(device: torch.device) -> None:
    """Raise :class:`SpeedOptionError` unless FP8 matmuls can run on ``device``."""
    if device.type != "cuda":
        raise SpeedOptionError(
            f"fp8 = true needs a CUDA GPU with FP8 support (compute capability 8.9+); this worker "
            f"runs on {device.type}. Set fp8 = false for this model"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise SpeedOptionError(
            f"fp8 = true needs compute capability 8.9+ (Ada, Hopper); this GPU has {major}.{minor}. "
            "Set fp8 = false for this model"
        )
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise SpeedOptionError("fp8 = true needs torchao: pip install 'reel[fp8]'") from exc


def apply_fp8(transformers: list[Any], device: torch.device) -> None:
    check_fp8(device)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    for transformer in transformers:
        quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def step_cache_config(engine: DiffusersConfig) -> Any:
    """The diffusers cache config for ``engine.step_cache`` (None when off)."""
    if not engine.step_cache:
        return None
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=engine.step_cache_threshold)


def apply_options(pipe: Any, transformers: list[Any], engine: DiffusersConfig, device: torch.device) -> None:
    """Apply the engine's speed options to a pipeline just placed on ``device``."""
    if engine.fp8:
        apply_fp8(transformers, device)
    config = step_cache_config(engine)
    if config is not None:
        for transformer in transformers:
            transformer.enable_cache(config)
        log.warning("%s: step cache %s on (lossy)", engine.weights, engine.step_cache)
    if device.type != "cuda":
        return
    if engine.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    vae = getattr(pipe, "vae", None)
    if vae is not None and engine.channels_last:
        vae.to(memory_format=torch.channels_last)
    if vae is not None and engine.vae_compile:
        vae.decoder.compile(fullgraph=False)


def use_compile_cache(data_dir: Path) -> Path:
    """Keep torch.compile's caches (inductor, triton, autotuning) under the data directory.

    Compiled kernels are then reused by a restarted worker: its first generation skips most of
    the compilation. An operator's own TORCHINDUCTOR_CACHE_DIR wins.
    """
    cache = data_dir / "compile-cache"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
