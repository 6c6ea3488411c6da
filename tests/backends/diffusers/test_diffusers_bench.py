"""bench/diffusers_speed.py runs its whole code path on the CPU with tiny models (smoke test).

The GPU figures come from the same script on a GPU; timings are never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.tiny_models import TEST_ENV

pytest.importorskip("diffusers")
SCRIPT = Path(__file__).parents[3] / "bench" / "diffusers_speed.py"


def test_the_benchmark_times_stock_and_reel_paths(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--models", "wan2.2-ti2v,ltx-video"],
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV, "OUT": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "diffusers_speed.json").read_text())
    assert results["errors"] == []
    assert set(results["models"]) == {"wan2.2-ti2v", "ltx-video"}
    for row in results["models"].values():
        for path in ("stock", "reel"):
            timed = row[path]
            assert timed["steps"] == 4
            assert timed["step_s"] > 0 and timed["total_s"] > 0 and timed["vae_decode_s"] > 0
            assert timed["video_s_est"] >= timed["total_s"]
        assert row["stock"]["text_encode_s"] > 0
        assert row["reel"]["text_cache_hits"] >= 1  # the timed call reused the warm-up's embeddings
        assert row["reel"]["frames_written"] == 2 * 8  # warm-up + timed call, 8 frames each
        assert set(row["reel_vs_stock"]) == {"step", "vae_decode", "video"}
        assert row["reel"]["encode_s"] > 0
    turbo = results["models"]["wan2.2-ti2v"]
    assert turbo["model_id"] == "wavespeed-ai/wan-2.2/i2v-5b-720p"  # the quality tier ...
    assert turbo["turbo_model_id"] == "wavespeed-ai/wan-2.2/i2v-5b-720p-turbo"  # ... and the turbo one
    assert turbo["turbo"]["steps"] == 3 and turbo["turbo"]["step_s"] > 0  # DMD: marked at the transformer
    assert turbo["turbo"]["vae_decode_s"] > 0 and turbo["turbo"]["encode_s"] > 0
    assert turbo["turbo"]["video_s_est"] == round(turbo["turbo"]["total_s"], 1)
    queue = turbo["queue"]
    assert queue["predictions"] == 4 and queue["model_id"] == turbo["turbo_model_id"]
    assert queue["sequential_videos_per_gpu_hour"] > 0 and queue["overlapped_videos_per_gpu_hour"] > 0
    assert "turbo" not in results["models"]["ltx-video"]  # LTX-Video has no turbo tier
    assert "reel speed-up vs stock" in done.stdout and "videos per GPU-hour" in done.stdout


def test_the_memory_drill_steps_down_after_an_oom_and_times_each_mode(tmp_path: Path) -> None:
    script = SCRIPT.with_name("gpu_memory_modes.py")
    done = subprocess.run(
        [sys.executable, str(script), "--tiny", "--device", "cpu", "--fake-oom"],
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV, "OUT": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "memory_modes.json").read_text())
    failed, recovered = results["oom"]
    assert failed["mode"] == "full" and failed["outcome"] == "failed"
    assert "out of GPU memory" in failed["reason"] and "vae_tiling" in failed["reason"]
    assert recovered["mode"] == failed["next_mode"] == "vae_tiling"
    assert recovered["outcome"] == "completed" and recovered["steps"] == 3
    assert set(results["modes"]) == {"vae_tiling", "model_offload", "sequential_offload"}
    assert results["errors"] == []


def test_the_cold_start_script_times_a_cold_and_a_warm_worker_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("cold_start.py")), "--tiny", "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV, "OUT": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "cold_start.json").read_text())
    cold, warm = results["runs"]
    assert (cold["cache"], warm["cache"]) == ("cold", "warm")
    for run in (cold, warm):
        assert 0 < run["imported_s"] < run["loaded_s"] < run["first_video_s"]
        assert run["compile_cache"] == str(Path(results["data_dir"]) / "compile-cache" / "inductor")
    assert (Path(results["data_dir"]) / "cold-start.mp4").stat().st_size > 0
