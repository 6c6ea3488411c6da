"""Retention (``REEL_RETENTION_S``): what ended is a 404 once it expires and the workers'
housekeeping deletes it, rows and bytes, in bounded batches; waiting and running predictions
stay; 0 keeps everything.

The end-to-end test here drives the app in-process on SQLite and local disk, and moves the
rows' clocks back past the retention instead of waiting it out; the one with real processes,
real time, PostgreSQL and S3 is ``tests/storage/test_retention_s3.py``. The sweep's own rules
run on both databases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from reel.errors import StorageUnavailable
from reel.lifecycle.clock import new_file_id, utcnow
from reel.lifecycle.states import Status
from reel.predictions.keys import Principal
from reel.predictions.retention import RetentionPolicy, RetentionSweep
from reel.store.tables import IdempotencyRecord, Prediction, StoredFile, WebhookDelivery
from reel.wiring import Services
from reel.worker.housekeeping import Housekeeping
from reel.worker.webhooks import WebhookSender
from support.factories import new_prediction, services_for
from support.inprocess import InProcessReel, in_process_reel
from support.media import png_bytes
from support.modes import RUNNER_MODES, services_in_mode
from support.retention import count_rows, webhook_receiver

MODEL = "runwayml/gen4-turbo"
RETENTION_S = 3600
RUNWAY = {"X-Runway-Version": "2024-11-06"}
PNG = png_bytes(96, 96, (30, 160, 90))
POLICY = RetentionPolicy.of_seconds(RETENTION_S)
NOTHING = {"predictions": 0, "files": 0, "idempotency_keys": 0, "webhook_deliveries": 0}


# --- the app, end to end (SQLite, local disk) --------------------------------------------------


@pytest.fixture
def reel(tmp_path: Path) -> Iterator[InProcessReel]:
    with in_process_reel(tmp_path / "data", retention_s=RETENTION_S, allow_private_urls=True) as app:
        yield app


def blob_files(reel: InProcessReel) -> list[Path]:
    root = reel.data_dir / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file() and ".scratch" not in p.parts)


def age_everything(services: Services, by: timedelta) -> None:
    """Move every timestamp retention reads back by ``by``, as if that much time had passed."""
    with services.sessions.begin() as session:
        for prediction in session.scalars(select(Prediction)):
            prediction.created_at -= by
            if prediction.finished_at is not None:
                prediction.finished_at -= by
        for file in session.scalars(select(StoredFile)):
            file.created_at -= by
            if file.expires_at is not None:
                file.expires_at -= by
        for record in session.scalars(select(IdempotencyRecord)):
            record.created_at -= by
        for delivery in session.scalars(select(WebhookDelivery)):
            delivery.created_at -= by
            delivery.next_attempt_at -= by
            if delivery.ended_at is not None:
                delivery.ended_at -= by


def two_step_upload(client: httpx.Client, anonymous: httpx.Client) -> str:
    ticket = client.post(
        "/api/v3/media/uploads", json={"filename": "cat.png", "size": len(PNG), "content_type": "image/png"}
    )
    assert ticket.status_code == 200, ticket.text
    put = anonymous.put(ticket.json()["data"]["upload"]["url"], content=PNG)
    assert put.status_code == 200, put.text
    return str(ticket.json()["data"]["download_url"])


def binary_upload(client: httpx.Client) -> str:
    reply = client.post("/api/v3/media/upload/binary", files={"file": ("dog.png", PNG, "image/png")})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["data"]["download_url"])


def runway_upload(client: httpx.Client, anonymous: httpx.Client) -> str:
    ticket = client.post("/v1/uploads", json={"filename": "bird.png", "type": "ephemeral"}, headers=RUNWAY)
    assert ticket.status_code == 200, ticket.text
    body = ticket.json()
    sent = anonymous.post(body["uploadUrl"], data=body["fields"], files={"file": ("bird.png", PNG)})
    assert sent.is_success, sent.text
    return str(body["runwayUri"])


def submit_v3(client: httpx.Client, image: str, *, webhook: str, idempotency_key: str) -> httpx.Response:
    return client.post(
        f"/api/v3/{MODEL}",
        params={"webhook": webhook},
        json={"prompt": "kept for a while", "image": image, "aspect_ratio": "1:1"},
        headers={"Idempotency-Key": idempotency_key},
    )


def submit_runway(client: httpx.Client, prompt_image: str) -> str:
    reply = client.post(
        "/v1/image_to_video",
        json={"model": "gen4_turbo", "promptImage": prompt_image, "ratio": "960:960", "duration": 2},
        headers=RUNWAY,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def wait_completed(client: httpx.Client, prediction_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = utcnow() + timedelta(seconds=timeout_s)
    while True:
        data: dict[str, Any] = client.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
        if data["status"] in {"completed", "failed", "cancelled"}:
            assert data["status"] == "completed", data
            return data
        assert utcnow() < deadline, data
        time.sleep(0.1)


def deliver_webhooks(services: Services) -> None:
    sender = WebhookSender(services.sessions, services.settings, "test-sender")
    while sender.send_due():
        pass


def test_everything_that_ended_is_404_after_retention_and_the_sweep_deletes_rows_and_bytes(
    reel: InProcessReel,
) -> None:
    key = reel.create_key()
    with webhook_receiver() as (hook, received), reel.client(key) as client, reel.client() as anonymous:
        # 1. Uploads of the three kinds; a WaveSpeed prediction (idempotent, with a webhook)
        # from one and a Runway task from another, both completed, the webhook delivered.
        image_url = two_step_upload(client, anonymous)
        binary_url = binary_upload(client)
        runway_uri = runway_upload(client, anonymous)
        submitted = submit_v3(client, image_url, webhook=hook, idempotency_key="retained-1")
        assert submitted.status_code == 200, submitted.text
        v3_id = submitted.json()["data"]["id"]
        task_id = submit_runway(client, runway_uri)
        v3 = wait_completed(client, v3_id)
        runway = wait_completed(client, task_id.replace("-", ""))
        deliver_webhooks(reel.services)
        assert len(received) == 1

        outputs = [*v3["outputs"], *runway["outputs"]]
        file_urls = [image_url, binary_url, *outputs]
        assert all(anonymous.get(url).status_code == 200 for url in file_urls)
        assert client.get(f"/v1/tasks/{task_id}", headers=RUNWAY).json()["status"] == "SUCCEEDED"
        assert count_rows(reel.services.engine) == {
            "predictions": 2,
            "files": 5,  # three uploads, two outputs
            "idempotency_keys": 1,
            "webhook_deliveries": 1,
        }
        assert len(blob_files(reel)) == 7  # three uploads, two inputs, two outputs

        # 2. The retention passes: everything reads as gone at once, before any sweep.
        age_everything(reel.services, timedelta(seconds=RETENTION_S + 1))
        for prediction_id in (v3_id, task_id.replace("-", "")):
            gone = client.get(f"/api/v3/predictions/{prediction_id}/result")
            assert gone.status_code == 404 and gone.json()["code"] == 404 and gone.json()["data"] is None
        task = client.get(f"/v1/tasks/{task_id}", headers=RUNWAY)
        assert task.status_code == 404 and set(task.json()) == {"error"}
        assert [anonymous.get(url).status_code for url in file_urls] == [404] * len(file_urls)
        assert client.post("/api/v3/predictions", json={}).json()["data"]["total"] == 0

        # 3. The workers' housekeeping deletes the rows and the bytes.
        assert Housekeeping(reel.services.files, reel.services.retention).run_once() > 0
        assert count_rows(reel.services.engine) == NOTHING
        assert blob_files(reel) == []
        assert Housekeeping(reel.services.files, reel.services.retention).run_once() == 0

        # 4. What the key used stays reported, and counted against per_day: usage is a ledger
        # of its own (regression: it was counted from the predictions, so it went with them).
        organization = client.get("/v1/organization", headers=RUNWAY).json()
        assert organization["usage"]["models"]["gen4_turbo"]["dailyGenerations"] == 2
        today = utcnow().date().isoformat()
        report = client.post("/v1/organization/usage", json={"startDate": today}, headers=RUNWAY).json()
        assert [(day["date"], day["usedCredits"]) for day in report["results"]] == [
            (today, [{"model": "gen4_turbo", "amount": 0, "generations": 2}])
        ]


def test_an_idempotency_key_of_an_expired_prediction_makes_a_new_one(reel: InProcessReel) -> None:
    key = reel.create_key()
    with webhook_receiver() as (hook, _received), reel.client(key) as client:
        image = binary_upload(client)
        first = submit_v3(client, image, webhook=hook, idempotency_key="again")
        assert first.status_code == 200, first.text
        wait_completed(client, first.json()["data"]["id"])
        replay = submit_v3(client, image, webhook=hook, idempotency_key="again")
        assert replay.headers.get("Idempotent-Replayed") == "true"

        age_everything(reel.services, timedelta(seconds=RETENTION_S + 1))
        # The upload expired too: a new one, then the same key and body as the first submit.
        image_again = binary_upload(client)
        fresh = submit_v3(client, image_again, webhook=hook, idempotency_key="again")
        assert fresh.status_code == 200, fresh.text
        assert "Idempotent-Replayed" not in fresh.headers
        assert fresh.json()["data"]["id"] != first.json()["data"]["id"]


# --- the sweep's rules, on both databases ------------------------------------------------------


@pytest.fixture(params=RUNNER_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, retention_s=RETENTION_S) as built:
        yield built


def put_prediction(services: Services, key_id: str, status: Status, ended_ago: timedelta | None) -> str:
    """A prediction in ``status`` with its input blob, and for a completed one an output (blob
    and ``files`` row); an ended one ended ``ended_ago``."""
    row = new_prediction(key_id)
    row.status = status
    row.input_blob = f"inputs/{row.id}.png"
    services.blobs.put_bytes(row.input_blob, PNG)
    now = utcnow()
    row.created_at = now - (ended_ago or timedelta()) - timedelta(minutes=5)
    with services.sessions.begin() as session:
        if ended_ago is not None:
            row.finished_at = now - ended_ago
        if status == Status.COMPLETED:
            file_id = new_file_id()
            row.outputs = [f"outputs/{row.id}.mp4"]
            row.output_file_ids = [file_id]
            services.blobs.put_bytes(row.outputs[0], b"not really a video")
            session.add(
                StoredFile(
                    id=file_id,
                    key_id=key_id,
                    kind="output",
                    blob_key=row.outputs[0],
                    filename="output.mp4",
                    content_type="video/mp4",
                    size=18,
                    complete=True,
                    prediction_id=row.id,
                    created_at=row.finished_at,
                )
            )
        session.add(row)
    return row.id


def delivery(services: Services, prediction_id: str, status: str, ended_at: datetime | None) -> str:
    row = WebhookDelivery(
        id=f"msg_{new_file_id()}",
        prediction_id=prediction_id,
        url="https://example.com/hook",
        body="{}",
        secret="s",
        status=status,
        next_attempt_at=ended_at or utcnow(),
        created_at=(ended_at or utcnow()) - timedelta(minutes=1),
        ended_at=ended_at,
    )
    with services.sessions.begin() as session:
        session.add(row)
    return row.id


def remaining(services: Services) -> set[str]:
    with services.sessions() as session:
        return set(session.scalars(select(Prediction.id)))


def key_id(services: Services) -> str:
    _, info = services.keys.create("retention")
    return info.id


def test_waiting_and_running_predictions_are_never_deleted(services: Services) -> None:
    owner = key_id(services)
    long_ago = timedelta(seconds=RETENTION_S * 10)
    waiting = put_prediction(services, owner, Status.CREATED, None)
    running = put_prediction(services, owner, Status.PROCESSING, None)
    ended = {
        put_prediction(services, owner, status, long_ago)
        for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    }
    recent = put_prediction(services, owner, Status.COMPLETED, timedelta(seconds=RETENTION_S - 60))

    counts = services.retention.sweep_once()
    assert (counts.predictions, counts.files) == (3, 1)
    assert remaining(services) == {waiting, running, recent}
    assert not any(services.blobs.exists(f"inputs/{pid}.png") for pid in ended)

    counts = services.retention.sweep_once(utcnow() + long_ago)  # however long they wait or run
    assert (counts.predictions, counts.files) == (1, 1)
    assert remaining(services) == {waiting, running}
    for prediction_id in (waiting, running):
        assert services.blobs.exists(f"inputs/{prediction_id}.png")


def test_ended_predictions_go_with_their_files_keys_and_ended_webhooks(services: Services) -> None:
    owner = key_id(services)
    old = put_prediction(services, owner, Status.COMPLETED, timedelta(seconds=RETENTION_S + 5))
    young = put_prediction(services, owner, Status.COMPLETED, timedelta(seconds=RETENTION_S - 60))
    with services.sessions.begin() as session:
        for n, prediction_id in enumerate((old, young)):
            session.add(
                IdempotencyRecord(
                    key_id=owner,
                    idempotency_key=f"k{n}",
                    request_hash="0" * 64,
                    prediction_id=prediction_id,
                    created_at=utcnow() - timedelta(seconds=RETENTION_S + 10),
                )
            )
    long_ago = utcnow() - timedelta(seconds=RETENTION_S + 5)
    delivered = delivery(services, old, "delivered", long_ago)
    still_trying = delivery(services, old, "pending", None)
    just_failed = delivery(services, young, "failed", utcnow())
    old_output = f"outputs/{old}.mp4"

    counts = services.retention.sweep_once()
    assert (counts.predictions, counts.files, counts.idempotency_keys, counts.webhook_deliveries) == (
        1,
        1,
        1,
        1,
    )
    assert remaining(services) == {young}
    assert not services.blobs.exists(old_output) and not services.blobs.exists(f"inputs/{old}.png")
    assert services.blobs.exists(f"outputs/{young}.mp4")
    with services.sessions() as session:
        assert set(session.scalars(select(WebhookDelivery.id))) == {still_trying, just_failed}
        assert set(session.scalars(select(IdempotencyRecord.prediction_id))) == {young}
        assert set(session.scalars(select(StoredFile.prediction_id))) == {young}
    assert delivered


def test_each_sweep_deletes_at_most_one_batch(services: Services) -> None:
    owner = key_id(services)
    expired = [
        put_prediction(services, owner, Status.FAILED, timedelta(seconds=RETENTION_S + 60 * n))
        for n in range(1, 8)
    ]
    sweep = RetentionSweep(services.sessions, services.blobs, POLICY, batch=3)
    assert sweep.sweep_once().predictions == 3
    # Oldest first: the first batch took the three that ended longest ago, and only them.
    assert remaining(services) == set(expired[:4])
    assert [sweep.sweep_once().predictions for _ in range(3)] == [3, 1, 0]
    assert remaining(services) == set()
    assert not any(services.blobs.exists(f"inputs/{pid}.png") for pid in expired)


def test_retention_zero_keeps_everything(data_dir: Path) -> None:
    services = services_for(data_dir, retention_s=0)
    try:
        owner = key_id(services)
        principal = Principal(key_id=owner, webhook_secret="")
        years = timedelta(days=3650)
        ended = put_prediction(services, owner, Status.COMPLETED, years)
        upload = services.files.store_upload(principal, "old.png", "image/png", PNG)
        with services.sessions.begin() as session:
            row = session.get(StoredFile, upload.id)
            assert row is not None
            row.created_at -= years
        delivery(services, ended, "delivered", utcnow() - years)

        assert not services.retention.sweep_once()
        assert Housekeeping(services.files, services.retention).run_once() == 0
        assert count_rows(services.engine) == {
            "predictions": 1,
            "files": 2,
            "idempotency_keys": 0,
            "webhook_deliveries": 1,
        }
        assert services.predictions.get(principal, ended).id == ended
        assert services.files.served(upload.id, upload.filename).size == len(PNG)
    finally:
        services.engine.dispose()


class RefusesToDelete:
    """The services' blob store, but deleting ``refused`` fails as an unreachable bucket does."""

    def __init__(self, blobs: Any, refused: str) -> None:
        self._blobs = blobs
        self.refused = refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def delete(self, key: str) -> None:
        if key == self.refused:
            raise StorageUnavailable(f"storage: could not delete {key}")
        self._blobs.delete(key)


