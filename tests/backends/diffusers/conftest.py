"""Tiny diffusers models for the whole session, a registry file serving them, and a real server.

The tiny model directories are written once per session by ``reel models make-tiny``'s code
(the real diffusers / transformers classes' ``save_pretrained``). The server is a real
``reel serve`` with ``REEL_DEVICE=cpu`` and the registry pointing at them, offline
(``HF_HUB_OFFLINE=1``, an empty Hugging Face cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import LiveServer, create_key
from support.tiny_models import TEST_ENV, make_tiny_dirs, write_registry


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("diffusers")
    import torch

    torch.set_num_threads(1)  # see TEST_ENV: far faster for tiny models on a busy machine
    return make_tiny_dirs(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory, tiny_dirs: dict[str, Path]) -> Path:
    return write_registry(tmp_path_factory.mktemp("registry"), tiny_dirs)


@pytest.fixture(scope="session")
def model_env(models_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **TEST_ENV,
        "REEL_MODELS_FILE": str(models_file),
        "REEL_DEVICE": "cpu",
        "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
    }


@pytest.fixture(scope="session")
def diffusers_server(
    tmp_path_factory: pytest.TempPathFactory, model_env: dict[str, str]
) -> Iterator[LiveServer]:
    # A short lease makes heartbeats (so progress writes and cancel checks) every 0.5 s.
    env = {**model_env, "REEL_LEASE_S": "2", "REEL_SYNC_WAIT_S": "60"}
    live = LiveServer(tmp_path_factory.mktemp("diffusers-server"), env=env).start()
    yield live
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def diffusers_key(diffusers_server: LiveServer) -> str:
    return create_key(diffusers_server.data_dir, "diffusers tests")
