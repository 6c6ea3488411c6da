"""Validation of a Runway ``POST /v1/image_to_video`` body (API contract, section 2).

A Runway task is a prediction seen through Runway's vocabulary: this module turns Runway's
fields into the same :class:`SubmitInput` the WaveSpeed dialect produces, so one service and
one store serve both APIs. Checks here are pure (no I/O) and every failure names the field
in Runway's spelling (``promptText``, ``promptImage``, ``ratio`` ...).
"""

from __future__ import annotations

import re
from typing import Any

from reel.catalog.registry import MODELS, ModelSpec, get_spec
from reel.errors import InvalidInput
from reel.predictions.inputs import MAX_SEED, SubmitInput
from reel.predictions.service import SubmitDialect

RUNWAY_MODELS: dict[str, str] = {"gen4_turbo": "runwayml/gen4-turbo"}
"""Runway's image-to-video model names → Reel's model ids. Reel's own ids are accepted as they are."""
RUNWAY_TEXT_MODELS: dict[str, str] = {"gen4.5": "wavespeed-ai/wan-2.2/t2v-5b-720p"}
"""Runway's text-to-video model names → Reel's (the same Wan 2.2 TI2V-5B as gen4_turbo)."""

RATIOS: dict[str, str] = {
    "1280:720": "16:9",
    "720:1280": "9:16",
    "1104:832": "4:3",
    "832:1104": "3:4",
    "960:960": "1:1",
    "1584:672": "21:9",
}
"""Runway's ``ratio`` (the output size in pixels) → Reel's ratio name (``RENDER_SIZES``)."""

MAX_PROMPT_UTF16_UNITS = 1000
# Runway's gen4_turbo takes any whole number of seconds from 2 to 10 and defaults to 10;
# Reel's other models keep the durations they document.
RUNWAY_DURATIONS: dict[str, tuple[range, int]] = {
    "runwayml/gen4-turbo": (range(2, 11), 10),
    # gen4.5 (text-to-video) takes 2 to 10 s too; the SDK always sends one.
    "wavespeed-ai/wan-2.2/t2v-5b-720p": (range(2, 11), 10),
}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def reel_model(name: object, *, text_to_video: bool = False) -> str:
    """The Reel model id a Runway ``model`` field names, for ``POST /v1/image_to_video`` or
    (``text_to_video``) ``POST /v1/text_to_video``."""
    names = RUNWAY_TEXT_MODELS if text_to_video else RUNWAY_MODELS
    if not isinstance(name, str) or not name:
        raise InvalidInput("model", f"is required, e.g. {next(iter(names))}")
    model = {**RUNWAY_MODELS, **RUNWAY_TEXT_MODELS}.get(name, name)  # the other endpoint's names too
    spec = get_spec(model)
    if spec is None or spec.text_to_video != text_to_video:
        served = ", ".join(
            [
                *(n for n, m in names.items() if m in MODELS),
                *(
                    m
                    for m, s in MODELS.items()
                    if s.text_to_video == text_to_video and m not in names.values()
                ),
            ]
        )
        if spec is None:
            why = "is not served here"
        elif text_to_video:
            why = "needs an image (POST /v1/image_to_video)"
        else:
            why = "makes video from text alone (POST /v1/text_to_video)"
        raise InvalidInput("model", f"{name!r} {why}; use one of {served}")
    return model


