"""Validation of a submit body against the model's rules.

Checks here are pure (no I/O): the image string is only classified; fetching and decoding
happen in ``reel.predictions.images``. Every failure names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reel.catalog.registry import ModelSpec
from reel.errors import InvalidInput
from reel.media.images import OUTPUT_SIZES
from reel.predictions.lora_inputs import LoraRef, parse_loras

MAX_PROMPT_CHARS = 2000
MAX_SEED = 4_294_967_295


@dataclass(frozen=True)
class SubmitInput:
    prompt: str
    image: str | None
    """None for a text-to-video model."""
    aspect_ratio: str | None
    duration: int
    seed: int | None
    negative_prompt: str | None
    enable_sync_mode: bool
    enable_base64_output: bool
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    loras: dict[str, tuple[LoraRef, ...]] = field(default_factory=dict)
    """LoRA adapters by request field (``loras``, ``high_noise_loras``, ``low_noise_loras``)."""


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(name, f"must be true or false, got {value!r}")
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string")
    return value


def parse_submit(spec: ModelSpec, body: Any) -> SubmitInput:
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("prompt", "is required and must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput("prompt", f"is {len(prompt)} characters, over the {MAX_PROMPT_CHARS} limit")

    image = body.get("image")
    if spec.text_to_video:
        if image not in (None, ""):
            raise InvalidInput(
                "image", f"{spec.id} makes a video from the prompt alone; use an image-to-video model"
            )
        image = None
    elif not isinstance(image, str) or not image.strip():
        raise InvalidInput(
            "image", "is required: an http(s) URL, an uploaded file's download_url, or base64 data"
        )

    aspect_ratio = _optional_str(body, "aspect_ratio")
    size = _optional_str(body, "size")
    if size is not None and aspect_ratio is None:
        aspect_ratio = _ratio_of_size(size)
    if aspect_ratio is not None and aspect_ratio not in OUTPUT_SIZES:
        allowed = ", ".join(OUTPUT_SIZES)
        raise InvalidInput("aspect_ratio", f"{aspect_ratio!r} is not supported; use one of {allowed}")

    duration = spec.default_duration
    if "duration" in spec.params and body.get("duration") is not None:
        raw = body["duration"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or int(raw) != raw:
            raise InvalidInput("duration", "must be a whole number of seconds")
        if int(raw) not in spec.durations:
            allowed = " or ".join(str(d) for d in spec.durations)
            raise InvalidInput("duration", f"{raw} s is not supported by {spec.id}; use {allowed}")
        duration = int(raw)

    seed: int | None = None
    if "seed" in spec.params and body.get("seed") is not None:
        raw = body["seed"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidInput("seed", "must be an integer")
        # -1 is WaveSpeed's spelling of "random".
        if raw != -1 and not 0 <= raw <= MAX_SEED:
            raise InvalidInput("seed", f"must be -1 (random) or between 0 and {MAX_SEED}")
        seed = None if raw == -1 else raw

    negative_prompt = None
    if "negative_prompt" in spec.params:
        negative_prompt = _optional_str(body, "negative_prompt")

    num_inference_steps = _ranged_number(spec, body, "num_inference_steps", integer=True)
    guidance_scale = _ranged_number(spec, body, "guidance_scale", integer=False)

    return SubmitInput(
        prompt=prompt,
        image=image.strip() if image is not None else None,
        aspect_ratio=aspect_ratio,
        duration=duration,
        seed=seed,
        negative_prompt=negative_prompt,
        enable_sync_mode=_bool_field(body, "enable_sync_mode"),
        enable_base64_output=_bool_field(body, "enable_base64_output"),
        num_inference_steps=None if num_inference_steps is None else int(num_inference_steps),
        guidance_scale=guidance_scale,
        loras=parse_loras(spec, body),
    )


def _ratio_of_size(size: str) -> str:
    """WaveSpeed's text-to-video ``size`` ("1280*720") as the ratio whose output size it is."""
    for ratio, (width, height) in OUTPUT_SIZES.items():
        if size.replace(" ", "") in (f"{width}*{height}", f"{width}x{height}"):
            return ratio
    allowed = ", ".join(f"{w}*{h}" for w, h in OUTPUT_SIZES.values())
    raise InvalidInput("size", f"{size!r} is not supported; use one of {allowed}")


def _ranged_number(spec: ModelSpec, body: dict[str, Any], name: str, *, integer: bool) -> float | None:
    """An optional numeric parameter the model accepts, within the model's range (spec.ranges)."""
    if name not in spec.params or body.get(name) is None:
        return None
    raw = body[name]
    if isinstance(raw, bool) or not isinstance(raw, int | float) or (integer and int(raw) != raw):
        raise InvalidInput(name, "must be a whole number" if integer else "must be a number")
    low, high = spec.ranges.get(name, (-float("inf"), float("inf")))
    if not low <= raw <= high:
        raise InvalidInput(name, f"must be between {low:g} and {high:g} for {spec.id}, got {raw:g}")
    return float(raw)


def recorded_input(body: dict[str, Any]) -> dict[str, Any]:
    """The input as stored and echoed to webhooks: inline image data is not repeated."""
    recorded = dict(body)
    image = recorded.get("image")
    if isinstance(image, str) and not image.startswith(("http://", "https://")):
        recorded["image"] = f"<inline image, {len(image)} characters>"
    return recorded
