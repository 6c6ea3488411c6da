"""Retention with real processes and real time: ``reel serve`` on PostgreSQL (procrastinate)
with its blobs in S3 (a JuiceFS gateway on loopback), ``REEL_RETENTION_S`` a few seconds and
the worker's housekeeping every half second.

Everything that ended goes — the rows (counted in PostgreSQL) and the objects (listed in the
bucket) — and reads 404 in both dialects, file URLs included, while a prediction that is
still running stays, with its input.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import wavespeed
from sqlalchemy import create_engine

from support.faults import create_key, short_clip_registry
from support.media import png_base64, png_bytes
from support.retention import count_rows, webhook_receiver
from support.s3 import S3Gateway
from support.server import LiveServer

pytestmark = pytest.mark.e2e

MODEL = "runwayml/gen4-turbo"
RETENTION_S = 8
RUNWAY = {"X-Runway-Version": "2024-11-06"}
PREFIX = "retention"


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.2)


def test_ended_predictions_uploads_and_their_objects_go_and_read_404_on_postgresql_and_s3(
    postgres_url: str, s3_gateway: S3Gateway, tmp_path: Path
) -> None:
    env = {
        "REEL_DATABASE_URL": postgres_url,
        **s3_gateway.reel_env(PREFIX),
        "REEL_SANDBOX": "1",
        "REEL_MODELS_FILE": str(short_clip_registry(tmp_path / "models.toml", MODEL)),
        "REEL_RETENTION_S": str(RETENTION_S),
        "REEL_HOUSEKEEPING_INTERVAL_S": "0.5",
        "REEL_ALLOW_PRIVATE_URLS": "1",  # the webhook receiver listens on loopback
    }
    server = LiveServer(tmp_path / "data", env=env).start()
    engine = create_engine(postgres_url)
    try:
        key = create_key(server.data_dir, "retention", env)
        auth = {"Authorization": f"Bearer {key}"}
        base = server.url

        def v3_result(prediction_id: str) -> httpx.Response:
            return httpx.get(f"{base}/api/v3/predictions/{prediction_id}/result", headers=auth, timeout=10)

        def task(task_id: str) -> httpx.Response:
            return httpx.get(f"{base}/v1/tasks/{task_id}", headers={**auth, **RUNWAY}, timeout=10)

        def wait_ended(prediction_id: str) -> dict[str, Any]:
            eventually(prediction_id, lambda: v3_result(prediction_id).json()["data"]["status"] != "created")
            eventually(
                prediction_id,
                lambda: v3_result(prediction_id).json()["data"]["status"] in {"completed", "failed"},
            )
            data: dict[str, Any] = v3_result(prediction_id).json()["data"]
            assert data["status"] == "completed", data
            return data

        with webhook_receiver() as (hook, received):
            # 1. Uploads of the three kinds, and a prediction in each dialect made from them.
            image = tmp_path / "cat.png"
            image.write_bytes(png_bytes(96, 96, (10, 90, 200)))
            sdk = wavespeed.Client(api_key=key, base_url=base, max_connection_retries=0)
            download_url = sdk.upload(str(image))
            binary = httpx.post(
                f"{base}/api/v3/media/upload/binary",
                files={"file": ("dog.png", png_bytes(), "image/png")},
                headers=auth,
            )
            binary_url = binary.json()["data"]["download_url"]
            ticket = httpx.post(
                f"{base}/v1/uploads",
                json={"filename": "bird.png", "type": "ephemeral"},
                headers={**auth, **RUNWAY},
            ).json()
            sent = httpx.post(
                ticket["uploadUrl"], data=ticket["fields"], files={"file": ("bird.png", png_bytes())}
            )
            assert sent.is_success, sent.text

            submitted = httpx.post(
                f"{base}/api/v3/{MODEL}",
                params={"webhook": hook},
                json={"prompt": "kept a while", "image": download_url, "aspect_ratio": "1:1"},
                headers={**auth, "Idempotency-Key": "retained"},
                timeout=30,
            )
            assert submitted.status_code == 200, submitted.text
            v3_id = submitted.json()["data"]["id"]
            created = httpx.post(
                f"{base}/v1/image_to_video",
                json={
                    "model": "gen4_turbo",
                    "promptImage": ticket["runwayUri"],
                    "ratio": "960:960",
                    "duration": 2,
                },
                headers={**auth, **RUNWAY},
                timeout=30,
            )
            assert created.status_code == 200, created.text
            task_id = created.json()["id"]

            # 2. Each is served while it is young (checked as soon as it ends).
            v3 = wait_ended(v3_id)
            assert httpx.get(v3["outputs"][0], timeout=30).status_code == 200
            assert task(str(uuid.UUID(v3_id))).json()["status"] == "SUCCEEDED"
            runway = wait_ended(task_id.replace("-", ""))
            assert httpx.get(runway["outputs"][0], timeout=30).status_code == 200
            assert task(task_id).json()["status"] == "SUCCEEDED"
            eventually("the webhook", lambda: len(received) == 1)

            # 3. A prediction still running when the others expire.
            slow = httpx.post(
                f"{base}/api/v3/{MODEL}",
                json={
                    "prompt": "[sandbox:delay=300] still going",
                    "image": png_base64(),
                    "aspect_ratio": "1:1",
                },
                headers=auth,
                timeout=30,
            ).json()["data"]["id"]
            eventually(
                "the slow one starts", lambda: v3_result(slow).json()["data"]["status"] == "processing"
            )

            # 4. The worker's housekeeping deletes every ended thing: rows and objects.
            eventually(
                "retention's sweep",
                lambda: (
                    count_rows(engine)
                    == {"predictions": 1, "files": 0, "idempotency_keys": 0, "webhook_deliveries": 0}
                ),
            )
            assert s3_gateway.list_keys(f"{PREFIX}/") == [f"{PREFIX}/inputs/{slow}.png"]

        # 5. Both dialects answer 404, and so do the file URLs; the running one is still there.
        for prediction_id in (v3_id, task_id.replace("-", "")):
            gone = v3_result(prediction_id)
            assert gone.status_code == 404 and gone.json()["code"] == 404
        for gone_task in (task_id, str(uuid.UUID(v3_id))):
            assert task(gone_task).status_code == 404 and set(task(gone_task).json()) == {"error"}
        for url in (download_url, binary_url, v3["outputs"][0], runway["outputs"][0]):
            assert httpx.get(url, timeout=10).status_code == 404, url
        assert v3_result(slow).json()["data"]["status"] == "processing"
        assert "retention: deleted" in server.log()
    finally:
        server.stop()
        engine.dispose()
    errors = server.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)
