"""Tiny random-weight model directories for tests and demos (``reel models make-tiny``).

They are complete diffusers model directories written by the real classes' ``save_pretrained``
(transformer(s), VAE, text encoder, tokenizer, scheduler, and for Wan 2.1 the CLIP image
encoder and its processor), so loading and generation run the same code as real checkpoints,
on a CPU, in a fraction of a second per step. Their videos are noise: they test plumbing, not
quality.
"""

from __future__ import annotations

from pathlib import Path

from reel.catalog.families import FAMILIES

TINY_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    # Generation sizes that suit the tiny models (multiples of each family's size grid).
    "wan2.2-ti2v": {"16:9": (64, 32), "9:16": (32, 64), "4:3": (64, 64), "3:4": (64, 64), "1:1": (64, 64)},
    "wan2.1-i2v": {"16:9": (48, 32), "9:16": (32, 48), "4:3": (48, 32), "3:4": (32, 48), "1:1": (32, 32)},
    "wan2.2-i2v-a14b": {
        "16:9": (48, 32),
        "9:16": (32, 48),
        "4:3": (48, 32),
        "3:4": (32, 48),
        "1:1": (32, 32),
    },
    "ltx-video": {"16:9": (64, 32), "9:16": (32, 64), "4:3": (64, 64), "3:4": (64, 64), "1:1": (64, 64)},
}


def make_tiny(directory: Path, family: str, *, seed: int = 0) -> Path:
    """Write a tiny ``family`` model into ``directory`` (created; must be empty or absent)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty")
    import diffusers
    import transformers

    from reel.backends.diffusers.components import build_pipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipe = build_pipeline(family, "tiny", seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def registry_snippet(model_id: str, directory: Path, family: str) -> str:
    """A ``[models."ID"]`` table serving the tiny model (for REEL_MODELS_FILE)."""
    sizes = ", ".join(f'"{ratio}" = [{w}, {h}]' for ratio, (w, h) in TINY_SIZES[family].items())
    frame_multiple = FAMILIES[family].frame_multiple
    return "\n".join(
        [
            f'[models."{model_id}"]',
            f'title = "Tiny {FAMILIES[family].title} (random weights, for tests)"',
            f'family = "{family}"',
            f'weights = "{directory.resolve()}"',
            "fps = 8",
            "durations = [1, 2]",
            'params = ["duration", "seed", "negative_prompt", "num_inference_steps", "guidance_scale"]',
            "ranges = { num_inference_steps = [1, 1000] }",
            f"max_frames = {2 * frame_multiple + 1}",
            "num_inference_steps = 2",
            "guidance_scale = 5.0",
            'dtype = "float32"',
            'vae_dtype = "float32"',
            "compile = false",
            'attention_backend = ""',
            f"sizes = {{ {sizes} }}",
            "",
        ]
    )
