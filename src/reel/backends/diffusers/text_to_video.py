"""Text-to-video with an image-to-video pipeline's weights: the same components, no image.

Wan 2.2 TI2V-5B is text-and-image-to-video by design and LTX-Video has a text-to-video
pipeline too: diffusers' ``WanPipeline`` / ``LTXPipeline`` constructed from the loaded
image-to-video pipeline's components and config share every component (no second copy of the weights, the same
LoRA adapters, the same compiled blocks). Made on first use and kept with the loaded pipeline.
A clip longer than one generation continues from its last frame with the image-to-video
pipeline, as image-to-video clips do.
"""

from __future__ import annotations

import inspect
from typing import Any

TEXT_PIPELINES = {"WanImageToVideoPipeline": "WanPipeline", "LTXImageToVideoPipeline": "LTXPipeline"}


def text_pipeline(loaded: Any) -> Any:
    """The text-to-video pipeline sharing ``loaded.pipe``'s components, with its current scheduler."""
    import diffusers

    pipe = getattr(loaded, "text_pipe", None)
    if pipe is None:
        name = TEXT_PIPELINES.get(type(loaded.pipe).__name__)
        if name is None:
            raise ValueError(f"{type(loaded.pipe).__name__} has no text-to-video counterpart")
        pipe = _sharing(getattr(diffusers, name), loaded.pipe)
        pipe.set_progress_bar_config(disable=True)
        loaded.text_pipe = pipe
    # Reel picks a scheduler per model id before each run (flow shift): follow it.
    pipe.scheduler = loaded.pipe.scheduler
    return pipe


def _sharing(pipeline_class: Any, source: Any) -> Any:
    """``pipeline_class`` over ``source``'s very modules.

    Not ``from_pipe``: it casts the new pipeline (so the shared modules) to one dtype, which
    would turn a bfloat16 transformer with float32 norms, and a VAE in its own dtype, into
    float32 under the image-to-video pipeline's feet.
    """
    wanted = inspect.signature(pipeline_class.__init__).parameters
    components = source.components
    arguments = {
        name: components[name] if name in components else source.config[name]
        for name in wanted
        if name != "self" and (name in components or name in source.config)
    }
    return pipeline_class(**arguments)
