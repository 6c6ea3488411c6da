"""Tiny random-weight model directories for tests and demos (``reel models make-tiny``).

They are complete diffusers model directories written by the real classes' ``save_pretrained``
(transformer(s), VAE, text encoder, tokenizer, scheduler, and for Wan 2.1 the CLIP image
encoder and its processor), so loading and generation run the same code as real checkpoints,
on a CPU, in a fraction of a second per step. Their videos are noise: they test plumbing, not
quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


DISTILLED_PIPELINE = "WanDMDPipeline"
"""What the tiny distilled TI2V model's model_index.json names: a FastVideo class diffusers
lacks, as the published FastWan checkpoint's does, so loading goes through its parts."""
LORA_FOLDER = "distill_lora"
LORA_FILES = {
    "wan2.1-i2v": ("lora.safetensors", ""),
    "wan2.2-i2v-a14b": ("high_noise.safetensors", "low_noise.safetensors"),
}
"""Tiny distillation LoRA files per 14B family: (the transformer's, the low-noise expert's)."""
TURBO_STEPS = {"wan2.2-ti2v": 3, "wan2.1-i2v": 4, "wan2.2-i2v-a14b": 4}


def make_tiny(directory: Path, family: str, *, seed: int = 0, turbo: bool = False) -> Path:
    """Write a tiny ``family`` model into ``directory`` (created; must be empty or absent).

    ``turbo``: for wan2.2-ti2v, a "distilled" checkpoint laid out as FastWan's (its index
    names a pipeline class diffusers lacks); for a 14B family, the model plus a tiny
    step-distillation LoRA in ``distill_lora/`` (diffusers' key format). Random weights either
    way: what is tested is the turbo path's plumbing, not distillation.
    """
    if turbo and family not in TURBO_STEPS:
        raise ValueError(f"--turbo: {family} has no turbo tier; use one of {', '.join(TURBO_STEPS)}")
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
    if turbo and family == "wan2.2-ti2v":
        index_path = directory / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = DISTILLED_PIPELINE
        index_path.write_text(json.dumps(index, indent=2))
    elif turbo:
        _write_tiny_lora(directory / LORA_FOLDER, pipe, family, seed)
    return directory


def _write_tiny_lora(folder: Path, pipe: Any, family: str, seed: int) -> None:
    """Rank-2 LoRA weights on every self-attention projection, one file per transformer."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    generator = torch.Generator().manual_seed(seed + 1)
    transformers = [pipe.transformer, getattr(pipe, "transformer_2", None)]
    for file, transformer in zip(LORA_FILES[family], transformers, strict=True):
        if not file or transformer is None:
            continue
        tensors: dict[str, Any] = {}
        for name, module in transformer.named_modules():
            if ".attn1." in f".{name}" and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
                out_f, in_f = module.weight.shape
                tensors[f"transformer.{name}.lora_A.weight"] = torch.randn(2, in_f, generator=generator) * 0.1
                tensors[f"transformer.{name}.lora_B.weight"] = (
                    torch.randn(out_f, 2, generator=generator) * 0.1
                )
        save_file(tensors, str(folder / file))


def registry_snippet(model_id: str, directory: Path, family: str, *, turbo: bool = False) -> str:
    """A ``[models."ID"]`` table serving the tiny model (for REEL_MODELS_FILE)."""
    if turbo:
        return turbo_snippet(model_id, directory, family)
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


def turbo_snippet(model_id: str, directory: Path, family: str) -> str:
    """The registry table of a tiny turbo model (``make_tiny(..., turbo=True)``)."""
    base = registry_snippet(model_id, directory, family).replace('title = "Tiny ', 'title = "Tiny turbo ')
    lines = [
        line
        for line in base.splitlines()
        if not line.startswith(("num_inference_steps", "guidance_scale", "params", "ranges"))
    ]
    lines[-1:-1] = [
        'params = ["duration", "seed"]',
        f"num_inference_steps = {TURBO_STEPS[family]}",
        "guidance_scale = 1.0",
    ]
    if family == "wan2.2-ti2v":
        lines.insert(-1, 'sampler = "dmd"')
    else:
        high, low = LORA_FILES[family]
        lines.insert(-1, f'distill_lora = "{(directory / LORA_FOLDER).resolve()}"')
        lines.insert(-1, f'distill_lora_file = "{high}"')
        if low:
            lines.insert(-1, f'distill_lora_2_file = "{low}"')
    return "\n".join(lines) + "\n"
