"""A submit the database does not record leaves nothing behind: no prediction, no input blob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reel.errors import DatabaseUnavailable
from reel.predictions.keys import Principal
from reel.store.tables import Prediction
from support.factories import services_for
from support.media import png_data_uri


def test_a_submit_the_database_refuses_removes_its_stored_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = services_for(tmp_path / "data")
    _, info = services.keys.create("outage")
    owner = Principal(key_id=info.id, webhook_secret="")
    stored: list[str] = []
    put_bytes = services.blobs.put_bytes

    def remember(key: str, data: bytes) -> None:
        stored.append(key)
        put_bytes(key, data)

    def database_down(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable("the database is unavailable; try again shortly")

    monkeypatch.setattr(services.blobs, "put_bytes", remember)
    monkeypatch.setattr(services.dispatcher, "submitted", database_down)
    body = {"prompt": "a cat", "image": png_data_uri(64, 64), "aspect_ratio": "1:1"}

    with pytest.raises(DatabaseUnavailable):
        services.predictions.submit(owner, "runwayml/gen4-turbo", body, None)

    assert len(stored) == 1 and stored[0].startswith("inputs/")
    assert not services.blobs.exists(stored[0])
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 0
    services.engine.dispose()
