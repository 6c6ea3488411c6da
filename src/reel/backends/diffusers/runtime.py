"""Loaded pipelines of one worker process: loading, placement in memory, speed options, eviction.

One :class:`DiffusersRuntime` per worker process, shared by every model id it serves. A
pipeline stays loaded between predictions; ids that share weights and settings (e.g. the
Gen-4 Turbo id and the Wan 2.2 5B id) share one loaded pipeline. Before loading another
model on a GPU, the least recently used pipelines are dropped until the new one fits.

Memory modes (``memory`` in the registry), from fastest to smallest:

``full``                everything on the GPU
``vae_tiling``          everything on the GPU; the VAE decodes in tiles (much lower peak)
``model_offload``       components move to the GPU one at a time (accelerate hooks) + tiling
``sequential_offload``  weights stream to the GPU layer by layer: slowest, smallest + tiling
``auto``                the first of those that fits the free VRAM at load time: weights plus
                        ``working_gib`` (``working_gib / 3`` with VAE tiling); after a CUDA
                        out-of-memory error the pipeline steps down one mode for the next run.

Speed options (CUDA only; each configurable per model): regional ``torch.compile`` of the
transformer blocks, a diffusers attention backend (e.g. cuDNN), TF32, the VAE dtype.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reel.backends.diffusers.loras import prepare_hotswap
from reel.backends.diffusers.text_cache import PromptCache
from reel.backends.diffusers.weights import parameter_bytes
from reel.catalog.diffusers_config import MEMORY_MODES, DiffusersConfig
from reel.settings import Settings

log = logging.getLogger(__name__)

GIB = 2**30
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedPipeline:
    key: Hashable
    pipe: Any
    engine: DiffusersConfig
    memory: str
    """The memory mode in effect (never ``auto``)."""
    texts: PromptCache
    compiled: bool = False
    compile_proven: bool = False
    """A generation has succeeded with the compiled blocks (so a later error is not compile's)."""
    transformers: list[Any] = field(default_factory=list)
    schedulers: dict[float, Any] = field(default_factory=dict)
    """Schedulers by flow shift (model ids sharing this pipeline may use different shifts)."""


class DiffusersRuntime:
    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self._loaded: OrderedDict[Hashable, LoadedPipeline] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def loaded(self) -> list[LoadedPipeline]:
        return list(self._loaded.values())

    def acquire(self, engine: DiffusersConfig, path: Path) -> LoadedPipeline:
        """The pipeline for ``engine`` with weights at ``path``: cached, or loaded now.

        Loading errors propagate (the caller turns them into the prediction's error).
        """
        key = (str(path), *_settings_key(engine))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            weights = _estimate_weight_bytes(path, engine)
            self._make_room(sum(weights.values()) + int(engine.working_gib * GIB))
            pipe = _load_pipeline(path, engine)
            return self.adopt(engine, pipe, key=key, weight_bytes=weights)

    def adopt(
        self,
        engine: DiffusersConfig,
        pipe: Any,
        *,
        key: Hashable | None = None,
        weight_bytes: dict[str, int] | None = None,
    ) -> LoadedPipeline:
        """Place an already built pipeline on the device with the engine's memory and speed options.

        Used for loaded checkpoints and by the benchmark, which builds pipelines in memory.
        """
        with self._lock:
            pipe.set_progress_bar_config(disable=True)  # per-step bars would flood the worker log
            sizes = weight_bytes or _module_bytes(pipe)
            memory = self._choose_memory(engine, sizes, pipe)
            loaded = LoadedPipeline(
                key=key if key is not None else ("adopted", id(pipe)),
                pipe=pipe,
                engine=engine,
                memory=memory,
                texts=PromptCache(engine.text_cache_size),
                transformers=[
                    t for t in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if t
                ],
            )
            self._place(loaded, memory)
            self._speed_up(loaded)
            self._loaded[loaded.key] = loaded
            log.info(
                "loaded %s (%s) on %s: memory %s%s, weights %.1f GiB",
                engine.family_info.title,
                engine.weights,
                self.device,
                memory,
                " (auto)" if engine.memory == "auto" else "",
                sum(sizes.values()) / GIB,
            )
            return loaded

    def evict(self, loaded: LoadedPipeline) -> None:
        with self._lock:
            self._loaded.pop(loaded.key, None)
            loaded.pipe = None
            loaded.transformers.clear()
            loaded.texts.clear()
        self.free_memory()

    def free_memory(self) -> None:
        """Give cached allocator blocks back after an error or eviction."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def step_down(self, loaded: LoadedPipeline) -> str | None:
        """After a CUDA OOM: move an ``auto`` pipeline to the next smaller memory mode.

        Returns the new mode, or None when the mode is fixed by the registry or already the smallest.
        """
        if loaded.engine.memory != "auto" or loaded.memory == MEMORY_MODES[-1]:
            return None
        new = MEMORY_MODES[MEMORY_MODES.index(loaded.memory) + 1]
        with self._lock:
            pipe = loaded.pipe
            if loaded.memory in ("model_offload", "sequential_offload"):
                pipe.remove_all_hooks()
            if new in ("model_offload", "sequential_offload"):
                pipe.to("cpu")
            self.free_memory()
            self._place(loaded, new)
            loaded.memory = new
        log.warning("%s: out of GPU memory; memory mode is now %s", loaded.engine.weights, new)
        return new

    def uncompile(self, loaded: LoadedPipeline) -> None:
        """Undo regional compilation (after compiled code failed before ever working)."""
        for transformer in loaded.transformers:
            for module in transformer.modules():
                if getattr(module, "_compiled_call_impl", None) is not None:
                    module._compiled_call_impl = None
        loaded.compiled = False

    # --- internals --------------------------------------------------------------------------------------

    def _make_room(self, need: int) -> None:
        """Drop least recently used pipelines until ``need`` bytes of VRAM are free (or none is left)."""
        if not self.cuda:
            return
        while self._loaded and torch.cuda.mem_get_info(self.device)[0] < need:
            _, oldest = next(iter(self._loaded.items()))
            log.info("unloading %s to make room", oldest.engine.weights)
            self.evict(oldest)

    def _choose_memory(self, engine: DiffusersConfig, sizes: dict[str, int], pipe: Any = None) -> str:
        if not self.cuda or engine.memory != "auto":
            return engine.memory if self.cuda else "full"
        self.free_memory()  # cached allocator blocks count as free
        # An adopted pipeline may already sit on this GPU (the benchmark builds it there): its
        # weights are not "used" by someone else, so they count towards what is available.
        free = torch.cuda.mem_get_info(self.device)[0] + _resident_bytes(pipe, self.device)
        return pick_memory_mode(engine.memory, free, sizes, engine.working_gib)

    def _place(self, loaded: LoadedPipeline, memory: str) -> None:
        pipe = loaded.pipe
        if memory in ("full", "vae_tiling"):
            pipe.to(self.device)
        elif memory == "model_offload":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.enable_sequential_cpu_offload(device=self.device)
        if memory != "full" and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()

    def _speed_up(self, loaded: LoadedPipeline) -> None:
        from reel.backends.diffusers import speed

        engine = loaded.engine
        speed.apply_options(loaded.pipe, loaded.transformers, engine, self.device)
        if not self.cuda:
            return
        torch.backends.cuda.matmul.allow_tf32 = engine.allow_tf32
        torch.backends.cudnn.allow_tf32 = engine.allow_tf32
        for transformer in loaded.transformers:
            if engine.attention_backend:
                try:
                    transformer.set_attention_backend(engine.attention_backend)
                except Exception as exc:  # backend missing on this install: keep the default
                    log.warning(
                        "attention backend %s unavailable (%s); using the default",
                        engine.attention_backend,
                        exc,
                    )
            if engine.compile and loaded.memory != "sequential_offload":
                if not loaded.compiled:  # before compiling: LoRAs then swap without recompiles
                    prepare_hotswap(loaded, Settings(**{}).lora_hotswap_rank)
                transformer.compile_repeated_blocks(fullgraph=False)
                loaded.compiled = True


def pick_memory_mode(
    requested: str, free_bytes: int, weight_bytes: dict[str, int], working_gib: float
) -> str:
    """The memory mode for a pipeline: ``requested`` unless it is ``auto`` (see the module docstring)."""
    if requested != "auto":
        return requested
    weights = sum(weight_bytes.values())
    largest = max(weight_bytes.values(), default=0)
    working = working_gib * GIB
    if free_bytes >= weights + working:
        return "full"
    if free_bytes >= weights + working / 3:
        return "vae_tiling"
    if free_bytes >= largest + working / 3:
        return "model_offload"
    return "sequential_offload"


def _settings_key(engine: DiffusersConfig) -> tuple[Any, ...]:
    return (
        engine.sampler,
        engine.distill_lora,
        engine.distill_lora_file,
        engine.distill_lora_2_file,
        engine.distill_lora_scale,
        engine.fp8,
        engine.step_cache,
        engine.step_cache_threshold,
        engine.vae_compile,
        engine.channels_last,
        engine.revision,
        engine.dtype,
        engine.vae_dtype,
        engine.memory,
        engine.working_gib,
        engine.compile,
        engine.attention_backend,
        engine.text_cache_size,
    )


def component_dtypes(engine: DiffusersConfig) -> dict[str, torch.dtype]:
    """Per-component dtypes for from_pretrained: the VAE apart, the CLIP image encoder in fp32."""
    return {
        "default": TORCH_DTYPES[engine.dtype],
        "vae": TORCH_DTYPES[engine.vae_dtype],
        "image_encoder": torch.float32,
    }


def _load_pipeline(path: Path, engine: DiffusersConfig) -> Any:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    from reel.backends.diffusers import speed, turbo

    named = turbo.checkpoint_pipeline_class(path)
    if engine.sampler == "dmd" or (named and not hasattr(diffusers, named)):
        # A distilled checkpoint naming a pipeline diffusers lacks (FastWan's): load its parts.
        pipe = turbo.load_parts(path, component_dtypes(engine))
    else:
        pipeline_class = getattr(diffusers, engine.family_info.pipeline)
        pipe = pipeline_class.from_pretrained(
            str(path), dtype=component_dtypes(engine), local_files_only=True
        )
    if engine.distill_lora:
        speed.fuse_distill_lora(pipe, engine)
    return pipe


def _estimate_weight_bytes(path: Path, engine: DiffusersConfig) -> dict[str, int]:
    dtypes = component_dtypes(engine)
    sizes = {}
    for name, count in parameter_bytes(path, 1).items():
        dtype = dtypes.get(name, dtypes["default"])
        sizes[name] = count * torch.tensor([], dtype=dtype).element_size()
    return sizes


def _resident_bytes(pipe: Any, device: torch.device) -> int:
    """Bytes of ``pipe``'s parameters and buffers that already live on ``device``."""
    if pipe is None:
        return 0
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in (*component.parameters(), *component.buffers()):
                if tensor.device.type == device.type and (tensor.device.index or 0) == (device.index or 0):
                    total += tensor.numel() * tensor.element_size()
    return total


def _module_bytes(pipe: Any) -> dict[str, int]:
    sizes = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            sizes[name] = sum(p.numel() * p.element_size() for p in component.parameters())
    return sizes
