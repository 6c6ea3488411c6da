"""Idempotent submission on both dialects: ``Idempotency-Key`` on ``POST /api/v3/{model}`` and
``POST /v1/image_to_video``, plus the 24-hour expiry on the store.

A repeated key with the same request returns the first prediction (same id, 200, nothing
new); the same key with a different request is a 422 naming ``Idempotency-Key``; concurrent
duplicates create one prediction.

The raw-httpx tests need no process boundary: they run against the app in-process
(``support.inprocess``), concurrent duplicates included (each request runs on the app's event
loop and its submit in the app's thread pool, as under ``reel serve``). The Runway SDK test runs
against a real ``reel serve``: the official client over a real socket is its point.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import runwayml
from runwayml import RunwayML
from sqlalchemy import create_engine, text, update
from sqlalchemy.exc import OperationalError

from reel.errors import IdempotencyMismatch
from reel.lifecycle.clock import utcnow
from reel.predictions.idempotency import IdempotencyStore, IdempotentRequest
from reel.predictions.keys import Principal
from reel.predictions.service import HistoryQuery
from reel.store.tables import IdempotencyRecord
from reel.wiring import Services
from support.factories import insert_prediction, services_for
from support.inprocess import InProcessReel
from support.media import png_base64, png_data_uri
from support.server import LiveServer

MODEL = "runwayml/gen4-turbo"
SLOW = "idempotency [sandbox:delay=60]"
RUNWAY_VERSION = {"X-Runway-Version": "2024-11-06"}


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def delete_everything(client: httpx.Client) -> None:
    """Cancel and delete what the client's key made, so the worker is not kept busy."""
    ids = [
        item["id"]
        for item in client.post("/api/v3/predictions", json={"page_size": 100}).json()["data"]["items"]
    ]
    if ids:
        client.post("/api/v3/predictions/delete", json={"ids": ids})


@pytest.fixture(scope="module")
def me_key(reel_app: InProcessReel) -> str:
    """A key of this module's own, so counting its predictions sees only ours."""
    return reel_app.create_key("idempotency")


@pytest.fixture(scope="module")
def my_client(reel_app: InProcessReel, me_key: str) -> Iterator[httpx.Client]:
    with reel_app.client(me_key) as client:
        client.headers.update(RUNWAY_VERSION)
        yield client


@pytest.fixture
def me(my_client: httpx.Client) -> Iterator[httpx.Client]:
    """The module's client of the app in-process; what the test made is deleted afterwards."""
    yield my_client
    delete_everything(my_client)


@pytest.fixture
def live_made(server: LiveServer, api_key: str) -> Iterator[list[str]]:
    """Ids a test made on the live server with the session's ``api_key``; deleted afterwards (only
    those: the key is shared), so the session's shared worker is not kept busy."""
    made: list[str] = []
    yield made
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        for prediction_id in dict.fromkeys(made):
            client.delete(f"/api/v3/predictions/{prediction_id}")


def total(me: httpx.Client) -> int:
    count = me.post("/api/v3/predictions", json={}).json()["data"]["total"]
    assert isinstance(count, int)
    return count


def wavespeed_body(**extra: Any) -> dict[str, Any]:
    return {"prompt": SLOW, "image": png_base64(64, 64), "aspect_ratio": "1:1", **extra}


def runway_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gen4_turbo",
        "promptImage": png_data_uri(64, 64),
        "ratio": "960:960",
        "promptText": SLOW,
        "duration": 2,
        **extra,
    }


def submit_wavespeed(me: httpx.Client, key: str, payload: dict[str, Any]) -> httpx.Response:
    return me.post(f"/api/v3/{MODEL}", json=payload, headers={"Idempotency-Key": key})


def submit_runway(me: httpx.Client, key: str, payload: dict[str, Any]) -> httpx.Response:
    return me.post("/v1/image_to_video", json=payload, headers={"Idempotency-Key": key})


# --- WaveSpeed dialect ------------------------------------------------------------------------


