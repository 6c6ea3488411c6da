"""A real ``reel serve`` keeping its blobs in S3 (a JuiceFS gateway on loopback), driven by
the official ``wavespeed`` SDK, in both URL modes: ``proxy`` (Reel streams the object) and
``presigned`` (clients fetch from the bucket directly with an expiring URL).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import wavespeed

from reel.media.video import probe_video
from support.media import png_bytes
from support.s3 import S3Gateway
from support.server import LiveServer, create_key, free_port

pytestmark = pytest.mark.e2e

MODEL = "runwayml/gen4-turbo"
TTL_S = 900


@pytest.fixture(scope="module", params=["proxy", "presigned"])
def s3_server(
    request: pytest.FixtureRequest, s3_gateway: S3Gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    mode = request.param
    env = {
        **s3_gateway.reel_env(f"e2e-{mode}"),
        "REEL_FILE_URLS": mode,
        "REEL_FILE_URL_TTL_S": str(TTL_S),
        "REEL_S3_MULTIPART_THRESHOLD_BYTES": str(1024 * 1024),
    }
    live = LiveServer(tmp_path_factory.mktemp(f"s3-{mode}"), env=env).start()
    yield live, mode
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


def _bucket_keys(gateway: S3Gateway, mode: str, kind: str) -> list[str]:
    return gateway.list_keys(f"e2e-{mode}/{kind}/")


def test_upload_generate_fetch_delete(
    s3_server: tuple[LiveServer, str], s3_gateway: S3Gateway, tmp_path: Path
) -> None:
    server, mode = s3_server
    key = create_key(server.data_dir)
    client = wavespeed.Client(api_key=key, base_url=server.url, max_connection_retries=0)
    image = tmp_path / "portrait.png"
    image.write_bytes(png_bytes(720, 1280, (20, 120, 220)))
    uploads_before = _bucket_keys(s3_gateway, mode, "uploads")

    # Two-step upload: the bytes land in the bucket; the download_url stays on Reel in both modes.
    download_url = client.upload(str(image))
    assert download_url.startswith(f"{server.url}/files/")
    new_uploads = sorted(set(_bucket_keys(s3_gateway, mode, "uploads")) - set(uploads_before))
    assert len(new_uploads) == 1 and new_uploads[0].endswith("/portrait.png")
    assert httpx.get(download_url).content == image.read_bytes()

    result = client.run_no_throw(MODEL, {"prompt": "from S3", "image": download_url}, poll_interval=0.1)
    assert result["status"] == "completed", result["error"]
    (output,) = result["outputs"]
    if mode == "presigned":
        assert output.startswith(f"{s3_gateway.endpoint}/{s3_gateway.bucket}/e2e-presigned/outputs/")
        assert parse_qs(urlsplit(output).query)["X-Amz-Expires"] == [str(TTL_S)]
    else:
        assert output.startswith(f"{server.url}/files/") and output.endswith("/output.mp4")
    fetched = httpx.get(output, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "video/mp4"
    assert int(fetched.headers["content-length"]) == len(fetched.content)
    video = tmp_path / "out.mp4"
    video.write_bytes(fetched.content)
    info = probe_video(video)
    assert (info.width, info.height) == (720, 1280)
    assert info.codec == "h264"
    assert info.frame_count == 5 * 24

    # The video is an object in the bucket, byte for byte; nothing is kept on the local disk.
    outputs = [k for k in _bucket_keys(s3_gateway, mode, "outputs") if k.endswith(".mp4")]
    stored = {
        k: s3_gateway.client().get_object(Bucket=s3_gateway.bucket, Key=k)["Body"].read() for k in outputs
    }
    assert fetched.content in stored.values()
    output_key = next(k for k, v in stored.items() if v == fetched.content)
    local_files = [p for d in ("blobs", "scratch") for p in (server.data_dir / d).rglob("*") if p.is_file()]
    assert local_files == []

    # Deleting the prediction deletes its objects: the output and the input image.
    inputs_before = _bucket_keys(s3_gateway, mode, "inputs")
    assert inputs_before
    gone = httpx.delete(
        f"{server.url}/api/v3/predictions/{result['task_id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert gone.status_code == 200
    assert output_key not in s3_gateway.list_keys(f"e2e-{mode}/")
    assert len(_bucket_keys(s3_gateway, mode, "inputs")) == len(inputs_before) - 1
    assert httpx.get(output).status_code == 404


def test_proxied_files_honour_byte_ranges(s3_server: tuple[LiveServer, str], tmp_path: Path) -> None:
    server, _mode = s3_server
    key = create_key(server.data_dir)
    client = wavespeed.Client(api_key=key, base_url=server.url, max_connection_retries=0)
    image = tmp_path / "wide.png"
    data = png_bytes(1280, 720)
    image.write_bytes(data)
    url = client.upload(str(image))
    # Uploads are proxied in both modes, so this is Reel streaming an S3 object.
    whole = httpx.get(url)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.content == data
    part = httpx.get(url, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-109/{len(data)}"
    assert part.content == data[10:110]
    tail = httpx.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206
    assert tail.content == data[-16:]
    beyond = httpx.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 200 and beyond.content == data


def test_s3_down_is_a_503_not_a_500(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        "REEL_STORAGE_URL": "s3://media/reel",
        "AWS_ENDPOINT_URL_S3": dead,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_MAX_ATTEMPTS": "1",
    }
    server = LiveServer(tmp_path / "data", env=env).start()
    try:
        key = create_key(server.data_dir)
        auth = {"Authorization": f"Bearer {key}"}
        answer = httpx.post(
            f"{server.url}/api/v3/media/upload/binary",
            files={"file": ("cat.png", png_bytes(), "image/png")},
            headers=auth,
        )
        assert answer.status_code == 503
        body = answer.json()
        assert body["code"] == 503 and body["data"] is None
        # No endpoint, bucket or object key for the caller (an upload URL needs no key at all);
        # the operator's log has them.
        assert body["message"] == "storage unavailable, try again shortly"
        submit = httpx.post(
            f"{server.url}/api/v3/{MODEL}",
            json={"prompt": "x", "image": base64.b64encode(png_bytes()).decode(), "aspect_ratio": "1:1"},
            headers=auth,
        )
        assert submit.status_code == 503
        assert submit.json()["message"] == "storage unavailable, try again shortly"
    finally:
        server.stop()
    assert " 500 " not in server.log() and "unhandled error" not in server.log()
    assert "answered 503: storage: could not store s3://media/reel/uploads/" in server.log()
    assert dead in server.log()
