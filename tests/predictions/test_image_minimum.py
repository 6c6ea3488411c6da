"""An image whose shorter side is under 64 px is refused at submit, in each dialect's own words.

A 1×1 px image used to make a video. Both APIs answer 400 naming their own field (``image`` in
WaveSpeed's, ``promptImage`` in Runway's) and both numbers, and nothing is created: no
prediction, no stored input. The app runs in-process (no server, no worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from reel.api.app import create_app
from reel.api.runway_view import RUNWAY_VERSION
from reel.store.tables import Prediction
from reel.wiring import Services
from support.factories import services_for
from support.media import png_base64, png_data_uri

MODEL = "runwayml/gen4-turbo"


@dataclass
class Api:
    services: Services
    key: str
    stored: list[str]
    """Keys of every blob written."""

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", "X-Runway-Version": RUNWAY_VERSION}

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_app(self.services))
            async with httpx.AsyncClient(transport=transport, base_url="http://reel.test") as client:
                return await client.post(path, json=body, headers=headers)

        return asyncio.run(send())

    def wavespeed(self, width: int, height: int) -> httpx.Response:
        body = {"prompt": "a lighthouse", "image": png_base64(width, height), "aspect_ratio": "1:1"}
        return self.post(f"/api/v3/{MODEL}", body)

    def runway(self, width: int, height: int) -> httpx.Response:
        body = {"model": "gen4_turbo", "promptImage": png_data_uri(width, height), "ratio": "960:960"}
        return self.post("/v1/image_to_video", body)

    def predictions(self) -> int:
        with self.services.sessions() as session:
            return session.scalar(select(func.count()).select_from(Prediction)) or 0


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    services = services_for(tmp_path / "data")
    key, _info = services.keys.create("minimum")
    stored: list[str] = []
    put_bytes = services.blobs.put_bytes

    def remember(blob: str, data: bytes) -> None:
        stored.append(blob)
        put_bytes(blob, data)

    monkeypatch.setattr(services.blobs, "put_bytes", remember)
    yield Api(services, key, stored)
    services.engine.dispose()


@pytest.mark.parametrize(("width", "height"), [(1, 1), (63, 200), (200, 63)])
def test_wavespeed_refuses_a_small_image_and_creates_nothing(api: Api, width: int, height: int) -> None:
    response = api.wavespeed(width, height)
    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "message": f"image: PNG is {width}\u00d7{height} px; the shorter side must be at least 64 px",
        "data": None,
    }
    assert api.predictions() == 0
    assert api.stored == []


@pytest.mark.parametrize(("width", "height"), [(1, 1), (63, 200), (200, 63)])
def test_runway_refuses_a_small_image_and_creates_nothing(api: Api, width: int, height: int) -> None:
    response = api.runway(width, height)
    assert response.status_code == 400
    assert response.json() == {
        "error": f"promptImage: PNG is {width}\u00d7{height} px; the shorter side must be at least 64 px"
    }
    assert api.predictions() == 0
    assert api.stored == []


def test_64_px_is_enough_in_both_dialects(api: Api) -> None:
    wavespeed = api.wavespeed(64, 64)
    assert wavespeed.status_code == 200, wavespeed.text
    assert wavespeed.json()["data"]["status"] == "created"
    runway = api.runway(64, 200)
    assert runway.status_code == 200, runway.text
    assert runway.json()["id"]
    assert api.predictions() == 2
    assert len([blob for blob in api.stored if blob.startswith("inputs/")]) == 2