def utf16_units(text: str) -> int:
    """Length as JavaScript counts it: characters outside the BMP take two units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prompt_image(value: Any) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput("promptImage", "must not be empty")
        return value.strip()
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidInput("promptImage", "takes exactly one image, at position 'first'")
        item = value[0]
        if not isinstance(item, dict) or not isinstance(item.get("uri"), str) or not item["uri"].strip():
            raise InvalidInput(
                "promptImage.0.uri", "is required: an HTTPS URL, a runway:// URI or a data URI"
            )
        if item.get("position", "first") != "first":
            raise InvalidInput(
                "promptImage.0.position", f"{item.get('position')!r} is not supported; use 'first'"
            )
        return str(item["uri"]).strip()
    raise InvalidInput(
        "promptImage",
        "is required: an HTTPS URL, a runway:// URI, a data URI, or [{uri, position: 'first'}]",
    )


def _duration(spec: ModelSpec, body: dict[str, Any]) -> int:
    allowed, default = RUNWAY_DURATIONS.get(spec.id, (spec.durations, spec.default_duration))
    raw = body.get("duration")
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or int(raw) != raw:
        raise InvalidInput("duration", "must be a whole number of seconds")
    if int(raw) not in allowed:
        if isinstance(allowed, range):
            rule = f"from {allowed.start} to {allowed.stop - 1}"
        else:
            rule = " or ".join(str(d) for d in allowed)
        raise InvalidInput("duration", f"{raw} s is not supported by {spec.id}; use {rule}")
    return int(raw)


def _seed(body: dict[str, Any]) -> int | None:
    raw = body.get("seed")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_SEED:
        raise InvalidInput("seed", f"must be an integer from 0 to {MAX_SEED}")
    return raw


def _prompt_text(body: dict[str, Any], *, required: bool) -> str:
    prompt = body.get("promptText")
    if prompt is None and not required:
        return ""
    if not isinstance(prompt, str) or not prompt.strip():
        rule = "is required: a non-empty string" if required else "must be a non-empty string when given"
        raise InvalidInput("promptText", rule)
    if (units := utf16_units(prompt)) > MAX_PROMPT_UTF16_UNITS:
        raise InvalidInput(
            "promptText", f"is {units} UTF-16 code units, over the {MAX_PROMPT_UTF16_UNITS} limit"
        )
    return prompt


def _ratio(body: dict[str, Any]) -> str:
    ratio = body.get("ratio")
    if ratio is None:
        raise InvalidInput("ratio", f"is required: one of {', '.join(RATIOS)}")
    if not isinstance(ratio, str) or ratio not in RATIOS:
        raise InvalidInput("ratio", f"{ratio!r} is not supported; use one of {', '.join(RATIOS)}")
    return RATIOS[ratio]


def parse_runway_text_submit(spec: ModelSpec, body: Any) -> SubmitInput:
    """A ``POST /v1/text_to_video`` body: ``promptText`` (required), ``ratio``, ``duration``, ``seed``."""
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    if body.get("promptImage") is not None:
        raise InvalidInput("promptImage", "is not taken by text_to_video; use POST /v1/image_to_video")
    return SubmitInput(
        prompt=_prompt_text(body, required=True),
        image=None,
        aspect_ratio=_ratio(body),
        duration=_duration(spec, body),
        seed=_seed(body),
        negative_prompt=None,
        enable_sync_mode=False,
        enable_base64_output=False,
    )


def parse_runway_submit(spec: ModelSpec, body: Any) -> SubmitInput:
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")

    prompt = _prompt_text(body, required=False)
    image = _prompt_image(body.get("promptImage"))
    aspect_ratio = _ratio(body)

    return SubmitInput(
        prompt=prompt,
        image=image,
        aspect_ratio=aspect_ratio,
        duration=_duration(spec, body),
        seed=_seed(body),
        negative_prompt=None,
        enable_sync_mode=False,
        enable_base64_output=False,
    )


def _recorded_uri(uri: Any) -> Any:
    if isinstance(uri, str) and _SCHEME.match(uri) is None:
        return f"<inline image, {len(uri)} characters>"
    return uri


def recorded_runway_input(body: dict[str, Any]) -> dict[str, Any]:
    """The input as stored: inline image data is not repeated, URLs and runway:// URIs are."""
    recorded = dict(body)
    image = recorded.get("promptImage")
    if isinstance(image, list):
        recorded["promptImage"] = [
            {**item, "uri": _recorded_uri(item.get("uri"))} if isinstance(item, dict) else item
            for item in image
        ]
    else:
        recorded["promptImage"] = _recorded_uri(image)
    return recorded


RUNWAY = SubmitDialect("runway", parse_runway_submit, recorded_runway_input, image_field="promptImage")
RUNWAY_TEXT = SubmitDialect("runway-t2v", parse_runway_text_submit, dict)
