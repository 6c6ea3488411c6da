"""The free-space guard (``REEL_MIN_FREE_BYTES``): new predictions and uploads are refused with
a 503 in the dialect's own shape while the disk is low, and nothing is created; reads go on.

No small disk is needed: a minimum larger than any disk's free space is a disk that is full.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reel.errors import LowDiskSpace
from reel.predictions.disk_space import FreeSpaceGuard
from reel.predictions.files import FileService
from reel.predictions.keys import Principal
from reel.settings import Settings
from reel.wiring import build_blob_store, guarded_dirs
from support.factories import services_for
from support.inprocess import InProcessReel, in_process_reel
from support.media import png_base64, png_bytes
from support.retention import count_rows

MODEL = "runwayml/gen4-turbo"
RUNWAY = {"X-Runway-Version": "2024-11-06"}
MORE_THAN_ANY_DISK = 2**62


# --- the guard ---------------------------------------------------------------------------------


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0
        self.now = 0.0

    def free_bytes(self, _path: Path) -> int:
        self.reads += 1
        return self.free

    def clock(self) -> float:
        return self.now


def test_the_guard_refuses_under_the_minimum_and_reads_the_disk_at_most_once_a_second(tmp_path: Path) -> None:
    disk = FakeDisk(free=5000)
    guard = FreeSpaceGuard([tmp_path], 4000, free_bytes=disk.free_bytes, clock=disk.clock)
    for _ in range(100):
        guard.check()
    assert disk.reads == 1

    disk.free = 3999
    disk.now = 0.9
    guard.check()  # the reading is still fresh
    disk.now = 1.0
    with pytest.raises(LowDiskSpace, match=r"has 3999 bytes free, under REEL_MIN_FREE_BYTES \(4000\)"):
        guard.check()
    assert disk.reads == 2


def test_a_minimum_of_zero_turns_the_guard_off(tmp_path: Path) -> None:
    disk = FakeDisk(free=0)
    FreeSpaceGuard([tmp_path], 0, free_bytes=disk.free_bytes).check()
    assert disk.reads == 0


def test_the_real_disk_is_read(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    FreeSpaceGuard([tmp_path], free // 2).check()
    with pytest.raises(LowDiskSpace):
        FreeSpaceGuard([tmp_path], MORE_THAN_ANY_DISK).check()


def test_the_guarded_dirs_are_the_data_dir_and_where_blobs_or_s3_scratch_files_go(tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path / "data")
    assert guarded_dirs(local, build_blob_store(local)) == [tmp_path / "data", (tmp_path / "data" / "blobs")]
    elsewhere = Settings(data_dir=tmp_path / "data", storage_url=f"file://{tmp_path / 'disk2'}")
    assert guarded_dirs(elsewhere, build_blob_store(elsewhere))[1] == tmp_path / "disk2"
    s3 = Settings(data_dir=tmp_path / "data", storage_url="s3://bucket/prefix")
    assert guarded_dirs(s3, build_blob_store(s3)) == [tmp_path / "data", tmp_path / "data" / "scratch"]


def test_an_upload_url_issued_before_the_disk_filled_takes_no_bytes_after(tmp_path: Path) -> None:
    services = services_for(tmp_path / "data")
    try:
        _, info = services.keys.create("uploads")
        owner = Principal(key_id=info.id, webhook_secret="")
        disk = FakeDisk(free=10_000)
        guard = FreeSpaceGuard([tmp_path], 1000, cache_s=0, free_bytes=disk.free_bytes)
        files = FileService(services.sessions, services.blobs, 20_000, space=guard)
        ticket = files.create_ticket(owner, "cat.png", 100, "image/png")
        assert files.pending_upload_size(ticket.file.id, ticket.token) == 100
        disk.free = 999
        with pytest.raises(LowDiskSpace):
            files.pending_upload_size(ticket.file.id, ticket.token)
        with pytest.raises(LowDiskSpace):
            files.create_open_ticket(owner, "bird.png")
        with pytest.raises(LowDiskSpace):
            files.store_upload(owner, "dog.png", "image/png", png_bytes(16, 16))
    finally:
        services.engine.dispose()


# --- the API: 503 in each dialect's shape, nothing created ---------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReel]:
    with in_process_reel(
        tmp_path_factory.mktemp("disk-full"), worker=False, min_free_bytes=MORE_THAN_ANY_DISK
    ) as app:
        yield app


def assert_v3_low_disk(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.json() == {
        "code": 503,
        "message": "the server is low on disk space and accepts no new work for now; try again later",
        "data": None,
    }
    assert reply.headers["retry-after"] == "30"


def test_submits_and_uploads_are_refused_with_a_503_and_nothing_is_created(full: InProcessReel) -> None:
    key = full.create_key()
    with full.client(key) as client, full.expecting_server_errors():
        assert_v3_low_disk(
            client.post(
                f"/api/v3/{MODEL}", json={"prompt": "p", "image": png_base64(), "aspect_ratio": "1:1"}
            )
        )
        assert_v3_low_disk(
            client.post(
                "/api/v3/media/uploads", json={"filename": "a.png", "size": 10, "content_type": "image/png"}
            )
        )
        assert_v3_low_disk(
            client.post("/api/v3/media/upload/binary", files={"file": ("a.png", png_bytes(), "image/png")})
        )
        runway_submit = client.post(
            "/v1/image_to_video",
            json={
                "model": "gen4_turbo",
                "promptImage": f"data:image/png;base64,{png_base64()}",
                "ratio": "960:960",
            },
            headers=RUNWAY,
        )
        runway_upload = client.post(
            "/v1/uploads", json={"filename": "a.png", "type": "ephemeral"}, headers=RUNWAY
        )
        for reply in (runway_submit, runway_upload):
            assert reply.status_code == 503, reply.text
            assert reply.json() == {
                "error": "the server is low on disk space and accepts no new work for now; try again later"
            }
    assert count_rows(full.services.engine) == {
        "predictions": 0,
        "files": 0,
        "idempotency_keys": 0,
        "webhook_deliveries": 0,
    }
    blobs = [p for p in (full.data_dir / "blobs").rglob("*") if p.is_file()]
    assert blobs == []
    # The paths and numbers are for the operator's log, not for the caller.
    assert "under REEL_MIN_FREE_BYTES" in full.log()


def test_reads_and_bad_requests_are_answered_as_usual(full: InProcessReel) -> None:
    key = full.create_key()
    with full.client(key) as client:
        assert client.post("/api/v3/predictions", json={}).status_code == 200
        assert client.get("/api/v3/predictions/0123456789abcdef0123456789abcdef/result").status_code == 404
        missing_prompt = client.post(f"/api/v3/{MODEL}", json={"image": png_base64()})
        assert missing_prompt.status_code == 400 and "prompt" in missing_prompt.json()["message"]
