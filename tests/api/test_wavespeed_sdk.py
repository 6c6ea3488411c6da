"""The official ``wavespeed`` SDK (2.0.5, unmodified) against a real Reel server.

Each video that comes back is downloaded and decoded to check its size, rate and length.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import wavespeed

from reel.media.video import probe_video
from support.media import png_base64, png_bytes, png_data_uri
from support.server import LiveServer, create_key

MODEL = "runwayml/gen4-turbo"
SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "4:3": (1104, 832), "3:4": (832, 1104), "1:1": (960, 960)}


@pytest.fixture
def client(server: LiveServer, api_key: str) -> wavespeed.Client:
    return wavespeed.Client(api_key=api_key, base_url=server.url, max_connection_retries=0)


def _check_video(
    url_or_bytes: str | bytes, tmp_path: Path, size: tuple[int, int], seconds: float = 5.0
) -> None:
    data = url_or_bytes if isinstance(url_or_bytes, bytes) else httpx.get(url_or_bytes, timeout=30).content
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    info = probe_video(path)
    assert (info.width, info.height) == size
    assert info.codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert info.fps == pytest.approx(24)
    assert info.frame_count == round(seconds * 24)
    assert info.duration_s == pytest.approx(seconds, abs=0.05)


@pytest.mark.parametrize("ratio", list(SIZES))
def test_run_returns_a_video_of_the_ratio_size(client: wavespeed.Client, ratio: str, tmp_path: Path) -> None:
    result = client.run(
        MODEL, {"prompt": "a slow push-in", "image": png_data_uri(), "aspect_ratio": ratio}, poll_interval=0.1
    )
    (url,) = result["outputs"]
    assert url.endswith(".mp4")
    _check_video(url, tmp_path, SIZES[ratio])


def test_missing_ratio_uses_the_one_closest_to_the_image(client: wavespeed.Client, tmp_path: Path) -> None:
    result = client.run(MODEL, {"prompt": "portrait", "image": png_base64(600, 800)}, poll_interval=0.1)
    _check_video(result["outputs"][0], tmp_path, SIZES["3:4"])


def test_get_result_after_run(client: wavespeed.Client, server: LiveServer, api_key: str) -> None:
    submitted = httpx.post(
        f"{server.url}/api/v3/{MODEL}",
        json={"prompt": "x", "image": png_base64(), "aspect_ratio": "1:1"},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["data"]
    first = client.get_result(submitted["id"])
    assert first["code"] == 200
    assert first["data"]["id"] == submitted["id"]
    assert first["data"]["status"] in {"created", "processing", "completed"}
    assert first["data"]["urls"]["get"] == f"{server.url}/api/v3/predictions/{submitted['id']}/result"


def test_sync_mode_returns_the_finished_prediction(client: wavespeed.Client, tmp_path: Path) -> None:
    result = client.run(
        MODEL, {"prompt": "sync", "image": png_base64(), "aspect_ratio": "16:9"}, enable_sync_mode=True
    )
    _check_video(result["outputs"][0], tmp_path, SIZES["16:9"])


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose sync mode gives up after one second."""
    live = LiveServer(tmp_path_factory.mktemp("impatient"), env={"REEL_SYNC_WAIT_S": "1"}).start()
    yield live
    live.stop()
    assert not live.server_errors()


def test_sync_mode_timeout_says_5004_and_the_prediction_goes_on(impatient_server: LiveServer) -> None:
    key = create_key(impatient_server.data_dir)
    client = wavespeed.Client(api_key=key, base_url=impatient_server.url, max_connection_retries=0)
    outcome = client.run_no_throw(
        MODEL,
        {"prompt": "slow [sandbox:delay=2]", "image": png_base64(), "aspect_ratio": "1:1"},
        enable_sync_mode=True,
    )
    assert outcome["status"] == "processing"
    assert "Sync mode timed out" in outcome["error"]
    task_id = outcome["task_id"]
    assert task_id != "unknown"
    data = client.get_result(task_id)["data"]
    assert data["status"] in {"processing", "completed"}
    final = client._wait(task_id, timeout=60, poll_interval=0.2)
    assert len(final["outputs"]) == 1


def test_upload_then_run_on_the_download_url(client: wavespeed.Client, tmp_path: Path) -> None:
    image_path = tmp_path / "portrait.png"
    image_path.write_bytes(png_bytes(720, 1280, (20, 120, 220)))
    url = client.upload(str(image_path))
    assert httpx.get(url).content == image_path.read_bytes()
    result = client.run(MODEL, {"prompt": "from upload", "image": url}, poll_interval=0.1)
    _check_video(result["outputs"][0], tmp_path, SIZES["9:16"])


def test_base64_output(client: wavespeed.Client, tmp_path: Path) -> None:
    result = client.run(
        MODEL,
        {"prompt": "b64", "image": png_base64(), "aspect_ratio": "4:3", "enable_base64_output": True},
        poll_interval=0.1,
    )
    (encoded,) = result["outputs"]
    assert not encoded.startswith("data:")
    _check_video(base64.b64decode(encoded), tmp_path, SIZES["4:3"])


def test_ten_second_clip(client: wavespeed.Client, tmp_path: Path) -> None:
    result = client.run(
        MODEL,
        {"prompt": "long", "image": png_base64(), "aspect_ratio": "1:1", "duration": 10},
        poll_interval=0.1,
    )
    _check_video(result["outputs"][0], tmp_path, SIZES["1:1"], seconds=10.0)


def test_bad_key_is_refused(server: LiveServer) -> None:
    bad = wavespeed.Client(api_key="rk_000000000000_nope-nope-nope-nope-nope", base_url=server.url)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        bad.run(MODEL, {"prompt": "x", "image": png_base64()})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"image": "IMAGE"}, "prompt"),
        ({"prompt": "x"}, "image"),
        ({"prompt": "x", "image": "IMAGE", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "x", "image": "bm90IGFuIGltYWdl"}, "image"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: wavespeed.Client, payload: dict[str, str], field: str
) -> None:
    body = {k: (png_base64() if v == "IMAGE" else v) for k, v in payload.items()}
    with pytest.raises(RuntimeError, match=f"HTTP 400.*{field}"):
        client.run(MODEL, body)


def test_unknown_id_is_a_404(client: wavespeed.Client) -> None:
    with pytest.raises(RuntimeError, match="HTTP 404"):
        client.get_result("0" * 32)


def test_failed_prediction_raises_with_its_error_and_is_not_retried(client: wavespeed.Client) -> None:
    with pytest.raises(RuntimeError, match="failure requested") as raised:
        client.run(
            MODEL, {"prompt": "[sandbox:fail]", "image": png_base64()}, poll_interval=0.1, max_retries=2
        )
    # The SDK re-runs only errors mentioning "HTTP 5" / "HTTP 429"; ours must not.
    assert "HTTP 5" not in str(raised.value)
    assert "Prediction failed" in str(raised.value)


def test_failed_prediction_with_a_custom_message(client: wavespeed.Client) -> None:
    outcome = client.run_no_throw(
        MODEL, {"prompt": "[sandbox:fail=out of credits]", "image": png_base64()}, poll_interval=0.1
    )
    assert outcome["status"] == "failed"
    assert "out of credits" in outcome["error"]
