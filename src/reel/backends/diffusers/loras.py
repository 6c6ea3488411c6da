"""LoRA adapters on a loaded pipeline: checked, kept loaded, active for one generation only.

A request's adapters (``params["loras"]`` for every expert; Wan 2.2 A14B's
``high_noise_loras`` / ``low_noise_loras`` for ``transformer`` / ``transformer_2``) go
through three steps before the first denoising step:

1. **resolve** each path to a local file (``lora_files``: URL, Hugging Face repo, operator's
   folder);
2. **check** it is a LoRA for this transformer: a readable safetensors file whose (diffusers-
   converted) keys are LoRA weights of modules this transformer has, with matching shapes; a
   LoRA for another architecture (a 14B LoRA on the 5B model, an SDXL LoRA) fails the
   prediction with the first mismatch, never a crash inside the pipeline;
3. **load** it as a PEFT adapter named after its content hash, unless it is loaded already.

The worker keeps the ``REEL_LORA_CACHE`` most recently used adapters per pipeline; older ones
are deleted. :func:`activated` makes exactly the request's adapters active with their scales
for the generation and switches LoRA off afterwards however the run ends, so that a following
prediction without LoRA computes ``base_layer(x)`` exactly as a fresh worker does (same seed,
same bytes; the tests check it).

With ``torch.compile`` on (CUDA), adapters are *hot-swapped* instead: the pipeline is prepared
with ``enable_lora_hotswap(target_rank=REEL_LORA_HOTSWAP_RANK)`` before compiling, each
transformer gets fixed adapter slots (``reel_slot_N``, created on first use: one recompile per
slot in a worker's life), a request's LoRAs are swapped into the slots in place and unused
slots get scale 0, so changing adapters never triggers a recompile. The cost of a swap is
logged per generation ("LoRA swap took N ms").
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reel.backends.base import GenerationError
from reel.backends.diffusers.lora_files import LoraStore

log = logging.getLogger(__name__)

EXPERT_FIELDS = {"transformer": "high_noise_loras", "transformer_2": "low_noise_loras"}
"""Which per-expert request field adds adapters to which transformer (Wan 2.2 A14B)."""
SLOT_PREFIX = "reel_slot_"


@dataclass(frozen=True)
class LoraFile:
    field: str
    """Where the request named it, e.g. ``loras[0]``, for messages."""
    path: Path
    digest: str
    scale: float

    @property
    def adapter(self) -> str:
        return f"reel_{self.digest[:20]}"


@dataclass
class LoraState:
    """What one loaded pipeline has loaded: adapter names per transformer, least recent first."""

    loaded: dict[str, OrderedDict[str, None]] = field(default_factory=dict)
    slots: dict[str, list[str | None]] = field(default_factory=dict)
    """Hot-swap mode: per transformer, which adapter (content) sits in each slot."""
    hotswap_rank: int | None = None
    """Set when the pipeline was prepared for hot-swapping (compiled)."""


def requested(params: Mapping[str, Any], transformers: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """Per transformer name, the (field label, {path, scale}) entries that apply to it."""
    wanted: dict[str, list[tuple[str, Any]]] = {name: [] for name in transformers}
    for index, entry in enumerate(params.get("loras") or []):
        for name in transformers:
            wanted[name].append((f"loras[{index}]", entry))
    for name, field_name in EXPERT_FIELDS.items():
        if name in wanted:
            for index, entry in enumerate(params.get(field_name) or []):
                wanted[name].append((f"{field_name}[{index}]", entry))
    return wanted


def has_loras(params: Mapping[str, Any]) -> bool:
    return any(params.get(name) for name in ("loras", *EXPERT_FIELDS.values()))


def _state(loaded: Any) -> LoraState:
    state = getattr(loaded, "lora_state", None)
    if state is None:
        state = LoraState()
        loaded.lora_state = state
    return state


def prepare_hotswap(loaded: Any, target_rank: int) -> None:
    """Before compiling: let later adapters be swapped in place, padded to ``target_rank``."""
    pipe = loaded.pipe
    if hasattr(pipe, "enable_lora_hotswap"):
        pipe.enable_lora_hotswap(target_rank=target_rank)
        _state(loaded).hotswap_rank = target_rank


@contextlib.contextmanager
def activated(loaded: Any, params: Mapping[str, Any], store: LoraStore, cache_size: int) -> Iterator[None]:
    """Exactly the request's adapters, with their scales, for the duration of the block."""
    transformers = _transformer_names(loaded.pipe)
    if not has_loras(params):
        _switch_off(loaded, transformers)  # never needed after a clean exit: a safety net
        yield
        return
    wanted = requested(params, transformers)
    files: dict[str, list[LoraFile]] = {name: [] for name in transformers}
    resolved: dict[str, tuple[Path, str]] = {}
    for name, entries in wanted.items():
        for label, entry in entries:
            path_text = str(entry["path"])
            if path_text not in resolved:
                path = store.resolve(path_text, f"{label}.path")
                resolved[path_text] = (path, _sha256(path))
            path, digest = resolved[path_text]
            files[name].append(LoraFile(label, path, digest, float(entry["scale"])))
    started = time.monotonic()
    state = _state(loaded)
    for name, chosen in files.items():
        if chosen:
            _load(loaded, state, name, chosen, cache_size)
    log.info("LoRA swap took %.0f ms", (time.monotonic() - started) * 1000)
    try:
        yield
    finally:
        _switch_off(loaded, transformers)


