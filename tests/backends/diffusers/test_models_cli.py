"""``reel models list | pull | make-tiny`` and ``reel worker --gpu``, run as real subprocesses, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reel.backends.diffusers.weights import check_model_dir
from support.tiny_models import MISSING_LOCAL, MODEL_OF, NOT_DOWNLOADED, TEST_ENV

REEL = [sys.executable, "-m", "reel.cli"]


def reel(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REEL, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_make_tiny_writes_a_complete_model_and_its_registry_table(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    target = tmp_path / "tiny-ltx"
    env = {**TEST_ENV, "HF_HOME": str(tmp_path / "hf")}
    made = reel(
        "models", "make-tiny", str(target), "--family", "ltx-video", "--model-id", "demo/ltx", env=env
    )
    assert made.returncode == 0, made.stderr
    assert check_model_dir(target) == []
    assert (target / "tokenizer" / "tokenizer.json").is_file()
    assert '[models."demo/ltx"]' in made.stdout

    registry = tmp_path / "models.toml"
    registry.write_text(made.stdout)
    listed = reel("models", "list", env={**env, "REEL_MODELS_FILE": str(registry)})
    assert listed.returncode == 0, listed.stderr
    assert "demo/ltx" in listed.stdout and "ready" in listed.stdout

    again = reel("models", "make-tiny", str(target), "--family", "ltx-video", env=env)
    assert again.returncode == 1 and "not empty" in again.stderr
    unknown = reel("models", "make-tiny", str(tmp_path / "x"), "--family", "sora", env=env)
    assert unknown.returncode == 2 and "wan2.2-ti2v" in unknown.stderr


def test_list_names_what_is_missing_and_the_command_that_fixes_it(model_env: dict[str, str]) -> None:
    listed = reel("models", "list", env=model_env)
    assert listed.returncode == 0, listed.stderr
    flat = " ".join(listed.stdout.split())
    for model_id in (MISSING_LOCAL, NOT_DOWNLOADED):
        assert f"reel models pull {model_id}" in flat.replace("│ ", "").replace(" │", "")
    assert "unavailable" in flat


def test_pull_checks_a_local_directory_and_reports_what_cannot_be_fetched(model_env: dict[str, str]) -> None:
    local = reel("models", "pull", MODEL_OF["wan2.1-i2v"], env=model_env)
    assert local.returncode == 0, local.stderr
    assert "is ready" in local.stderr

    missing = reel("models", "pull", MISSING_LOCAL, env=model_env)
    assert missing.returncode == 1
    assert "local model directory" in missing.stderr and "does not exist" in missing.stderr

    offline = reel("models", "pull", NOT_DOWNLOADED, env=model_env)
    assert offline.returncode == 1
    assert "could not download reel-tests/never-downloaded" in " ".join(offline.stderr.split())

    unknown = reel("models", "pull", "nobody/nothing", env=model_env)
    assert unknown.returncode == 1 and "not in the registry" in unknown.stderr


def test_make_tiny_lora_writes_a_lora_and_pull_lora_says_what_went_wrong(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from safetensors import safe_open

    env = {**TEST_ENV, "HF_HOME": str(tmp_path / "hf")}
    made = reel(
        "models", "make-tiny-lora", str(tmp_path / "loras"), "--family", "wan2.1-i2v", "--seed", "4", env=env
    )
    assert made.returncode == 0, made.stderr
    written = Path(made.stdout.strip())
    assert written == tmp_path / "loras" / "tiny-wan2.1-i2v-lora-4.safetensors"
    with safe_open(str(written), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(key.startswith("transformer.blocks.") and ".lora_" in key for key in keys)

    unknown = reel("models", "make-tiny-lora", str(tmp_path / "x"), "--family", "ltx-video", env=env)
    assert unknown.returncode == 2 and "wan2.2-ti2v" in unknown.stderr
    offline = reel("models", "pull-lora", "reel-tests/no-such-lora", env=env)  # HF_HUB_OFFLINE=1
    assert offline.returncode == 1 and "reel-tests/no-such-lora" in offline.stderr


def test_worker_takes_a_gpu_index() -> None:
    shown = reel("worker", "--help", env={})
    assert shown.returncode == 0
    assert "--gpu" in shown.stdout and "CUDA_VISIBLE_DEVICES" in shown.stdout


def test_make_tiny_turbo_writes_a_distill_lora_and_list_names_it(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    target = tmp_path / "tiny-a14b-turbo"
    env = {**TEST_ENV, "HF_HOME": str(tmp_path / "hf")}
    made = reel("models", "make-tiny", str(target), "--family", "wan2.2-i2v-a14b", "--turbo", env=env)
    assert made.returncode == 0, made.stderr
    assert check_model_dir(target) == []
    assert sorted(p.name for p in (target / "distill_lora").iterdir()) == [
        "high_noise.safetensors",
        "low_noise.safetensors",
    ]
    assert '[models."tiny/wan2.2-i2v-a14b-turbo"]' in made.stdout
    assert "num_inference_steps = 4" in made.stdout and "guidance_scale = 1.0" in made.stdout

    registry = tmp_path / "models.toml"
    registry.write_text(made.stdout)
    listed = reel("models", "list", env={**env, "REEL_MODELS_FILE": str(registry)})
    assert listed.returncode == 0, listed.stderr
    assert "+ LoRA" in listed.stdout and "ready" in listed.stdout
    # A LoRA file gone: listed unavailable with the fix, like missing weights.
    (target / "distill_lora" / "low_noise.safetensors").unlink()
    listed = reel("models", "list", env={**env, "REEL_MODELS_FILE": str(registry)})
    flat = " ".join(re.sub(r"[│┃]", " ", listed.stdout).split())  # the table wraps long cells
    assert "unavailable" in flat and "LoRA file" in flat and "does not exist" in flat


def test_make_tiny_turbo_refuses_a_family_without_a_turbo_tier(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    made = reel(
        "models", "make-tiny", str(tmp_path / "x"), "--family", "ltx-video", "--turbo", env=dict(TEST_ENV)
    )
    assert made.returncode == 2 and "ltx-video has no turbo tier" in made.stderr
