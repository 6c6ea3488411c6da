"""GPU memory gauges. No GPU here: torch is a stand-in exposing the ``torch.cuda`` calls the
sampler makes (on a GPU machine they are torch's own)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from reel.worker.metrics_server import sample_gpu_memory


def fake_torch(*, available: bool = True, initialized: bool = True, devices: int = 2) -> Any:
    cuda = SimpleNamespace(
        is_available=lambda: available,
        is_initialized=lambda: initialized,
        device_count=lambda: devices,
        memory_allocated=lambda index: 1_000_000 * (index + 1),
        memory_reserved=lambda index: 3_000_000 * (index + 1),
    )
    return SimpleNamespace(cuda=cuda)


def gauge(name: str, device: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"device": device})


def test_each_device_in_use_is_reported() -> None:
    assert sample_gpu_memory(fake_torch()) == 2
    assert gauge("reel_gpu_memory_allocated_bytes", "cuda:0") == 1_000_000
    assert gauge("reel_gpu_memory_allocated_bytes", "cuda:1") == 2_000_000
    assert gauge("reel_gpu_memory_reserved_bytes", "cuda:1") == 6_000_000


def test_cuda_is_never_set_up_just_to_be_measured() -> None:
    assert sample_gpu_memory(fake_torch(initialized=False)) == 0
    assert sample_gpu_memory(fake_torch(available=False)) == 0