def test_wavespeed_repeat_returns_the_first_prediction(me: httpx.Client) -> None:
    key, payload = new_key(), wavespeed_body()
    first = submit_wavespeed(me, key, payload)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    before = total(me)

    # The same request with its fields in another order is the same request.
    again = me.post(
        f"/api/v3/{MODEL}",
        content=json.dumps(dict(reversed(payload.items()))),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert total(me) == before


def test_wavespeed_same_key_different_body_is_422(me: httpx.Client) -> None:
    key = new_key()
    assert submit_wavespeed(me, key, wavespeed_body()).status_code == 200
    before = total(me)
    refused = submit_wavespeed(me, key, wavespeed_body(aspect_ratio="16:9"))
    assert refused.status_code == 422, refused.text
    payload = refused.json()
    assert payload["code"] == 422 and payload["data"] is None
    assert "Idempotency-Key" in payload["message"]
    # The webhook is part of the request too.
    with_webhook = me.post(
        f"/api/v3/{MODEL}",
        params={"webhook": "https://example.com/hook"},
        json=wavespeed_body(),
        headers={"Idempotency-Key": key},
    )
    assert with_webhook.status_code == 422, with_webhook.text
    assert total(me) == before


def test_without_a_key_every_submit_is_new(me: httpx.Client) -> None:
    payload = wavespeed_body()
    first = me.post(f"/api/v3/{MODEL}", json=payload).json()["data"]["id"]
    second = me.post(f"/api/v3/{MODEL}", json=payload).json()["data"]["id"]
    assert first != second


def test_keys_are_scoped_to_the_api_key(reel_app: InProcessReel, me: httpx.Client) -> None:
    key, payload = new_key(), wavespeed_body()
    mine = submit_wavespeed(me, key, payload).json()["data"]["id"]
    with reel_app.client(reel_app.create_key("someone else")) as other:
        theirs = submit_wavespeed(other, key, payload).json()["data"]["id"]
        other.delete(f"/api/v3/predictions/{theirs}")
    assert mine != theirs


def test_a_refused_submit_records_nothing(me: httpx.Client) -> None:
    key = new_key()
    assert submit_wavespeed(me, key, wavespeed_body(aspect_ratio="2:1")).status_code == 400
    assert submit_wavespeed(me, key, wavespeed_body()).status_code == 200


def test_deleting_the_prediction_frees_its_key(me: httpx.Client) -> None:
    key, payload = new_key(), wavespeed_body()
    first = submit_wavespeed(me, key, payload).json()["data"]["id"]
    assert me.delete(f"/api/v3/predictions/{first}").status_code == 200
    again = submit_wavespeed(me, key, payload)
    assert again.status_code == 200
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["data"]["id"] != first


@pytest.mark.parametrize("bad", ["", "x" * 256, "caf\u00e9"])
def test_a_malformed_key_is_400(me: httpx.Client, bad: str) -> None:
    response = me.post(
        f"/api/v3/{MODEL}",
        json=wavespeed_body(),
        headers=[("Idempotency-Key", bad.encode())],
    )
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["message"]


# --- Runway dialect ---------------------------------------------------------------------------


def test_runway_repeat_returns_the_first_task(me: httpx.Client) -> None:
    key, payload = new_key(), runway_body()
    first = submit_runway(me, key, payload)
    assert first.status_code == 200, first.text
    before = total(me)
    again = submit_runway(me, key, payload)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert total(me) == before


def test_runway_same_key_different_body_is_422_in_runways_shape(me: httpx.Client) -> None:
    key = new_key()
    assert submit_runway(me, key, runway_body()).status_code == 200
    refused = submit_runway(me, key, runway_body(seed=1))
    assert refused.status_code == 422, refused.text
    assert set(refused.json()) == {"error"}
    assert "Idempotency-Key" in refused.json()["error"]


def test_the_same_key_on_the_other_dialect_is_a_different_request(me: httpx.Client) -> None:
    key = new_key()
    assert submit_wavespeed(me, key, wavespeed_body()).status_code == 200
    assert submit_runway(me, key, runway_body()).status_code == 422


def test_the_runway_sdk_sends_the_key_through_extra_headers(
    server: LiveServer, api_key: str, live_made: list[str]
) -> None:
    key = new_key()
    with RunwayML(api_key=api_key, base_url=server.url, max_retries=0) as client:

        def create(seed: int) -> str:
            created = client.image_to_video.create(
                model="gen4_turbo",
                prompt_image=png_data_uri(64, 64),
                ratio="960:960",
                prompt_text=SLOW,
                duration=2,
                seed=seed,
                extra_headers={"Idempotency-Key": key},
            )
            live_made.append(created.id)
            return created.id

        assert create(seed=1) == create(seed=1)
        # 422, which the SDK does not retry (it retries 409).
        with pytest.raises(runwayml.UnprocessableEntityError):
            create(seed=2)


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["wavespeed", "runway"])
def test_concurrent_duplicates_create_one_prediction(me: httpx.Client, dialect: str) -> None:
    key = new_key()
    submit, payload = (
        (submit_wavespeed, wavespeed_body()) if dialect == "wavespeed" else (submit_runway, runway_body())
    )
    before = total(me)
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        response = submit(me, key, payload)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    ids = {(r.json()["data"]["id"] if dialect == "wavespeed" else r.json()["id"]) for r in answers}
    assert len(ids) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 7
    assert total(me) == before + 1


