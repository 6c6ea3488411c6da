"""Every model family through the real API: wavespeed SDK -> reel serve -> worker -> diffusers.

The server runs tiny random-weight models on the CPU (see conftest.py); each video is
downloaded and decoded to check its size, frame count and rate.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import wavespeed

from reel.media.video import probe_video, read_frames
from support.media import png_base64
from support.server import LiveServer, create_key
from support.tiny_models import (
    BROKEN,
    MISSING_LOCAL,
    MODEL_OF,
    NOT_DOWNLOADED,
    SLOW_STEPS_MAX,
    TEST_ENV,
    TINY_FPS,
)

pytest.importorskip("diffusers")
pytestmark = pytest.mark.e2e

SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "4:3": (1104, 832), "3:4": (832, 1104), "1:1": (960, 960)}


@pytest.fixture
def client(diffusers_server: LiveServer, diffusers_key: str) -> wavespeed.Client:
    return wavespeed.Client(api_key=diffusers_key, base_url=diffusers_server.url, max_connection_retries=0)


@pytest.fixture
def http(diffusers_server: LiveServer, diffusers_key: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {diffusers_key}"}
    return httpx.Client(base_url=diffusers_server.url, headers=headers, timeout=30)


def _download(url: str, path: Path) -> Path:
    path.write_bytes(httpx.get(url, timeout=30).content)
    return path


def _wait(http: httpx.Client, prediction_id: str, until: Any, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data: dict[str, Any] = http.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
        if until(data):
            return data
        time.sleep(0.05)
    raise AssertionError(f"prediction {prediction_id} did not get there in {timeout_s} s: {data}")


@pytest.mark.parametrize(
    ("family", "ratio"),
    [("wan2.2-ti2v", "16:9"), ("wan2.1-i2v", "9:16"), ("wan2.2-i2v-a14b", "1:1"), ("ltx-video", "4:3")],
)
def test_each_family_makes_its_video_through_the_api(
    client: wavespeed.Client, family: str, ratio: str, tmp_path: Path
) -> None:
    # 2 s at 8 fps = 16 frames: two chained segments (9 + 8 frames) for the Wan families,
    # one pass of 17 frames for LTX-Video.
    result = client.run(
        MODEL_OF[family],
        {
            "prompt": "a red kite",
            "image": png_base64(96, 64),
            "aspect_ratio": ratio,
            "duration": 2,
            "seed": 5,
        },
        poll_interval=0.05,
        timeout=120,
    )
    info = probe_video(_download(result["outputs"][0], tmp_path / "out.mp4"))
    assert (info.width, info.height) == SIZES[ratio]
    assert info.fps == pytest.approx(TINY_FPS)
    assert info.frame_count == 2 * TINY_FPS
    assert info.duration_s == pytest.approx(2.0, abs=0.05)


def _video(client: wavespeed.Client, seed: int, tmp_path: Path) -> Path:
    result = client.run(
        MODEL_OF["wan2.2-ti2v"],
        {"prompt": "waves", "image": png_base64(64, 64), "aspect_ratio": "1:1", "duration": 1, "seed": seed},
        poll_interval=0.05,
        timeout=120,
    )
    return _download(result["outputs"][0], tmp_path / f"seed-{seed}-{time.time()}.mp4")


def test_same_seed_same_video_and_another_seed_another(client: wavespeed.Client, tmp_path: Path) -> None:
    first, again, other = (_video(client, seed, tmp_path) for seed in (11, 11, 12))
    assert first.read_bytes() == again.read_bytes()
    frames, other_frames = (np.stack(read_frames(path)).astype(int) for path in (first, other))
    assert frames.shape == (TINY_FPS, 960, 960, 3)
    assert np.abs(frames - other_frames).mean() > 5


def test_progress_moves_and_cancel_stops_at_the_next_step(
    http: httpx.Client, client: wavespeed.Client, diffusers_server: LiveServer, tmp_path: Path
) -> None:
    steps = SLOW_STEPS_MAX  # tens of seconds of denoising: it will not end by itself during the test
    body = {
        "prompt": "slow",
        "image": png_base64(64, 64),
        "aspect_ratio": "16:9",
        "duration": 1,
        "num_inference_steps": steps,
    }
    submitted = http.post(f"/api/v3/{MODEL_OF['ltx-video']}", json=body).json()["data"]
    running = _wait(http, submitted["id"], lambda d: 0 < d.get("progress", 0) < 1)
    assert running["status"] == "processing"
    later = _wait(http, submitted["id"], lambda d: d["progress"] > running["progress"])
    assert later["progress"] < 1

    assert http.post(f"/api/v3/predictions/{submitted['id']}/cancel").status_code == 200
    pattern = rf"prediction {submitted['id']}: cancelled; stopped after step (\d+) of {steps}"
    deadline = time.monotonic() + 30
    while not (found := re.search(pattern, diffusers_server.log())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found, "the worker never stopped the pipeline"
    assert int(found.group(1)) < steps
    assert http.get(f"/api/v3/predictions/{submitted['id']}/result").json()["data"]["status"] == "cancelled"

    # The same worker goes straight on to the next prediction.
    result = client.run(
        MODEL_OF["ltx-video"],
        {"prompt": "after", "image": png_base64(64, 64), "aspect_ratio": "16:9", "duration": 1},
        poll_interval=0.05,
        timeout=120,
    )
    assert probe_video(_download(result["outputs"][0], tmp_path / "after.mp4")).frame_count == TINY_FPS


def test_a_model_error_fails_the_prediction_and_the_worker_keeps_serving(
    client: wavespeed.Client, diffusers_server: LiveServer, tmp_path: Path
) -> None:
    workers_before = diffusers_server.worker_pids()
    outcome = client.run_no_throw(
        BROKEN, {"prompt": "x", "image": png_base64(64, 64), "aspect_ratio": "1:1"}, poll_interval=0.05
    )
    assert outcome["status"] == "failed"
    assert "could not load the weights" in outcome["error"]
    assert f"reel models pull {BROKEN}" in outcome["error"]
    assert "HTTP 5" not in outcome["error"]

    result = client.run(
        MODEL_OF["wan2.1-i2v"],
        {"prompt": "fine", "image": png_base64(64, 64), "aspect_ratio": "1:1", "duration": 1},
        poll_interval=0.05,
        timeout=120,
    )
    assert probe_video(_download(result["outputs"][0], tmp_path / "ok.mp4")).frame_count == TINY_FPS
    assert diffusers_server.worker_pids() == workers_before


def test_models_without_weights_are_listed_unavailable_with_the_fix(http: httpx.Client) -> None:
    listing = {item["id"]: item for item in http.get("/api/v3/models").json()["data"]}
    for model_id in MODEL_OF.values():
        assert listing[model_id]["ready"] is True, listing[model_id]
        assert listing[model_id]["backend"] == "diffusers"
        assert listing[model_id]["sandbox"] is False
    for model_id in (MISSING_LOCAL, NOT_DOWNLOADED):
        item = listing[model_id]
        assert item["ready"] is False
        assert f"`reel models pull {model_id}`" in item["reason"]
    assert "not downloaded" in listing[NOT_DOWNLOADED]["reason"]
    assert "does not exist" in listing[MISSING_LOCAL]["reason"]


@pytest.mark.parametrize("model_id", [MISSING_LOCAL, NOT_DOWNLOADED])
def test_a_submission_to_a_model_without_weights_fails_fast_with_the_fix(
    client: wavespeed.Client, model_id: str
) -> None:
    started = time.monotonic()
    outcome = client.run_no_throw(
        model_id, {"prompt": "x", "image": png_base64(64, 64)}, poll_interval=0.05, timeout=30
    )
    assert outcome["status"] == "failed"
    assert "is not available" in outcome["error"]
    assert f"reel models pull {model_id}" in outcome["error"]
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_inference_steps", SLOW_STEPS_MAX + 1),
        ("num_inference_steps", 2.5),
        ("num_inference_steps", 0),
        ("guidance_scale", "high"),
        ("guidance_scale", 0.5),
        ("duration", 5),
    ],
)
def test_out_of_range_parameters_are_a_400_naming_the_field(
    http: httpx.Client, field: str, value: Any
) -> None:
    body = {"prompt": "x", "image": png_base64(64, 64), field: value}
    response = http.post(f"/api/v3/{MODEL_OF['ltx-video']}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"{field}:")


def test_a_server_with_no_weights_starts_and_says_how_to_get_them(tmp_path: Path) -> None:
    # The bundled registry, an empty Hugging Face cache, no network: what a fresh GPU box sees.
    env = {**TEST_ENV, "REEL_DEVICE": "cpu", "HF_HOME": str(tmp_path / "hf-home")}
    live = LiveServer(tmp_path / "data", env=env).start()
    try:
        listing = httpx.get(f"{live.url}/api/v3/models", timeout=10).json()["data"]
        assert {item["id"] for item in listing} >= {"runwayml/gen4-turbo", "wavespeed-ai/wan-2.2/i2v-720p"}
        for item in listing:
            assert item["ready"] is False and item["backend"] == "diffusers"
            assert f"`reel models pull {item['id']}`" in item["reason"]
        key = create_key(live.data_dir)
        client = wavespeed.Client(api_key=key, base_url=live.url, max_connection_retries=0)
        outcome = client.run_no_throw(
            "runwayml/gen4-turbo",
            {"prompt": "x", "image": png_base64(64, 64)},
            poll_interval=0.05,
            timeout=30,
        )
        assert outcome["status"] == "failed"
        # Gen-4 Turbo is the turbo tier: its weights are FastVideo's distilled TI2V-5B.
        assert "FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers is not downloaded" in outcome["error"]
        assert "reel models pull runwayml/gen4-turbo" in outcome["error"]
    finally:
        live.stop()
    assert not live.server_errors()
