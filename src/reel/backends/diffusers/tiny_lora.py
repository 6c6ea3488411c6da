"""Tiny random LoRA adapters for the tiny test models (``reel models make-tiny-lora``).

The adapter is made the way a trainer makes one: PEFT's ``LoraConfig`` on the tiny
transformer of the family (the architecture ``reel models make-tiny`` writes), saved with the
pipeline's ``save_lora_weights`` as ``pytorch_lora_weights.safetensors``-style diffusers keys.
Its weights are random (not zero-initialised), so it visibly changes a tiny model's output;
different seeds give different adapters.
"""

from __future__ import annotations

from pathlib import Path

LORA_FAMILIES = ("wan2.2-ti2v", "wan2.1-i2v", "wan2.2-i2v-a14b")
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


def make_tiny_lora(directory: Path, family: str, *, seed: int = 0, rank: int = 4, name: str = "") -> Path:
    """Write a LoRA for the tiny ``family`` transformer into ``directory``; returns the file."""
    if family not in LORA_FAMILIES:
        raise ValueError(f"no LoRA support for {family!r}; use one of {', '.join(LORA_FAMILIES)}")
    import torch
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from reel.backends.diffusers.components import build_pipeline

    transformer = build_pipeline(family, "tiny").transformer
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES, init_lora_weights=False)
    transformer.add_adapter(config)
    with torch.no_grad():  # lora_B is random too: an adapter that changes the output
        for parameter_name, parameter in transformer.named_parameters():
            if "lora_" in parameter_name:
                parameter.normal_(0.0, 0.5)
    layers = get_peft_model_state_dict(transformer)
    directory.mkdir(parents=True, exist_ok=True)
    weight_name = f"{name or f'tiny-{family}-lora-{seed}'}.safetensors"
    WanImageToVideoPipeline.save_lora_weights(
        str(directory), transformer_lora_layers=layers, weight_name=weight_name
    )
    return directory / weight_name
