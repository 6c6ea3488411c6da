"""Which backend generates each model id of the catalog.

* ``--sandbox`` / ``REEL_SANDBOX``: the CPU sandbox for every id;
* otherwise the diffusers backend where models can run (``REEL_DEVICE``, see
  ``reel.backends.diffusers.device``: a CUDA GPU with torch installed, or ``cpu`` for tiny test
  models), and the sandbox for every id where they cannot, with the reason in the log.
"""

from __future__ import annotations

import logging

from reel.backends.base import Backend
from reel.backends.sandbox import SandboxBackend
from reel.catalog.registry import MODELS
from reel.settings import Settings

log = logging.getLogger(__name__)


def build_backends(*, sandbox: bool, settings: Settings | None = None) -> dict[str, Backend]:
    """One backend per served model id (see the module docstring for the choice); ``settings``
    (default: from the environment) name the data dir and LoRA limits the diffusers backend uses."""
    shared = SandboxBackend()
    if sandbox:
        return {model_id: shared for model_id in MODELS}
    from reel.backends.diffusers.device import choose_device

    settings = settings or Settings(**{})
    choice = choose_device(settings.device)
    if choice.device is None:
        log.warning(
            "NO MODEL RUNTIME: %s. Every model id falls back to the CPU sandbox (not AI generation).",
            choice.reason,
        )
        return {model_id: shared for model_id in MODELS}
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.runtime import DiffusersRuntime
    from reel.backends.diffusers.speed import use_compile_cache

    cache = use_compile_cache(settings.data_dir.resolve())
    runtime = DiffusersRuntime(choice.device)
    log.info("compiled kernels are cached in %s", cache)
    log.info("diffusers models run on %s (%s)", choice.device, choice.reason)
    backends: dict[str, Backend] = {}
    for model_id, spec in MODELS.items():
        backends[model_id] = (
            DiffusersBackend(spec, runtime, settings) if spec.diffusers is not None else shared
        )
    return backends