def test_a_prediction_whose_bytes_could_not_go_keeps_its_row_for_the_next_sweep(services: Services) -> None:
    owner = key_id(services)
    stuck = put_prediction(services, owner, Status.COMPLETED, timedelta(seconds=RETENTION_S + 5))
    other = put_prediction(services, owner, Status.COMPLETED, timedelta(seconds=RETENTION_S + 5))
    failing = RefusesToDelete(services.blobs, f"outputs/{stuck}.mp4")
    counts = RetentionSweep(services.sessions, failing, POLICY).sweep_once()  # type: ignore[arg-type]
    assert (counts.predictions, counts.files) == (1, 1)
    assert remaining(services) == {stuck}
    assert not services.blobs.exists(f"outputs/{other}.mp4")

    failing.refused = ""  # the bucket is back
    assert RetentionSweep(services.sessions, failing, POLICY).sweep_once().predictions == 1  # type: ignore[arg-type]
    assert remaining(services) == set()
    assert not services.blobs.exists(f"outputs/{stuck}.mp4")


def test_an_idempotency_key_goes_retention_after_its_24_hours_even_while_its_prediction_waits(
    services: Services,
) -> None:
    owner = key_id(services)
    waiting = put_prediction(services, owner, Status.CREATED, None)
    made = {"old": timedelta(hours=24, seconds=RETENTION_S + 5), "younger": timedelta(hours=24)}
    with services.sessions.begin() as session:
        for name, ago in made.items():
            session.add(
                IdempotencyRecord(
                    key_id=owner,
                    idempotency_key=name,
                    request_hash="0" * 64,
                    prediction_id=waiting,
                    created_at=utcnow() - ago,
                )
            )
    assert services.retention.sweep_once().idempotency_keys == 1
    with services.sessions() as session:
        assert list(session.scalars(select(IdempotencyRecord.idempotency_key))) == ["younger"]
    assert remaining(services) == {waiting}
