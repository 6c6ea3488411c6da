"""Which model ids Reel serves, what each accepts, and which backend generates it."""

from __future__ import annotations

from dataclasses import dataclass, field

from reel.backends.base import Backend
from reel.backends.sandbox import SandboxBackend


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str
    durations: tuple[int, ...] = (5, 10)
    default_duration: int = 5
    fps: int = 24
    params: frozenset[str] = field(default_factory=frozenset)
    """Optional model-specific fields accepted besides prompt, image and aspect_ratio."""


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="runwayml/gen4-turbo",
            title="Gen-4 Turbo compatible image-to-video",
            params=frozenset({"duration", "seed"}),
        ),
        ModelSpec(
            id="wavespeed-ai/wan-2.2/i2v-720p",
            title="Wan 2.2 image-to-video, 720p",
            durations=(5, 8),
            params=frozenset({"duration", "seed", "negative_prompt"}),
        ),
    )
}


def get_spec(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)


def build_backends(*, sandbox: bool) -> dict[str, Backend]:
    """One backend per served model id.

    Real diffusers backends arrive with the model registry file (issue 3); until then every
    id is served by the sandbox, whatever ``sandbox`` says, and start-up logs say so.
    """
    del sandbox  # every model is sandboxed for now
    shared = SandboxBackend()
    return {model_id: shared for model_id in MODELS}
