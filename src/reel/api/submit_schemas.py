"""The request bodies of the submit routes, built from the model registry.

Each model id gets its own input schema (``POST /api/v3/{model}``): the fields it takes, their
types, enums, ranges and defaults, from its ``models.toml`` entry, so the document follows the
registry. The rules are the ones ``reel.predictions.inputs`` enforces (the contract tests
check that the server rejects what these schemas reject): a field the server reads as absent
when ``null`` is nullable here, unknown fields are ignored (``additionalProperties``).

A model that takes no ``image`` (text-to-video) needs only ``IMAGE`` left out of its fields:
:func:`submit_model` builds the rest the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from reel.catalog.registry import ModelSpec
from reel.media.images import OUTPUT_SIZES
from reel.predictions.inputs import MAX_PROMPT_CHARS, MAX_SEED
from reel.predictions.lora_inputs import MAX_PATH_CHARS, MAX_SCALE
from reel.predictions.runway_inputs import (
    MAX_PROMPT_UTF16_UNITS,
    RATIOS,
    RUNWAY_DURATIONS,
    RUNWAY_MODELS,
    RUNWAY_TEXT_MODELS,
)

NOT_BLANK = r"\S"
"""The server strips strings before checking they are non-empty."""

IMAGE_DESCRIPTION = (
    "the first frame: an http(s) URL, a download_url from an upload made with the same key, "
    "a data:image/...;base64, URI or bare base64 (JPEG, PNG or WebP, shorter side at least 64 px)"
)


def one_of(values: Iterable[object]) -> Any:
    """``Literal[values...]``, built at run time from the registry (an enum in the schema)."""
    return Literal.__getitem__(tuple(values))


class SubmitBody(BaseModel):
    """Fields every model takes; unknown fields are ignored, as on WaveSpeed."""

    model_config = ConfigDict(extra="allow")


def _prompt_field() -> Any:
    return (
        str,
        Field(
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            pattern=NOT_BLANK,
            description="what should happen in the video",
            examples=["a slow push-in"],
        ),
    )


def _image_field() -> Any:
    return (
        str,
        Field(
            min_length=1,
            pattern=NOT_BLANK,
            description=IMAGE_DESCRIPTION,
            examples=["https://example.com/cat.jpg"],
        ),
    )


class LoraAdapter(BaseModel):
    """One LoRA adapter of a request (WaveSpeed's and fal's shape)."""

    model_config = ConfigDict(extra="allow")
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        pattern=NOT_BLANK,
        description="an https URL of a .safetensors file, a Hugging Face repo id (owner/name) "
        "or the name of a file in the server's LoRA directory",
    )
    scale: float | None = Field(default=1.0, ge=0, le=MAX_SCALE, description="the adapter's weight")


def _fields(spec: ModelSpec, *, image: bool) -> dict[str, Any]:
    ratios = one_of(OUTPUT_SIZES)
    fields: dict[str, Any] = {"prompt": _prompt_field()}
    if image:
        fields["image"] = _image_field()
    fields["aspect_ratio"] = (
        ratios | None,
        Field(
            default=None,
            description="the output's ratio; default: the one closest to the image"
            if image
            else "the output's ratio; default: 16:9 (or the one `size` names)",
        ),
    )
    if not image:
        sizes = [f"{width}*{height}" for width, height in OUTPUT_SIZES.values()]
        fields["size"] = (
            one_of(sizes) | None,
            Field(default=None, description="WaveSpeed's spelling of the output size, e.g. 1280*720"),
        )
    if spec.max_loras:
        adapters = list[LoraAdapter] | None
        fields["loras"] = (
            adapters,
            Field(default=None, max_length=spec.max_loras, description="LoRA adapters, for every expert"),
        )
        if spec.two_experts:
            for expert in ("high_noise_loras", "low_noise_loras"):
                fields[expert] = (
                    adapters,
                    Field(
                        default=None,
                        max_length=spec.max_loras,
                        description=f"LoRA adapters for the {expert.split('_')[0]}-noise expert only",
                    ),
                )
    if "duration" in spec.params:
        durations = one_of(spec.durations)
        fields["duration"] = (
            durations | None,
            Field(default=spec.default_duration, description="seconds of video"),
        )
    if "seed" in spec.params:
        fields["seed"] = (
            int | None,
            Field(default=-1, ge=-1, le=MAX_SEED, description="-1 (or absent): random"),
        )
    if "negative_prompt" in spec.params:
        fields["negative_prompt"] = (str | None, Field(default=None, description="what to avoid"))
    for name, integer in (("num_inference_steps", True), ("guidance_scale", False)):
        if name in spec.params:
            low, high = spec.ranges[name]
            fields[name] = (
                (int if integer else float) | None,
                Field(default=None, ge=low, le=high, description="default: the model's own"),
            )
    fields["enable_sync_mode"] = (
        bool | None,
        Field(default=False, description="hold the POST open until the prediction ends"),
    )
    fields["enable_base64_output"] = (
        bool | None,
        Field(default=False, description="outputs as bare base64 instead of URLs; not with ?webhook="),
    )
    return fields


def schema_name(model_id: str) -> str:
    """A component name for a model id: ``runwayml/gen4-turbo`` → ``Submit_runwayml_gen4_turbo``."""
    return "Submit_" + re.sub(r"[^A-Za-z0-9]+", "_", model_id).strip("_")


def submit_model(spec: ModelSpec, *, image: bool | None = None) -> type[BaseModel]:
    """The input schema of ``POST /api/v3/{spec.id}`` (``image``: default, unless the model is
    text-to-video)."""
    if image is None:
        image = not spec.text_to_video
    model: type[BaseModel] = create_model(
        schema_name(spec.id),
        __base__=SubmitBody,
        __doc__=f"Input of {spec.id}: {spec.title}.",
        **_fields(spec, image=image),
    )
    return model


# A 96×64 PNG (one flat colour): a complete request that works on any server, even offline.
SMALL_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAGAAAABACAIAAABqVuVZAAAAaklEQVR42u3QMQEAMAgAoLlwZjKisUzg7wERiKx+7L4CQYIECRIkSJ"
    "AgBAkSJEiQIEGCECRIkCBBggQJQpAgQYIECRIkSBCCBAkSJEiQIEEIEiRIkCBBggQhSJAgQYIECRIkCEGCBAm6ZwBtsgIGtGfgHwAA"
    "AABJRU5ErkJggg=="
)
SMALL_PNG_DATA_URI = "data:image/png;base64," + SMALL_PNG_BASE64


def submit_examples(spec: ModelSpec) -> dict[str, Any]:
    """Named examples of ``POST /api/v3/{spec.id}``: an image URL, and inline data."""
    extra: dict[str, Any] = {}
    if "duration" in spec.params:
        extra["duration"] = spec.default_duration
    if "seed" in spec.params:
        extra["seed"] = 7
    if spec.text_to_video:
        return {
            "prompt_only": {
                "summary": "A prompt alone (text-to-video)",
                "value": {"prompt": "a red fox running through snow", "aspect_ratio": "16:9", **extra},
            },
            "size": {
                "summary": "WaveSpeed's size spelling",
                "value": {"prompt": "a red fox running through snow", "size": "1280*720", **extra},
            },
        }
    return {
        "image_url": {
            "summary": "An image URL",
            "value": {
                "prompt": "a slow push-in",
                "image": "https://example.com/cat.jpg",
                "aspect_ratio": "16:9",
                **extra,
            },
        },
        "inline_image": {
            "summary": "An inline image (data URI or bare base64), the ratio closest to it",
            "value": {"prompt": "a slow push-in", "image": SMALL_PNG_DATA_URI, **extra},
        },
    }


# --- Runway's POST /v1/image_to_video ------------------------------------------------------------


class PromptImagePosition(BaseModel):
    model_config = ConfigDict(extra="allow")
    uri: str = Field(
        min_length=1, pattern=NOT_BLANK, description="an HTTPS URL, a runway:// URI or a data URI"
    )
    position: Literal["first"] = "first"


RUNWAY_CREATE_SCHEMA = "RunwayImageToVideo"


def runway_create_model(models: list[ModelSpec]) -> type[BaseModel]:
    """Runway's create body. ``model`` is Runway's name or any Reel model id; ``duration`` spans
    what the models take (gen4_turbo: 2 to 10 s; the others their own)."""
    models = [spec for spec in models if not spec.text_to_video]  # those go to /v1/text_to_video
    names = [*RUNWAY_MODELS, *(spec.id for spec in models if spec.id not in RUNWAY_MODELS.values())]
    allowed: set[int] = set()
    for spec in models:
        runway_range = RUNWAY_DURATIONS.get(spec.id)
        allowed.update(runway_range[0] if runway_range else spec.durations)
    model: type[BaseModel] = create_model(
        RUNWAY_CREATE_SCHEMA,
        __config__=ConfigDict(extra="allow"),
        __doc__="Start a task: a video from an image.",
        model=(one_of(names), Field(description="gen4_turbo, or a Reel model id")),
        promptImage=(
            Annotated[str, StringConstraints(min_length=1, pattern=NOT_BLANK)]
            | Annotated[list[PromptImagePosition], Field(min_length=1, max_length=1)],
            Field(
                description="an HTTPS URL, a runway:// URI from an upload, a data URI, "
                "or [{uri, position: 'first'}]",
            ),
        ),
        ratio=(one_of(RATIOS), Field(description="the output size in pixels")),
        promptText=(
            str | None,
            Field(
                default=None,
                min_length=1,
                max_length=MAX_PROMPT_UTF16_UNITS,
                pattern=NOT_BLANK,
                description=f"at most {MAX_PROMPT_UTF16_UNITS} UTF-16 code units",
            ),
        ),
        duration=(
            one_of(sorted(allowed)) | None,
            Field(
                default=None,
                description="seconds: 2 to 10 for gen4_turbo (default 10); other models their own",
            ),
        ),
        seed=(int | None, Field(default=None, ge=0, le=MAX_SEED)),
    )
    return model


RUNWAY_CREATE_EXAMPLES = {
    "image_url": {
        "summary": "An image URL",
        "value": {
            "model": "gen4_turbo",
            "promptImage": "https://example.com/cat.jpg",
            "ratio": "1280:720",
            "promptText": "a slow push-in",
            "duration": 5,
        },
    },
    "inline_image": {
        "summary": "A data URI at position 'first'",
        "value": {
            "model": "gen4_turbo",
            "promptImage": [{"uri": SMALL_PNG_DATA_URI, "position": "first"}],
            "ratio": "960:960",
            "duration": 2,
            "seed": 7,
        },
    },
}


# --- Runway's POST /v1/text_to_video ---------------------------------------------------------------

RUNWAY_TEXT_SCHEMA = "RunwayTextToVideo"


def runway_text_model(models: list[ModelSpec]) -> type[BaseModel]:
    """Runway's text-to-video body: ``model`` is Runway's name (gen4.5) or a Reel t2v model id."""
    text_models = [spec for spec in models if spec.text_to_video]
    names = [
        *(name for name, reel_id in RUNWAY_TEXT_MODELS.items() if any(s.id == reel_id for s in text_models)),
        *(spec.id for spec in text_models if spec.id not in RUNWAY_TEXT_MODELS.values()),
    ]
    allowed: set[int] = set()
    for spec in text_models:
        runway_range = RUNWAY_DURATIONS.get(spec.id)
        allowed.update(runway_range[0] if runway_range else spec.durations)
    model: type[BaseModel] = create_model(
        RUNWAY_TEXT_SCHEMA,
        __config__=ConfigDict(extra="allow"),
        __doc__="Start a task: a video from a prompt alone.",
        model=(one_of(names or ["gen4.5"]), Field(description="gen4.5, or a Reel text-to-video model id")),
        promptText=(
            str,
            Field(
                min_length=1,
                max_length=MAX_PROMPT_UTF16_UNITS,
                pattern=NOT_BLANK,
                description=f"at most {MAX_PROMPT_UTF16_UNITS} UTF-16 code units",
            ),
        ),
        ratio=(one_of(RATIOS), Field(description="the output size in pixels")),
        duration=(
            one_of(sorted(allowed or {5})) | None,
            Field(default=None, description="seconds: 2 to 10 for gen4.5 (default 10)"),
        ),
        seed=(int | None, Field(default=None, ge=0, le=MAX_SEED)),
    )
    return model


RUNWAY_TEXT_EXAMPLE = {
    "model": "gen4.5",
    "promptText": "a red fox running through snow",
    "ratio": "1280:720",
    "duration": 5,
}
