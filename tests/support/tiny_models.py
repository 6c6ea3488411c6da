"""The tiny diffusers models the model tests serve, and the registry entries naming them."""

from __future__ import annotations

import shutil
from pathlib import Path

FAMILIES = ("wan2.2-ti2v", "wan2.1-i2v", "wan2.2-i2v-a14b", "ltx-video")
MODEL_OF = {family: f"tiny/{family}" for family in FAMILIES}
TURBO_FAMILIES = ("wan2.2-ti2v", "wan2.1-i2v", "wan2.2-i2v-a14b")
TURBO_OF = {family: f"tiny/{family}-turbo" for family in TURBO_FAMILIES}
"""Tiny turbo models: the DMD-distilled TI2V layout, and 14B models with a distillation LoRA."""
BROKEN = "tiny/broken"
"""A copy of the tiny LTX model whose transformer weights file is garbage."""
MISSING_LOCAL = "tiny/missing-local"
"""Weights named by a local directory that does not exist."""
NOT_DOWNLOADED = "tiny/not-downloaded"
"""Weights named by a Hugging Face repo id that is not in the (empty) cache."""
SLOW_STEPS_MAX = 5000
TINY_FPS = 8
TEST_ENV = {
    # One intra-op thread: on a busy 2-core machine OpenMP's spinning threads make tiny models
    # about 10x slower, and tiny models gain nothing from a second thread.
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def make_tiny_dirs(root: Path) -> dict[str, Path]:
    """One tiny model directory per family, written by `reel models make-tiny`'s code, and the
    turbo ones (keyed by their model id)."""
    from reel.backends.diffusers.tiny import make_tiny

    dirs = {family: make_tiny(root / family, family) for family in FAMILIES}
    for family in TURBO_FAMILIES:
        dirs[TURBO_OF[family]] = make_tiny(root / f"{family}-turbo", family, turbo=True)
    return dirs


def write_registry(root: Path, tiny_dirs: dict[str, Path]) -> Path:
    """A registry file serving every tiny model, plus a broken one and two without weights."""
    from reel.backends.diffusers.tiny import registry_snippet

    broken = root / "broken"
    shutil.copytree(tiny_dirs["ltx-video"], broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 64)
    tables = [registry_snippet(model_id, tiny_dirs[family], family) for family, model_id in MODEL_OF.items()]
    tables += [
        registry_snippet(model_id, tiny_dirs[model_id], family, turbo=True)
        for family, model_id in TURBO_OF.items()
    ]
    tables.append(registry_snippet(BROKEN, broken, "ltx-video"))
    tables.append(registry_snippet(MISSING_LOCAL, root / "nowhere", "wan2.2-ti2v"))
    tables.append(
        registry_snippet(NOT_DOWNLOADED, root, "wan2.1-i2v").replace(
            f'weights = "{root.resolve()}"', 'weights = "reel-tests/never-downloaded"'
        )
    )
    text = "\n".join(tables).replace(
        "num_inference_steps = [1, 1000]", f"num_inference_steps = [1, {SLOW_STEPS_MAX}]"
    )
    path = root / "models.toml"
    path.write_text(text)
    return path
