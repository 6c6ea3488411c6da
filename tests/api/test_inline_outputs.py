"""Rendering predictions: blob I/O stays off the event loop, and base64 outputs are capped.

``enable_base64_output`` inlines whole videos. On S3 every read (and a presigned URL's
credential refresh) is network I/O, so an async handler that rendered on the event loop made
every request in flight wait. Driven in-process through ``create_app``: a blocked loop
serialises the concurrent requests below.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from reel.api.app import create_app
from reel.api.runway_view import RUNWAY_VERSION, task_id
from reel.lifecycle.states import Status
from reel.storage.base import BlobStore
from reel.store.tables import Prediction
from reel.wiring import Services
from support.factories import new_prediction, services_for
from support.media import png_base64

pytestmark = pytest.mark.anyio

MODEL = "runwayml/gen4-turbo"
BASE = "http://reel.test"
BLOCKED_AFTER_S = 20.0
"""Generous: only a blocked event loop keeps the gate shut this long."""


class GatedBlobs:
    """The real store, except that reading a blob or making its URL waits until ``release`` is
    set (as a slow S3 round trip would), so a test can act while a render is in flight."""

    signs_urls = True  # as S3 with presigned URLs: making one may wait on the network

    def __init__(self, inner: BlobStore) -> None:
        self._inner = inner
        self.waiting = threading.Event()
        self.release = threading.Event()
        self.timed_out = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _wait(self) -> None:
        self.waiting.set()
        if not self.release.wait(BLOCKED_AFTER_S):
            self.timed_out = True

    def read_bytes(self, key: str) -> bytes:
        self._wait()
        return self._inner.read_bytes(key)

    def direct_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        self._wait()
        return self._inner.direct_url(key, filename=filename, content_type=content_type)


class CountedReads:
    """The real store, counting whole-blob reads."""

    def __init__(self, inner: BlobStore) -> None:
        self._inner = inner
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return self._inner.read_bytes(key)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def services(data_dir: Path) -> Services:
    return services_for(data_dir, public_url=BASE, max_inline_bytes=1000)


@pytest.fixture
def key(services: Services) -> tuple[str, str]:
    plaintext, info = services.keys.create("tests")
    return plaintext, info.id


@pytest.fixture
async def client(services: Services, key: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    headers = {"Authorization": f"Bearer {key[0]}"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as client:
        yield client


def _complete(services: Services, prediction_id: str, video: bytes) -> str:
    """End ``prediction_id`` as the worker would, with ``video`` as its output; its file id."""
    file_id = secrets.token_hex(16)
    blob = f"outputs/{prediction_id}.mp4"
    services.blobs.put_bytes(blob, video)
    with services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.status = Status.COMPLETED
        row.outputs, row.output_file_ids, row.nsfw = [blob], [file_id], [False]
    return file_id


def _completed_base64_prediction(services: Services, key_id: str, video: bytes) -> tuple[str, str]:
    row = new_prediction(key_id)
    row.base64_output = True
    with services.sessions.begin() as session:
        session.add(row)
    return row.id, _complete(services, row.id, video)


SUBMIT = {"prompt": "x", "image": png_base64(), "aspect_ratio": "1:1", "enable_base64_output": True}


async def _history(services: Services, client: httpx.AsyncClient, key_id: str) -> httpx.Response:
    _completed_base64_prediction(services, key_id, b"video bytes")
    return await client.post("/api/v3/predictions", json={"page": 1})


async def _replayed_submit(services: Services, client: httpx.AsyncClient, key_id: str) -> httpx.Response:
    headers = {"Idempotency-Key": "once"}
    first = await client.post(f"/api/v3/{MODEL}", json=SUBMIT, headers=headers)
    _complete(services, first.json()["data"]["id"], b"video bytes")
    return await client.post(f"/api/v3/{MODEL}", json=SUBMIT, headers=headers)


async def _sync_mode_submit(services: Services, client: httpx.AsyncClient, key_id: str) -> httpx.Response:
    async def finish_it_when_it_exists() -> None:
        def find() -> str | None:
            with services.sessions() as session:
                return session.scalar(select(Prediction.id).where(Prediction.key_id == key_id))

        while (prediction_id := await asyncio.to_thread(find)) is None:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(_complete, services, prediction_id, b"video bytes")

    answer, _ = await asyncio.gather(
        client.post(f"/api/v3/{MODEL}", json={**SUBMIT, "enable_sync_mode": True}),
        finish_it_when_it_exists(),
    )
    return answer


def _completed_url_prediction(services: Services, key_id: str) -> str:
    row = new_prediction(key_id)
    with services.sessions.begin() as session:
        session.add(row)
    _complete(services, row.id, b"video bytes")
    return row.id


async def _result(services: Services, client: httpx.AsyncClient, key_id: str) -> httpx.Response:
    """The poll route reads SQLite on the event loop, but signs URLs in a worker thread."""
    prediction_id = _completed_url_prediction(services, key_id)
    return await client.get(f"/api/v3/predictions/{prediction_id}/result")


async def _runway_task(services: Services, client: httpx.AsyncClient, key_id: str) -> httpx.Response:
    prediction_id = _completed_url_prediction(services, key_id)
    return await client.get(
        f"/v1/tasks/{task_id(prediction_id)}", headers={"X-Runway-Version": RUNWAY_VERSION}
    )


RENDERING_REQUESTS: dict[str, Callable[[Services, httpx.AsyncClient, str], Awaitable[httpx.Response]]] = {
    "history": _history,
    "replayed submit": _replayed_submit,
    "sync-mode submit": _sync_mode_submit,
    "result": _result,
    "runway task": _runway_task,
}


@pytest.mark.parametrize("request_kind", RENDERING_REQUESTS, ids=list(RENDERING_REQUESTS))
async def test_healthz_answers_while_a_render_waits_on_the_blob_store(
    services: Services, client: httpx.AsyncClient, key: tuple[str, str], request_kind: str
) -> None:
    gated = GatedBlobs(services.blobs)

    async def render() -> httpx.Response:
        services.blobs = gated  # the routes' store; the setup above wrote through the real one
        return await RENDERING_REQUESTS[request_kind](services, client, key[1])

    async def healthz_meanwhile() -> int:
        # While the loop is blocked in a blob read this cannot even start.
        while not gated.waiting.is_set():
            await asyncio.sleep(0.01)
        status = (await client.get("/healthz")).status_code
        gated.release.set()
        return status

    rendered, health = await asyncio.wait_for(
        asyncio.gather(render(), healthz_meanwhile()), timeout=3 * BLOCKED_AFTER_S
    )
    assert not gated.timed_out, "the blob store's wait ran out: the event loop was blocked by the render"
    assert health == 200
    assert rendered.status_code == 200, rendered.text


async def test_history_lists_urls_and_reads_no_blob(
    services: Services, client: httpx.AsyncClient, key: tuple[str, str]
) -> None:
    counted = CountedReads(services.blobs)
    file_ids = [_completed_base64_prediction(services, key[1], b"v" * 600)[1] for _ in range(3)]
    services.blobs = counted
    response = await client.post("/api/v3/predictions", json={"page": 1})
    assert response.status_code == 200, response.text
    items = response.json()["data"]["items"]
    assert sorted(item["outputs"][0] for item in items) == sorted(
        f"{BASE}/files/{file_id}/output.mp4" for file_id in file_ids
    )
    assert counted.reads == []


async def test_a_single_prediction_inlines_base64_outputs_up_to_the_cap(
    services: Services, client: httpx.AsyncClient, key: tuple[str, str]
) -> None:
    video = b"v" * 750  # exactly 1000 base64 characters: the cap
    prediction_id, _ = _completed_base64_prediction(services, key[1], video)
    response = await client.get(f"/api/v3/predictions/{prediction_id}/result")
    assert response.status_code == 200, response.text
    (encoded,) = response.json()["data"]["outputs"]
    assert base64.b64decode(encoded, validate=True) == video


async def test_base64_outputs_over_the_cap_are_a_413_naming_the_setting_and_the_url(
    services: Services, client: httpx.AsyncClient, key: tuple[str, str]
) -> None:
    prediction_id, file_id = _completed_base64_prediction(services, key[1], b"v" * 751)
    counted = CountedReads(services.blobs)
    services.blobs = counted
    response = await client.get(f"/api/v3/predictions/{prediction_id}/result")
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["code"] == 413 and body["data"] is None
    message = body["message"]
    assert message.startswith("enable_base64_output:")
    assert "1004" in message and "1000" in message and "REEL_MAX_INLINE_BYTES" in message
    assert f"{BASE}/files/{file_id}/output.mp4" in message
    assert counted.reads == []  # the size decides, before anything is read


async def test_a_base64_output_deleted_while_its_prediction_is_read_is_a_404(
    services: Services, client: httpx.AsyncClient, key: tuple[str, str]
) -> None:
    prediction_id, _ = _completed_base64_prediction(services, key[1], b"video bytes")
    # The row was read before a DELETE removed the video: the render finds no blob.
    services.blobs.delete(f"outputs/{prediction_id}.mp4")
    response = await client.get(f"/api/v3/predictions/{prediction_id}/result")
    assert response.status_code == 404, response.text
    assert response.json()["message"] == f"prediction {prediction_id!r} not found"
