"""Build a family's complete diffusers pipeline from configs, with random weights.

Two sizes:

``tiny``
    A few thousand parameters per component: what ``reel models make-tiny`` saves with
    ``save_pretrained`` so CPU tests run the real loading and generation code end to end.
``full``
    The real architectures (the configs of the published checkpoints), built directly on the
    target device and filled with small random normals: what ``bench/diffusers_speed.py``
    times. Speed does not depend on weight values, so nothing is downloaded.

Every component is the real class the published checkpoints load into (UMT5 / T5 encoders,
CLIP vision encoder, the Wan and LTX transformers and VAEs, the checkpoints' schedulers). The
tokenizer is the one piece built differently: the published tokenizers cannot be downloaded
here, so a byte-level tokenizer (each UTF-8 byte one token, no merges) is made locally with
the ``tokenizers`` library; only token ids depend on it, never a tensor shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch

from reel.catalog.families import FAMILIES

Size = Literal["tiny", "full"]

# --- full-size configs (diffusers scripts/convert_wan_to_diffusers.py and the published repos) ---------
WAN21_I2V_14B: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,
    in_channels=36,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=1280,
    added_kv_proj_dim=5120,
    rope_max_seq_len=1024,
)
WAN22_A14B = dict(WAN21_I2V_14B, image_dim=None, added_kv_proj_dim=None)
WAN22_TI2V_5B = dict(
    WAN21_I2V_14B,
    num_attention_heads=24,
    ffn_dim=14336,
    num_layers=30,
    in_channels=48,
    out_channels=48,
    image_dim=None,
    added_kv_proj_dim=None,
)
WAN21_VAE: dict[str, Any] = {}
WAN22_VAE: dict[str, Any] = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    patch_size=2,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
UMT5_XXL: dict[str, Any] = dict(
    d_model=4096,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    d_kv=64,
    vocab_size=256384,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
)
T5_XXL: dict[str, Any] = dict(UMT5_XXL, vocab_size=32128)
CLIP_VIT_H14: dict[str, Any] = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=1024,
    hidden_act="gelu",
)
LTX_TRANSFORMER: dict[str, Any] = {}  # LTXVideoTransformer3DModel() defaults = LTX-Video 0.9.x 2B
LTX_VAE: dict[str, Any] = {}  # AutoencoderKLLTXVideo() defaults = LTX-Video 0.9.0/0.9.1 VAE

# --- tiny configs -----------------------------------------------------------------------------------------
TINY_TEXT: dict[str, Any] = dict(
    d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, relative_attention_num_buckets=8
)
TINY_WAN: dict[str, Any] = dict(
    WAN21_I2V_14B,
    num_attention_heads=2,
    attention_head_dim=8,
    text_dim=32,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    image_dim=16,
    added_kv_proj_dim=16,  # must equal heads x head_dim
    rope_max_seq_len=64,
)
TINY_WAN21_VAE: dict[str, Any] = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
TINY_WAN22_VAE: dict[str, Any] = dict(WAN22_VAE, base_dim=8, decoder_base_dim=8, dim_mult=[1, 1, 1, 1])
TINY_CLIP: dict[str, Any] = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
    projection_dim=16,
)
TINY_LTX_TRANSFORMER: dict[str, Any] = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    num_layers=2,
    caption_channels=32,
)
TINY_LTX_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False),
    decoder_inject_noise=(False, False, False, False, False),
    upsample_residual=(False, False, False, False),
    upsample_factor=(1, 1, 1, 1),
    timestep_conditioning=False,
    patch_size=4,
    patch_size_t=1,
    encoder_causal=True,
    decoder_causal=False,
)
"""Same compression as the real VAE (32x spatial, 8x temporal) at a few channels."""

WAN_SCHEDULER: dict[str, Any] = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
)
LTX_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    shift=1.0,
    shift_terminal=0.1,
    use_dynamic_shifting=True,
    time_shift_type="exponential",
)


def byte_tokenizer() -> Any:
    """A tokenizer with one token per UTF-8 byte (plus pad, eos and unk), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


BYTE_VOCAB = 259
"""Token count of :func:`byte_tokenizer` (256 bytes + 3 specials): tiny text encoders use it."""


@contextlib.contextmanager
def _building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create modules directly on ``device`` with parameters in ``dtype`` (no CPU copy first)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(old)


