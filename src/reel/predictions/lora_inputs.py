"""Validation of a submit body's LoRA adapters (``loras``, and Wan 2.2 A14B's per-expert lists).

WaveSpeed's and fal's Wan LoRA endpoints take ``loras: [{"path": ..., "scale": ...}]``. A path
is one of three things, told apart here without I/O:

* an http(s) URL of a ``.safetensors`` file (the worker fetches it through the SSRF-safe
  fetcher; the submit only checks the host is allowed, in the service);
* a Hugging Face repo id ``owner/name`` (prefetched by ``reel models pull-lora``);
* the name of a file in the operator's ``REEL_LORA_DIR`` (a plain name: no folders).

Every failure names the field, e.g. ``loras[1].scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reel.catalog.lora_paths import lora_kind
from reel.catalog.registry import ModelSpec
from reel.errors import InvalidInput

MAX_SCALE = 4.0
"""WaveSpeed documents 0 to 2 in practice; fal accepts up to 4."""
MAX_PATH_CHARS = 2000
LORA_FIELDS = ("loras", "high_noise_loras", "low_noise_loras")
"""``loras`` apply to every expert; the other two only to Wan 2.2 A14B's high-/low-noise expert."""


@dataclass(frozen=True)
class LoraRef:
    path: str
    scale: float
    kind: str
    """``url``, ``repo`` or ``file`` (see the module docstring)."""

    def as_param(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale}


def parse_loras(spec: ModelSpec, body: dict[str, Any]) -> dict[str, tuple[LoraRef, ...]]:
    """The request's adapters per field (only fields given), checked against the model's rules."""
    given = {name: body[name] for name in LORA_FIELDS if body.get(name) not in (None, [])}
    if not given:
        return {}
    if spec.max_loras == 0:
        first = next(iter(given))
        lora_ids = f"{spec.id}-lora"
        raise InvalidInput(
            first, f"{spec.id} takes no LoRA adapters; models whose id ends in -lora do (e.g. {lora_ids})"
        )
    parsed: dict[str, tuple[LoraRef, ...]] = {}
    for name, value in given.items():
        if name != "loras" and not spec.two_experts:
            raise InvalidInput(name, f"is only for Wan 2.2 A14B's two experts; {spec.id} takes loras")
        parsed[name] = _parse_list(name, value)
    for expert in ("high_noise_loras", "low_noise_loras"):
        count = len(parsed.get("loras", ())) + len(parsed.get(expert, ()))
        if count > spec.max_loras:
            field = expert if expert in parsed else "loras"
            raise InvalidInput(field, f"{count} adapters, over {spec.id}'s limit of {spec.max_loras}")
    return parsed


def _parse_list(name: str, value: Any) -> tuple[LoraRef, ...]:
    if not isinstance(value, list):
        raise InvalidInput(name, 'must be a list of {"path": ..., "scale": ...} objects')
    refs = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(where, 'must be an object {"path": ..., "scale": ...}')
        path = item.get("path")
        if not isinstance(path, str) or not path.strip():
            raise InvalidInput(
                f"{where}.path",
                "is required: an https URL of a .safetensors file, a Hugging Face repo id "
                "(owner/name) or the name of a file in the server's LoRA directory",
            )
        path = path.strip()
        if len(path) > MAX_PATH_CHARS:
            raise InvalidInput(f"{where}.path", f"is longer than {MAX_PATH_CHARS} characters")
        kind = lora_kind(path)
        if kind is None:
            raise InvalidInput(
                f"{where}.path",
                f"{path[:100]!r} is neither an http(s) URL, a Hugging Face repo id (owner/name) "
                "nor a plain file name",
            )
        scale = item.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise InvalidInput(f"{where}.scale", "must be a number")
        if not 0.0 <= scale <= MAX_SCALE:
            raise InvalidInput(f"{where}.scale", f"must be between 0 and {MAX_SCALE:g}, got {scale:g}")
        refs.append(LoraRef(path=path, scale=float(scale), kind=kind))
    return tuple(refs)
