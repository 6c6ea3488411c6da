"""Text-to-video and LoRA request fields in both dialects: validation, storage, the sandbox.

In-process (``reel_app``: the app and a sandbox worker, the bundled registry). Bad input is a
400 naming the field in the dialect's own error shape, and nothing is created. The sandbox
animates a generated test card when there is no image; the models with LoRA are tested on
tiny real models in tests/backends/diffusers/test_loras_and_t2v_api.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from reel.media.video import probe_video, read_frames
from support.inprocess import InProcessReel
from support.media import png_base64, png_data_uri

T2V = "wavespeed-ai/wan-2.2/t2v-5b-720p"
I2V_LORA = "wavespeed-ai/wan-2.2/i2v-5b-720p-lora"
A14B_LORA = "wavespeed-ai/wan-2.2/i2v-480p-lora"
RUNWAY = {"X-Runway-Version": "2024-11-06"}


@pytest.fixture(scope="module")
def key(reel_app: InProcessReel) -> str:
    return reel_app.create_key("t2v and loras")


@pytest.fixture(scope="module")
def http(reel_app: InProcessReel, key: str) -> Iterator[httpx.Client]:
    with reel_app.client(key) as client:
        yield client


def _total(http: httpx.Client) -> int:
    return int(http.post("/api/v3/predictions", json={}).json()["data"]["total"])


def _refused(http: httpx.Client, model: str, body: dict[str, Any], field: str, *words: str) -> None:
    before = _total(http)
    answer = http.post(f"/api/v3/{model}", json=body)
    assert answer.status_code == 400, answer.text
    payload = answer.json()
    assert payload["code"] == 400 and payload["data"] is None
    assert payload["message"].startswith(f"{field}:") or f"{field}:" in payload["message"], payload
    for word in words:
        assert word in payload["message"], payload["message"]
    assert _total(http) == before


def _wait(http: httpx.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        data: dict[str, Any] = http.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not end")


def _video(http: httpx.Client, url: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{time.monotonic_ns()}.mp4"
    path.write_bytes(http.get(url).content)
    return path


# --- text-to-video -----------------------------------------------------------------------------


def test_text_to_video_animates_a_sandbox_test_card(http: httpx.Client, tmp_path: Path) -> None:
    answer = http.post(f"/api/v3/{T2V}", json={"prompt": "a red kite", "size": "720*1280", "seed": 4})
    assert answer.status_code == 200, answer.text
    data = _wait(http, answer.json()["data"]["id"])
    assert data["status"] == "completed", data["error"]
    path = _video(http, data["outputs"][0], tmp_path)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (720, 1280, 5 * 24)
    first = read_frames(path, indices=[0])[0].astype(int)
    # The card's colour bars along the top: grey on the left, blue on the right.
    assert np.abs(first[40, 40] - (192, 192, 192)).max() < 40
    assert np.abs(first[40, 680] - (0, 0, 192)).max() < 40
    # The prediction has no input image, and deleting it leaves nothing to trip over.
    assert http.delete(f"/api/v3/predictions/{data['id']}").status_code == 200


def test_text_to_video_defaults_to_landscape(http: httpx.Client, tmp_path: Path) -> None:
    answer = http.post(f"/api/v3/{T2V}", json={"prompt": "a red kite", "enable_sync_mode": True})
    data = answer.json()["data"]
    assert data["status"] == "completed", data
    info = probe_video(_video(http, data["outputs"][0], tmp_path))
    assert (info.width, info.height) == (1280, 720)


@pytest.mark.parametrize(
    ("model", "body", "field", "words"),
    [
        (T2V, {"prompt": "x", "image": png_base64(64, 64)}, "image", ("prompt alone",)),
        (T2V, {"prompt": "x", "size": "1000*1000"}, "size", ("1280*720",)),
        (T2V, {"image": "x"}, "prompt", ()),
        ("runwayml/gen4-turbo", {"prompt": "x"}, "image", ("is required",)),
    ],
    ids=["image-on-t2v", "bad-size", "no-prompt", "i2v-needs-image"],
)
def test_bad_text_to_video_input_is_a_400(
    http: httpx.Client, model: str, body: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    _refused(http, model, body, field, *words)


def test_runway_text_to_video(reel_app: InProcessReel, key: str, tmp_path: Path) -> None:
    with reel_app.client(key) as client:
        client.headers.update(RUNWAY)
        body = {"model": "gen4.5", "promptText": "a red kite", "ratio": "720:1280", "duration": 2, "seed": 1}
        created = client.post("/v1/text_to_video", json=body)
        assert created.status_code == 200, created.text
        assert set(created.json()) == {"id", "estimatedCost"}
        task_id = created.json()["id"]
        deadline = time.monotonic() + 120
        while (task := client.get(f"/v1/tasks/{task_id}").json())["status"] not in ("SUCCEEDED", "FAILED"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert task["status"] == "SUCCEEDED", task
        info = probe_video(_video(client, task["output"][0], tmp_path))
        assert (info.width, info.height, info.frame_count) == (720, 1280, 2 * 24)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/text_to_video", {"model": "gen4_turbo"}, ("model:", "needs an image", "gen4.5")),
        (
            "/v1/image_to_video",
            {"model": "gen4.5", "promptImage": png_data_uri(64, 64)},
            ("model:", "text_to_video"),
        ),
        ("/v1/text_to_video", {"promptImage": png_data_uri(64, 64)}, ("promptImage:", "image_to_video")),
        ("/v1/text_to_video", {"promptText": None}, ("promptText:", "is required")),
        ("/v1/text_to_video", {"ratio": "1:1"}, ("ratio:",)),
        ("/v1/text_to_video", {"duration": 11}, ("duration:", "from 2 to 10")),
        ("/v1/text_to_video", {"model": "nope"}, ("model:", "not served")),
    ],
    ids=["i2v-model", "t2v-model-on-i2v", "image", "no-prompt", "ratio", "duration", "unknown-model"],
)
def test_bad_runway_text_to_video_is_a_400_in_runways_shape(
    reel_app: InProcessReel, key: str, path: str, body: dict[str, Any], words: tuple[str, ...]
) -> None:
    full = {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5, **body}
    with reel_app.client(key) as client:
        client.headers.update(RUNWAY)
        answer = client.post(path, json={k: v for k, v in full.items() if v is not None})
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error"}
    for word in words:
        assert word in answer.json()["error"]


# --- LoRA fields -------------------------------------------------------------------------------


def _i2v(**extra: Any) -> dict[str, Any]:
    return {"prompt": "x", "image": png_base64(64, 64), "duration": 5, **extra}


@pytest.mark.parametrize(
    ("model", "body", "field", "words"),
    [
        ("wavespeed-ai/wan-2.2/i2v-5b-720p", _i2v(loras=[{"path": "a/b"}]), "loras", ("-lora",)),
        (I2V_LORA, _i2v(loras={"path": "a/b"}), "loras", ("list",)),
        (I2V_LORA, _i2v(loras=[{"scale": 1}]), "loras[0].path", ("is required",)),
        (I2V_LORA, _i2v(loras=[{"path": "../../etc/passwd"}]), "loras[0].path", ("neither",)),
        (I2V_LORA, _i2v(loras=[{"path": "ftp://x/y.safetensors"}]), "loras[0].path", ("neither",)),
        (I2V_LORA, _i2v(loras=[{"path": "a/b", "scale": 5}]), "loras[0].scale", ("between 0 and 4",)),
        (I2V_LORA, _i2v(loras=[{"path": "a/b", "scale": "1"}]), "loras[0].scale", ("number",)),
        (I2V_LORA, _i2v(loras=[{"path": f"a/b{i}"} for i in range(4)]), "loras", ("limit of 3",)),
        (I2V_LORA, _i2v(high_noise_loras=[{"path": "a/b"}]), "high_noise_loras", ("two experts",)),
        (
            A14B_LORA,
            _i2v(
                loras=[{"path": "a/b"}, {"path": "c/d"}], low_noise_loras=[{"path": "e/f"}, {"path": "g/h"}]
            ),
            "low_noise_loras",
            ("4 adapters", "limit of 3"),
        ),
        (
            I2V_LORA,
            _i2v(loras=[{"path": "http://127.0.0.1:9/x.safetensors"}]),
            "loras[0].path",
            ("URL refused", "127.0.0.1"),
        ),
        (
            I2V_LORA,
            _i2v(loras=[{"path": "http://169.254.169.254/latest/x.safetensors"}]),
            "loras[0].path",
            ("URL refused",),
        ),
    ],
    ids=[
        "not-a-lora-model",
        "not-a-list",
        "no-path",
        "path-traversal",
        "other-scheme",
        "scale-too-big",
        "scale-not-a-number",
        "too-many",
        "experts-on-5b",
        "too-many-on-one-expert",
        "loopback-url",
        "metadata-url",
    ],
)
def test_bad_loras_are_a_400_naming_the_field(
    http: httpx.Client, model: str, body: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    _refused(http, model, body, field, *words)


def test_loras_are_stored_with_the_prediction(http: httpx.Client, reel_app: InProcessReel) -> None:
    from reel.store.tables import Prediction

    loras = [{"path": "owner/style", "scale": 0.8}, {"path": "https://1.1.1.1/a.safetensors"}]
    body = _i2v(loras=loras, high_noise_loras=[{"path": "mine.safetensors", "scale": 2}])
    answer = http.post(f"/api/v3/{A14B_LORA}", json=body)
    assert answer.status_code == 200, answer.text
    data = _wait(http, answer.json()["data"]["id"])
    assert data["status"] == "completed"  # the sandbox serves the id (it applies no LoRA)
    with reel_app.services.sessions() as session:
        row = session.get(Prediction, data["id"])
        assert row is not None
        assert row.params["loras"] == [
            {"path": "owner/style", "scale": 0.8},
            {"path": "https://1.1.1.1/a.safetensors", "scale": 1.0},
        ]
        assert row.params["high_noise_loras"] == [{"path": "mine.safetensors", "scale": 2.0}]
        assert "low_noise_loras" not in row.params


def test_the_model_listing_says_which_ids_take_an_image_and_loras(http: httpx.Client) -> None:
    listing = {item["id"]: item for item in http.get("/api/v3/models").json()["data"]}
    assert "image" not in listing[T2V]["parameters"] and "prompt" in listing[T2V]["parameters"]
    assert "image" in listing[I2V_LORA]["parameters"] and "loras" in listing[I2V_LORA]["parameters"]
    assert "loras" not in listing["runwayml/gen4-turbo"]["parameters"]