def _transformer_names(pipe: Any) -> list[str]:
    return [name for name in ("transformer", "transformer_2") if getattr(pipe, name, None) is not None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(loaded: Any, state: LoraState, name: str, chosen: list[LoraFile], cache_size: int) -> None:
    pipe = loaded.pipe
    transformer = getattr(pipe, name)
    by_adapter: dict[str, LoraFile] = {}
    for lora in chosen:  # the same file twice in one list: its scales add up
        if lora.adapter in by_adapter:
            earlier = by_adapter[lora.adapter]
            by_adapter[lora.adapter] = LoraFile(
                earlier.field, earlier.path, earlier.digest, earlier.scale + lora.scale
            )
        else:
            by_adapter[lora.adapter] = lora
    unique = list(by_adapter.values())
    if state.hotswap_rank is not None:
        _load_into_slots(pipe, state, name, transformer, unique)
        return
    present = state.loaded.setdefault(name, OrderedDict())
    for lora in unique:
        if lora.adapter in present:
            present.move_to_end(lora.adapter)
            continue
        state_dict = checked_state_dict(pipe, transformer, lora)
        _peft_load(pipe, name, state_dict, lora)
        present[lora.adapter] = None
    while len(present) > max(cache_size, len(unique)):
        oldest = next(iter(present))
        if oldest in by_adapter:
            break
        present.pop(oldest)
        transformer.delete_adapters([oldest])
        log.info("LoRA %s unloaded from %s (REEL_LORA_CACHE)", oldest, name)
    transformer.enable_lora()
    transformer.set_adapters([lora.adapter for lora in unique], [lora.scale for lora in unique])


def _load_into_slots(
    pipe: Any, state: LoraState, name: str, transformer: Any, unique: list[LoraFile]
) -> None:
    slots = state.slots.setdefault(name, [])
    for index, lora in enumerate(unique):
        slot = f"{SLOT_PREFIX}{index}"
        if index < len(slots) and slots[index] == lora.adapter:
            continue
        state_dict = checked_state_dict(pipe, transformer, lora, max_rank=state.hotswap_rank)
        _peft_load(pipe, name, state_dict, lora, adapter=slot, hotswap=index < len(slots))
        if index < len(slots):
            slots[index] = lora.adapter
        else:
            slots.append(lora.adapter)
    names = [f"{SLOT_PREFIX}{index}" for index in range(len(slots))]
    scales = [unique[index].scale if index < len(unique) else 0.0 for index in range(len(slots))]
    transformer.set_adapters(names, scales)


def _peft_load(
    pipe: Any,
    name: str,
    state_dict: dict[str, Any],
    lora: LoraFile,
    *,
    adapter: str | None = None,
    hotswap: bool = False,
) -> None:
    try:
        pipe.load_lora_weights(
            dict(state_dict),
            adapter_name=adapter or lora.adapter,
            hotswap=hotswap,
            load_into_transformer_2=name == "transformer_2",
        )
    except Exception as exc:
        raise GenerationError(
            f"{lora.field}.path: not a LoRA this model can load: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    log.info("LoRA %s (%s) loaded into %s", lora.adapter, lora.path.name, name)


def checked_state_dict(
    pipe: Any, transformer: Any, lora: LoraFile, *, max_rank: int | None = None
) -> dict[str, Any]:
    """The LoRA's weights in diffusers' naming, or GenerationError saying why they do not fit."""
    where = f"{lora.field}.path"
    try:
        from safetensors import safe_open

        with safe_open(str(lora.path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("it holds no tensors")
    except Exception as exc:
        raise GenerationError(
            f"{where}: not a LoRA file: not a readable .safetensors file ({str(exc)[:200]})"
        ) from None
    try:
        state_dict = pipe.lora_state_dict(str(lora.path))
    except Exception as exc:
        raise GenerationError(f"{where}: not a LoRA this model can load: {str(exc)[:300]}") from None
    if not state_dict or not all("lora" in key for key in state_dict):
        raise GenerationError(
            f"{where}: not a LoRA file: its tensors are not LoRA weights (no lora_A/lora_B names)"
        )
    modules = dict(transformer.named_modules())
    title = type(transformer).__name__
    for key, tensor in state_dict.items():
        if not key.startswith("transformer."):
            raise GenerationError(
                f"{where}: a LoRA for another architecture: {key!r} is not a {title} weight"
            )
        module_name, _, kind = key[len("transformer.") :].partition(".lora_")
        module = modules.get(module_name)
        if module is None or not hasattr(module, "in_features"):
            raise GenerationError(
                f"{where}: a LoRA for another architecture: this model ({title}) has no layer {module_name!r}"
            )
        if kind == "A.weight" and tensor.shape[-1] != module.in_features:
            raise GenerationError(
                f"{where}: a LoRA for another architecture: {module_name} takes {module.in_features} "
                f"inputs here, the LoRA expects {tensor.shape[-1]}"
            )
        if kind == "B.weight" and tensor.shape[0] != module.out_features:
            raise GenerationError(
                f"{where}: a LoRA for another architecture: {module_name} has {module.out_features} "
                f"outputs here, the LoRA has {tensor.shape[0]}"
            )
        if max_rank is not None and kind == "A.weight" and tensor.shape[0] > max_rank:
            raise GenerationError(
                f"{where}: rank {tensor.shape[0]} is over this server's hot-swap rank {max_rank} "
                "(REEL_LORA_HOTSWAP_RANK)"
            )
    return state_dict


def _switch_off(loaded: Any, transformers: list[str]) -> None:
    state = getattr(loaded, "lora_state", None)
    if state is None:
        return
    for name in transformers:
        transformer = getattr(loaded.pipe, name)
        if state.hotswap_rank is not None:
            slots = state.slots.get(name)
            if slots:  # scale 0 rather than disabling: toggling layers would recompile
                transformer.set_adapters([f"{SLOT_PREFIX}{i}" for i in range(len(slots))], [0.0] * len(slots))
        elif state.loaded.get(name):
            transformer.disable_lora()
