"""The turbo tier: Reel's few-step sampler for DMD-distilled Wan 2.2 TI2V-5B checkpoints, and a
VAE decode that streams temporal chunks into the encoder.

FastVideo's ``FastWan2.2-TI2V-5B-FullAttn-Diffusers`` is the TI2V-5B architecture distilled
with DMD (distribution matching distillation) to three steps. Its ``model_index.json`` names a
FastVideo pipeline class that diffusers does not have, so :func:`load_parts` loads each part
with the class its folder's config names (``WanTransformer3DModel``, ``AutoencoderKLWan``, the
UMT5 encoder, the tokenizer) and assembles diffusers' ``WanImageToVideoPipeline`` around them,
for its helpers only (prompt encoding, image preprocessing, latent preparation); the
denoising loop is :func:`sample_dmd`.

The DMD loop, per published timestep ``t`` (1000, 757, 522) with noise level ``sigma = t/1000``
(flow matching trains on ``x_t = (1 - sigma) x0 + sigma noise`` and the model predicts the
velocity ``noise - x0``):

1. one transformer call, conditional only: the student was distilled with guidance baked in,
   so there is no classifier-free guidance and no negative prompt;
2. the clean estimate ``x0 = x_t - sigma * velocity``;
3. before the next step, re-noise that estimate to the next timestep's level with fresh noise
   from the request's generator, ``x = (1 - sigma_next) x0 + sigma_next noise`` (the
   distillation trains each step from a re-noised clean estimate, not from an ODE step);
   after the last step the clean estimate is the result.

Image conditioning is TI2V's: the first latent frame is the encoded input image, kept clean
(timestep 0 for its tokens) at every step, as diffusers' pipeline does for ``expand_timesteps``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

NUM_TRAIN_TIMESTEPS = 1000


def dmd_sigmas(timesteps: Sequence[int]) -> list[float]:
    """The noise level of each distillation timestep (flow matching: ``t = 1000 * sigma``)."""
    return [t / NUM_TRAIN_TIMESTEPS for t in timesteps]


def load_parts(path: Path, dtypes: dict[str, torch.dtype]) -> Any:
    """A ``WanImageToVideoPipeline`` (TI2V mode) from a checkpoint whose pipeline class diffusers
    lacks: every component loads with the library class its ``model_index.json`` entry names."""
    import importlib

    import diffusers
    import transformers

    index = json.loads((path / "model_index.json").read_text())
    parts: dict[str, Any] = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        library, class_name = entry
        try:
            cls = getattr(importlib.import_module(library), class_name)
        except (ImportError, AttributeError):
            cls = None
        folder = str(path / name)
        if name == "scheduler":
            # The DMD loop never steps a scheduler: a FastVideo-only class must not stop loading.
            parts[name] = (cls or diffusers.FlowMatchEulerDiscreteScheduler).from_pretrained(folder)
        elif name == "tokenizer":
            parts[name] = (cls or transformers.AutoTokenizer).from_pretrained(folder)
        elif cls is None:
            raise ValueError(f"{path}/model_index.json: {name} is a {library}.{class_name}, not installed")
        else:
            dtype = dtypes.get(name, dtypes["default"])
            parts[name] = cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    wanted = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")
    missing = [name for name in wanted if name not in parts]
    if missing:
        raise ValueError(f"{path}/model_index.json lacks {', '.join(missing)}")
    return diffusers.WanImageToVideoPipeline(**{name: parts[name] for name in wanted}, expand_timesteps=True)


def checkpoint_pipeline_class(path: Path) -> str:
    """The pipeline class a checkpoint's ``model_index.json`` names."""
    return str(json.loads((path / "model_index.json").read_text()).get("_class_name", ""))


