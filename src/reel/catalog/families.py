"""The model families Reel runs through diffusers, and what each one's pipeline needs.

A family fixes the diffusers pipeline class and the shape rules its checkpoints share; the
registry file (``models.toml``) picks a family, weights and defaults for each API model id.
Pure Python: importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    pipeline: str
    """The diffusers pipeline class every checkpoint of this family is loaded with."""
    frame_multiple: int
    """Generated frame counts are ``k * frame_multiple + 1`` (the VAE's temporal compression)."""
    size_multiple: int
    """Width and height must be multiples of this (VAE spatial compression x patch size)."""
    long_clips: str
    """How a clip longer than ``max_frames`` is made: ``native`` (one pass) or ``chained``."""
    default_repo: str
    components: tuple[str, ...]
    """Components a complete model directory holds (model_index.json names)."""
    weighted: tuple[str, ...]
    """The components that carry weight files (the rest are configs or tokenizer files)."""


WAN_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "transformer", "vae")

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="wan2.2-ti2v",
            title="Wan 2.2 TI2V-5B",
            pipeline="WanImageToVideoPipeline",
            frame_multiple=4,
            size_multiple=32,
            long_clips="chained",
            default_repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            components=WAN_COMPONENTS,
            weighted=("text_encoder", "transformer", "vae"),
        ),
        Family(
            name="wan2.1-i2v",
            title="Wan 2.1 I2V 14B",
            pipeline="WanImageToVideoPipeline",
            frame_multiple=4,
            size_multiple=16,
            long_clips="chained",
            default_repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            components=(*WAN_COMPONENTS, "image_encoder", "image_processor"),
            weighted=("text_encoder", "transformer", "vae", "image_encoder"),
        ),
        Family(
            name="wan2.2-i2v-a14b",
            title="Wan 2.2 I2V A14B (two experts)",
            pipeline="WanImageToVideoPipeline",
            frame_multiple=4,
            size_multiple=16,
            long_clips="chained",
            default_repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
            components=(*WAN_COMPONENTS, "transformer_2"),
            weighted=("text_encoder", "transformer", "transformer_2", "vae"),
        ),
        Family(
            name="ltx-video",
            title="LTX-Video 0.9.x",
            pipeline="LTXImageToVideoPipeline",
            frame_multiple=8,
            size_multiple=32,
            long_clips="native",
            default_repo="Lightricks/LTX-Video",
            components=("scheduler", "text_encoder", "tokenizer", "transformer", "vae"),
            weighted=("text_encoder", "transformer", "vae"),
        ),
    )
}


def generated_frames(wanted: int, frame_multiple: int) -> int:
    """The smallest frame count of the form ``k * frame_multiple + 1`` that holds ``wanted``."""
    if wanted <= 1:
        return 1
    return -(-(wanted - 1) // frame_multiple) * frame_multiple + 1


def segment_plan(total: int, max_frames: int, frame_multiple: int) -> list[tuple[int, int]]:
    """How to make ``total`` frames with generations of at most ``max_frames`` each.

    Returns ``(generate, keep)`` per segment: the frame count to generate (a valid count for the
    family) and how many of its frames go to the output. Every segment after the first starts
    from the previous segment's last frame, so its first generated frame is that frame again
    and is not kept twice.
    """
    if total < 1:
        raise ValueError(f"a clip needs at least one frame, got {total}")
    longest = (max_frames - 1) // frame_multiple * frame_multiple + 1
    plan: list[tuple[int, int]] = []
    remaining = total
    first = True
    while remaining > 0:
        # A continuation's first frame repeats the previous last frame: it needs one extra.
        need = remaining if first else remaining + 1
        generate = min(generated_frames(need, frame_multiple), longest)
        keep = min(remaining, generate if first else generate - 1)
        if keep <= 0:
            raise ValueError(f"max_frames {max_frames} is too small to continue a clip")
        plan.append((generate, keep))
        remaining -= keep
        first = False
    return plan
