"""Where diffusers models run, decided once per process from ``REEL_DEVICE``.

``auto`` (the default)
    A CUDA GPU when torch and diffusers are installed and torch sees one; otherwise none, and
    every model is served by the sandbox. On a machine with no NVIDIA device node at all torch is
    not even imported, so a GPU-less ``reel serve`` starts as fast as before.
``cuda`` / ``cuda:N``
    That GPU; if torch cannot use it, the sandbox (with the reason in the log).
``cpu``
    The CPU. Meant for tests and demos with tiny models (``reel models make-tiny``): real models
    on a CPU take hours per clip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

INSTALL_HINT = "install the models extra: pip install 'reel[models]' (make serve does it where a GPU is)"


@dataclass(frozen=True)
class DeviceChoice:
    device: str | None
    """A torch device string, or None when models cannot run here (serve them with the sandbox)."""
    reason: str
    """Why: shown in the start-up log."""


def missing_packages() -> list[str]:
    """The packages of the models extra that are not importable."""
    return [
        name
        for name in ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub")
        if importlib.util.find_spec(name) is None
    ]


def _nvidia_present() -> bool:
    return (
        os.path.exists("/dev/nvidiactl")
        or os.path.exists("/proc/driver/nvidia/version")
        or shutil.which("nvidia-smi") is not None
    )


def choose_device(setting: str) -> DeviceChoice:
    """Resolve ``REEL_DEVICE`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) to a usable device."""
    setting = (setting or "auto").strip().lower()
    if setting not in ("auto", "cpu") and not setting.startswith("cuda"):
        return DeviceChoice(None, f"REEL_DEVICE={setting!r} is not auto, cpu, cuda or cuda:N")
    missing = missing_packages()
    if setting == "auto" and not _nvidia_present():
        return DeviceChoice(None, "no NVIDIA GPU on this machine")
    if missing:
        return DeviceChoice(None, f"{', '.join(missing)} not installed; {INSTALL_HINT}")
    if setting == "cpu":
        return DeviceChoice("cpu", "REEL_DEVICE=cpu (slow: meant for tiny test models)")
    import torch

    if not torch.cuda.is_available():
        return DeviceChoice(None, f"torch {torch.__version__} sees no usable CUDA GPU")
    device = "cuda" if setting == "auto" else setting
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return DeviceChoice(None, f"{device} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    # No get_device_name(): it would create a CUDA context in every process that only asks.
    return DeviceChoice(device, f"CUDA, {torch.cuda.device_count()} GPU(s) visible")