def sample_dmd(
    pipe: Any,
    *,
    image: Image.Image,
    height: int,
    width: int,
    num_frames: int,
    prompt_embeds: torch.Tensor,
    timesteps: Sequence[int],
    generator: torch.Generator,
    on_step: Callable[[int], None],
) -> torch.Tensor:
    """Denoise one clip with the DMD few-step loop (module docstring); returns its latents
    (normalised, first frame = the image's), ready for :func:`decode_frames`.

    ``on_step(i)`` runs after step ``i``: progress, and a cancel raised there stops the loop.
    """
    from diffusers.utils.torch_utils import randn_tensor

    transformer = pipe.transformer
    device = pipe._execution_device
    dtype = transformer.dtype
    with torch.no_grad():
        pixels = pipe.video_processor.preprocess(image, height=height, width=width)
        latents, condition, mask = pipe.prepare_latents(
            pixels.to(device, dtype=torch.float32),
            1,
            pipe.vae.config.z_dim,
            height,
            width,
            num_frames,
            torch.float32,
            device,
            generator,
        )
        _, patch_h, patch_w = transformer.config.patch_size
        token_mask = mask[0][0][:, ::patch_h, ::patch_w].flatten()  # 0 on the image's tokens
        embeds = prompt_embeds.to(device, dtype)
        sigmas = dmd_sigmas(timesteps)
        for i, (t, sigma) in enumerate(zip(timesteps, sigmas, strict=True)):
            noisy = (1 - mask) * condition + mask * latents
            # A named cache context, as diffusers' pipelines give it: step-cache hooks need one.
            with transformer.cache_context("cond"):
                velocity = transformer(
                    hidden_states=noisy.to(dtype),
                    timestep=(token_mask * t).unsqueeze(0),
                    encoder_hidden_states=embeds,
                    return_dict=False,
                )[0]
            clean = noisy - sigma * velocity.float()
            if i + 1 < len(timesteps):
                noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=torch.float32)
                latents = (1 - sigmas[i + 1]) * clean + sigmas[i + 1] * noise
            else:
                latents = clean
            on_step(i)
        return (1 - mask) * condition + mask * latents


def _denormalised(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    config = vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1)
    std = torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1)
    latents = latents.to(vae.device, vae.dtype)
    return latents * std.to(latents) + mean.to(latents)


def decode_frames(
    vae: Any, latents: torch.Tensor, chunk: int = 0, *, stream: bool = True
) -> Iterator[torch.Tensor]:
    """Decode normalised Wan latents to video, ``(frames, 3, H, W)`` in [0, 1] per piece.

    The Wan VAE decodes causally, one latent frame at a time with a feature cache. With
    ``stream`` (the VAE fully on its device, no tiling) this runs that loop here with a cache of
    its own: pieces of ``chunk`` latent frames (0 = the whole clip) are handed out as they are
    decoded, so the caller encodes them while the rest decode, with the same output as
    ``vae.decode`` (the same calls, without the final concatenation). A private cache also
    means a decode here may run while another thread encodes an image with the same VAE
    (``vae.encode`` resets the VAE's own cache). Needs diffusers' Wan VAE internals (0.35+);
    without ``stream`` or without them it is one ``vae.decode`` call.
    """
    with torch.no_grad():
        z = _denormalised(vae, latents)
        counts = getattr(vae, "_cached_conv_counts", None)
        if not stream or getattr(vae, "use_tiling", False) or not counts or "decoder" not in counts:
            yield _to_unit(vae.decode(z, return_dict=False)[0])
            return
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        feat_cache: list[Any] = [None] * counts["decoder"]
        x = vae.post_quant_conv(z)
        frames = x.shape[2]
        per_piece = chunk if chunk > 0 else frames
        pieces: list[torch.Tensor] = []
        for i in range(frames):
            pieces.append(
                vae.decoder(
                    x[:, :, i : i + 1],
                    feat_cache=feat_cache,
                    feat_idx=[0],
                    **({"first_chunk": True} if i == 0 else {}),
                )
            )
            if len(pieces) == per_piece or i == frames - 1:
                out = torch.cat(pieces, dim=2)
                pieces = []
                if vae.config.patch_size is not None:
                    out = unpatchify(out, patch_size=vae.config.patch_size)
                yield _to_unit(torch.clamp(out, min=-1.0, max=1.0))


def _to_unit(video: torch.Tensor) -> torch.Tensor:
    """``(1, 3, F, H, W)`` in [-1, 1] -> ``(F, 3, H, W)`` in [0, 1] (what ``fit_frames`` takes)."""
    return ((video[0].float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3)
