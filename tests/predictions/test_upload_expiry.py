"""Runway's ephemeral uploads last 24 hours; lapsed tickets go too; WaveSpeed uploads stay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reel.errors import InvalidInput, NotFound
from reel.lifecycle.clock import utcnow
from reel.predictions.keys import Principal
from reel.store.tables import StoredFile
from reel.wiring import Services
from reel.worker.housekeeping import Housekeeping
from support.factories import services_for
from support.media import png_bytes


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = services_for(tmp_path / "data")
    yield built
    built.engine.dispose()


@pytest.fixture
def owner(services: Services) -> Principal:
    _, info = services.keys.create("uploads")
    return Principal(key_id=info.id, webhook_secret="")


def finished_runway_upload(services: Services, owner: Principal, tmp_path: Path) -> StoredFile:
    ticket = services.files.create_open_ticket(owner, "cat.png")
    received = tmp_path / "cat.png"
    received.write_bytes(png_bytes(32, 32))
    return services.files.complete_upload(ticket.file.id, ticket.token, received)


def age(services: Services, file_id: str, by: timedelta) -> None:
    """Move a file's clock back, as if it had been made ``by`` ago."""
    with services.sessions.begin() as session:
        row = session.get(StoredFile, file_id)
        assert row is not None
        row.created_at -= by
        if row.expires_at is not None:
            row.expires_at -= by


def test_a_runway_upload_is_usable_for_24_hours_then_refused(
    services: Services, owner: Principal, tmp_path: Path
) -> None:
    upload = finished_runway_upload(services, owner, tmp_path)
    assert upload.expires_at is not None
    assert timedelta(hours=23, minutes=59) < upload.expires_at - utcnow() <= timedelta(hours=24)
    assert services.files.read_owned_upload(owner, upload.id, field="promptImage") == png_bytes(32, 32)

    age(services, upload.id, timedelta(hours=24, seconds=1))
    with pytest.raises(InvalidInput, match="expired") as refused:
        services.files.read_owned_upload(owner, upload.id, field="promptImage")
    assert refused.value.field == "promptImage"
    with pytest.raises(NotFound):
        services.files.served(upload.id, upload.filename)


def test_the_sweep_deletes_expired_uploads_and_lapsed_tickets_and_keeps_the_rest(
    services: Services, owner: Principal, tmp_path: Path
) -> None:
    expired = finished_runway_upload(services, owner, tmp_path)
    fresh = finished_runway_upload(services, owner, tmp_path)
    lapsed = services.files.create_ticket(owner, "never-sent.png", 100, "image/png")
    waiting = services.files.create_ticket(owner, "soon.png", 100, "image/png")
    kept = services.files.store_upload(owner, "old.png", "image/png", png_bytes(16, 16))
    for file_id in (expired.id, lapsed.file.id, kept.id):
        age(services, file_id, timedelta(hours=25))
    assert services.blobs.exists(expired.blob_key)

    assert Housekeeping(services.files).run_once() == 2

    with services.sessions() as session:
        left = {row.id for row in session.query(StoredFile)}
    assert left == {fresh.id, waiting.file.id, kept.id}
    assert not services.blobs.exists(expired.blob_key)
    assert services.blobs.exists(fresh.blob_key) and services.blobs.exists(kept.blob_key)
    # A lapsed ticket no longer accepts its bytes.
    with pytest.raises(NotFound):
        services.files.pending_upload_size(lapsed.file.id, lapsed.token)
    assert Housekeeping(services.files).run_once() == 0