def _randomise(model: torch.nn.Module, keep_fp32: list[str]) -> None:
    """Small random normals everywhere (never zeros): activations stay O(1) through the layers.

    As ``from_pretrained(torch_dtype=...)`` does, modules the class keeps in fp32 stay fp32.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name.split(".") for part in keep_fp32):
                param.data = param.data.float()
            if "norm" in name or name.endswith("gamma"):
                param.normal_(1.0 if name.endswith(("weight", "gamma")) else 0.0, 0.02)
            else:
                param.normal_(0.0, param[0].numel() ** -0.5 if param.ndim > 1 else 0.02)


def _make(factory: Callable[[], Any], device: torch.device, dtype: torch.dtype, *, randomise: bool) -> Any:
    with _building_on(device, dtype):
        model = factory()
    if randomise:
        _randomise(model, list(getattr(model, "_keep_in_fp32_modules", None) or []))
    return model.eval().requires_grad_(False)


def build_pipeline(
    family: str,
    size: Size = "tiny",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = None,
    text_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> Any:
    """A complete pipeline of ``family`` with random weights (see the module docstring)."""
    import diffusers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        T5Config,
        T5EncoderModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    dev = torch.device(device)
    full = size == "full"
    vae_dtype = vae_dtype or (torch.float32 if full else dtype)
    text_dtype = text_dtype or dtype
    # Tiny models keep the default init (seeded); full-size ones are filled with scaled normals,
    # which is much faster than the default init of billions of parameters.
    randomise = full
    torch.manual_seed(seed)

    def make(factory: Callable[[], Any], dt: torch.dtype) -> Any:
        return _make(factory, dev, dt, randomise=randomise)

    tokenizer = byte_tokenizer()
    if family == "ltx-video":
        text_cfg = T5_XXL if full else dict(TINY_TEXT, vocab_size=BYTE_VOCAB)
        transformer_cfg = LTX_TRANSFORMER if full else TINY_LTX_TRANSFORMER
        vae_cfg = LTX_VAE if full else TINY_LTX_VAE
        vae = make(lambda: diffusers.AutoencoderKLLTXVideo(**vae_cfg), vae_dtype)
        if not full:
            vae.use_framewise_encoding = False
            vae.use_framewise_decoding = False
        return diffusers.LTXImageToVideoPipeline(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER),
            vae=vae,
            text_encoder=make(lambda: T5EncoderModel(T5Config(**text_cfg)), text_dtype),
            tokenizer=tokenizer,
            transformer=make(lambda: diffusers.LTXVideoTransformer3DModel(**transformer_cfg), dtype),
        )

    text_cfg = UMT5_XXL if full else dict(TINY_TEXT, vocab_size=BYTE_VOCAB)
    text_encoder = make(lambda: UMT5EncoderModel(UMT5Config(**text_cfg)), text_dtype)
    scheduler = diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER)
    kwargs: dict[str, Any] = {}
    if family == "wan2.2-ti2v":
        transformer_cfg = WAN22_TI2V_5B if full else dict(TINY_WAN, in_channels=48, out_channels=48)
        if not full:
            transformer_cfg.update(image_dim=None, added_kv_proj_dim=None)
        vae_cfg = WAN22_VAE if full else TINY_WAN22_VAE
        kwargs.update(expand_timesteps=True)
    elif family == "wan2.1-i2v":
        transformer_cfg = WAN21_I2V_14B if full else TINY_WAN
        vae_cfg = WAN21_VAE if full else TINY_WAN21_VAE
        clip_cfg = CLIP_VIT_H14 if full else TINY_CLIP
        kwargs.update(
            image_encoder=make(lambda: CLIPVisionModel(CLIPVisionConfig(**clip_cfg)), torch.float32),
            image_processor=CLIPImageProcessor(
                crop_size=clip_cfg["image_size"], size={"shortest_edge": clip_cfg["image_size"]}
            ),
        )
    else:  # wan2.2-i2v-a14b: two experts, no image encoder
        transformer_cfg = WAN22_A14B if full else dict(TINY_WAN, image_dim=None, added_kv_proj_dim=None)
        vae_cfg = WAN21_VAE if full else TINY_WAN21_VAE
        kwargs.update(
            transformer_2=make(lambda: diffusers.WanTransformer3DModel(**transformer_cfg), dtype),
            boundary_ratio=0.9,
        )
    return diffusers.WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=make(lambda: diffusers.AutoencoderKLWan(**vae_cfg), vae_dtype),
        scheduler=scheduler,
        transformer=make(lambda: diffusers.WanTransformer3DModel(**transformer_cfg), dtype),
        **kwargs,
    )