# --- the domain: a duplicate that raced past the lookup, on SQLite and PostgreSQL ---------------

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    if request.param == "sqlite":
        yield services_for(tmp_path / "data")
        return
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"reel_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}")
    built = services_for(tmp_path / "data", database_url=f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
    yield built
    built.engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_duplicate_that_raced_past_the_lookup_answers_with_the_first(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, info = services.keys.create("race")
    owner = Principal(key_id=info.id, webhook_secret="")
    payload = wavespeed_body()
    first = services.predictions.submit(owner, MODEL, payload, None, idempotency_key="race")

    # The duplicate looked the key up before the first committed, so its lookup found nothing;
    # its insert then collides on the key and it answers with the first prediction.
    store = services.predictions._idempotency
    real_find = store.find
    lookups: list[IdempotentRequest] = []

    def find_too_early(request: IdempotentRequest) -> str | None:
        lookups.append(request)
        return None if len(lookups) == 1 else real_find(request)

    monkeypatch.setattr(store, "find", find_too_early)
    second = services.predictions.submit(owner, MODEL, payload, None, idempotency_key="race")
    assert len(lookups) == 2
    assert second.replayed
    assert second.prediction.id == first.prediction.id
    assert services.predictions.history(owner, HistoryQuery())[0] == 1
    # The loser's stored input image is gone too.
    assert [p.name for p in (tmp_path / "data" / "blobs" / "inputs").iterdir()] == [
        f"{first.prediction.id}.png"
    ]


# --- the store: expiry ------------------------------------------------------------------------


def test_a_key_expires_after_24_hours(tmp_path: Path) -> None:
    services = services_for(tmp_path / "data")
    _, info = services.keys.create("expiry")
    owner = Principal(key_id=info.id, webhook_secret="")
    store = IdempotencyStore(services.sessions)
    first = IdempotentRequest.of(owner, "k", "wavespeed", MODEL, {"a": 1}, None)
    other_body = IdempotentRequest.of(owner, "k", "wavespeed", MODEL, {"a": 2}, None)

    earlier = insert_prediction(services, info.id)
    with services.sessions.begin() as session:
        store.remember(session, first, earlier)
    assert store.find(first) == earlier
    with pytest.raises(IdempotencyMismatch):
        store.find(other_body)

    with services.sessions.begin() as session:
        session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=24, seconds=1))
        )
    assert store.find(first) is None
    assert store.find(other_body) is None  # an expired key may carry a new request

    later = insert_prediction(services, info.id)
    with services.sessions.begin() as session:
        store.remember(session, other_body, later)  # replaces the expired record
    assert store.find(other_body) == later
