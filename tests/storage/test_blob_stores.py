"""One contract for every BlobStore: the local disk and an S3 bucket behind a real
S3-compatible server (a JuiceFS gateway on loopback, started by the ``s3_gateway`` fixture).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from reel.errors import StorageUnavailable
from reel.settings import Settings
from reel.storage.base import BlobStore
from reel.storage.local import LocalBlobStore
from reel.storage.s3 import MAX_PRESIGN_TTL_S, S3BlobStore, S3Location, make_s3_client
from reel.wiring import build_blob_store
from support.s3 import S3Gateway
from support.server import free_port

MIB = 1024 * 1024
THRESHOLD = 1 * MIB  # S3 parts are at least 5 MiB, so a 6 MiB file goes up in two


def _s3_store(gateway: S3Gateway, scratch: Path, **kwargs: object) -> S3BlobStore:
    prefix = f"contract-{uuid.uuid4().hex[:12]}/"
    return S3BlobStore(
        S3Location(gateway.bucket, prefix),
        scratch,
        multipart_threshold_bytes=THRESHOLD,
        client=gateway.client(),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        yield _s3_store(request.getfixturevalue("s3_gateway"), tmp_path / "scratch")


def _scratch_file(store: BlobStore, data: bytes) -> Path:
    path = store.scratch_dir() / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return path


def test_bytes_round_trip(store: BlobStore) -> None:
    store.put_bytes("uploads/abc/cat.png", b"\x89PNG not really")
    assert store.exists("uploads/abc/cat.png")
    assert store.read_bytes("uploads/abc/cat.png") == b"\x89PNG not really"
    assert store.size("uploads/abc/cat.png") == 15


def test_put_replaces(store: BlobStore) -> None:
    store.put_bytes("inputs/x.png", b"first")
    store.put_bytes("inputs/x.png", b"second, longer")
    assert store.read_bytes("inputs/x.png") == b"second, longer"
    assert store.size("inputs/x.png") == 14


def test_empty_blob(store: BlobStore) -> None:
    store.put_bytes("uploads/e/empty.bin", b"")
    assert store.exists("uploads/e/empty.bin")
    assert store.size("uploads/e/empty.bin") == 0
    assert store.read_bytes("uploads/e/empty.bin") == b""


def test_missing_key(store: BlobStore) -> None:
    assert not store.exists("outputs/nothing.mp4")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("outputs/nothing.mp4")
    with pytest.raises(FileNotFoundError):
        store.size("outputs/nothing.mp4")
    with pytest.raises(FileNotFoundError):
        store.open("outputs/nothing.mp4")
    store.delete("outputs/nothing.mp4")  # not an error


def test_delete(store: BlobStore) -> None:
    store.put_bytes("outputs/gone.mp4", b"video")
    store.put_bytes("outputs/kept.mp4", b"other")
    store.delete("outputs/gone.mp4")
    assert not store.exists("outputs/gone.mp4")
    assert store.read_bytes("outputs/kept.mp4") == b"other"


def test_deleting_a_local_upload_leaves_no_empty_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put_bytes("uploads/a1/cat.png", b"png")
    store.put_bytes("uploads/b2/dog.png", b"png")
    store.delete("uploads/a1/cat.png")
    assert not (tmp_path / "blobs" / "uploads" / "a1").exists()
    assert store.read_bytes("uploads/b2/dog.png") == b"png"
    store.delete("uploads/b2/dog.png")
    assert list((tmp_path / "blobs" / "uploads").iterdir()) == []


def test_a_local_put_that_runs_out_of_space_leaves_no_partial_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    source = tmp_path / "video.mp4"  # another filesystem, as when blobs/ is its own mount
    source.write_bytes(os.urandom(50_000))
    real_replace, real_copy = os.replace, shutil.copyfileobj

    def cross_device(src: object, dst: object) -> None:
        if src == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)  # type: ignore[arg-type]

    def disk_full(src: BinaryIO, dst: BinaryIO) -> None:
        dst.write(src.read(10_000))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", cross_device)
    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.put_file("outputs/v.mp4", source)
    assert not store.exists("outputs/v.mp4")
    assert list((tmp_path / "blobs" / "outputs").iterdir()) == []  # no temporary file either
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    store.put_file("outputs/v.mp4", source)  # across filesystems, once there is room
    assert store.size("outputs/v.mp4") == 50_000 and not source.exists()


def test_put_file_takes_the_scratch_file(store: BlobStore) -> None:
    data = os.urandom(70_000)
    source = _scratch_file(store, data)
    store.put_file("outputs/v.mp4", source)
    assert not source.exists()
    assert store.read_bytes("outputs/v.mp4") == data


def test_open_whole_and_byte_ranges(store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    store.put_bytes("outputs/r.mp4", data)
    with store.open("outputs/r.mp4") as stream:
        assert stream.read() == data
    with store.open("outputs/r.mp4", (0, 99)) as stream:
        assert stream.read() == data[:100]
    with store.open("outputs/r.mp4", (5000, len(data) - 1)) as stream:
        assert stream.read() == data[5000:]
    with store.open("outputs/r.mp4", (300, 300)) as stream:
        assert stream.read(10) == data[300:301]
        assert stream.read(10) == b""


def test_large_file_round_trip(store: BlobStore) -> None:
    data = os.urandom(6 * MIB + 123)
    store.put_file("outputs/big.mp4", _scratch_file(store, data))
    assert store.size("outputs/big.mp4") == len(data)
    assert hashlib.sha256(store.read_bytes("outputs/big.mp4")).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd"])
def test_keys_cannot_escape(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


def test_scratch_dir_is_a_local_directory(store: BlobStore) -> None:
    assert store.scratch_dir().is_dir()


def test_direct_url_only_when_presigning(store: BlobStore) -> None:
    store.put_bytes("outputs/d.mp4", b"video")
    assert store.direct_url("outputs/d.mp4", filename="output.mp4", content_type="video/mp4") is None


# --- S3 specifics ---------------------------------------------------------------------------


def test_objects_live_under_the_prefix(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    one = _s3_store(s3_gateway, tmp_path / "a")
    other = _s3_store(s3_gateway, tmp_path / "b")
    one.put_bytes("uploads/f/x.png", b"mine")
    assert s3_gateway.list_keys(one.location.prefix) == [f"{one.location.prefix}uploads/f/x.png"]
    assert not other.exists("uploads/f/x.png")
    other.put_bytes("uploads/f/x.png", b"theirs")
    assert one.read_bytes("uploads/f/x.png") == b"mine"


def test_s3_blobs_have_no_local_path(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = _s3_store(s3_gateway, tmp_path)
    store.put_bytes("outputs/x.mp4", b"x")
    assert store.local_path("outputs/x.mp4") is None


def test_no_prefix_means_the_bucket_root(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = S3BlobStore(S3Location(s3_gateway.bucket), tmp_path, client=s3_gateway.client())
    key = f"root-{uuid.uuid4().hex}.bin"
    store.put_bytes(key, b"top")
    assert key in s3_gateway.list_keys("root-")
    store.delete(key)
    assert key not in s3_gateway.list_keys("root-")


def test_large_files_go_up_in_parts(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = _s3_store(s3_gateway, tmp_path)
    store.put_file("outputs/big.mp4", _scratch_file(store, os.urandom(6 * MIB + 1)))
    store.put_file("outputs/small.mp4", _scratch_file(store, os.urandom(THRESHOLD - 1)))
    head = s3_gateway.client().head_object
    # S3's ETag of a multipart object is "<md5 of the part md5s>-<number of parts>".
    big = head(Bucket=s3_gateway.bucket, Key=store.object_key("outputs/big.mp4"))
    assert big["ETag"].strip('"').endswith("-2")
    small = head(Bucket=s3_gateway.bucket, Key=store.object_key("outputs/small.mp4"))
    assert "-" not in small["ETag"]
    assert big["ContentType"] == "video/mp4"


def test_presigned_url_serves_the_object_then_expires(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = _s3_store(s3_gateway, tmp_path, presign_ttl_s=2)
    store.put_bytes("outputs/p.mp4", b"a small video")
    url = store.direct_url("outputs/p.mp4", filename="output.mp4", content_type="video/mp4")
    assert url is not None and url.startswith(s3_gateway.endpoint + "/")
    assert "X-Amz-Expires=2" in url
    fresh = httpx.get(url)
    assert fresh.status_code == 200
    assert fresh.content == b"a small video"
    assert fresh.headers["content-type"] == "video/mp4"
    assert fresh.headers["content-disposition"] == 'inline; filename="output.mp4"'
    time.sleep(3.5)
    expired = httpx.get(url)
    assert expired.status_code == 403
    assert "expired" in expired.text


def test_presigned_url_of_a_download_is_an_attachment(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = _s3_store(s3_gateway, tmp_path)
    store.put_bytes("uploads/u/page.html", b"<script>alert(1)</script>")
    url = store.presigned_url(
        "uploads/u/page.html", filename="page.html", content_type="application/octet-stream", ttl_s=60
    )
    answer = httpx.get(url)
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"] == 'attachment; filename="page.html"'


def test_a_tampered_presigned_url_is_refused(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = _s3_store(s3_gateway, tmp_path, presign_ttl_s=60)
    store.put_bytes("outputs/one.mp4", b"1")
    store.put_bytes("outputs/two.mp4", b"2")
    url = store.direct_url("outputs/one.mp4", filename="output.mp4", content_type="video/mp4")
    assert url is not None
    assert httpx.get(url.replace("/one.mp4", "/two.mp4")).status_code == 403


def test_presign_ttl_is_capped_at_seven_days(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="604800"):
        _s3_store(s3_gateway, tmp_path, presign_ttl_s=MAX_PRESIGN_TTL_S + 1)


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://media", "media", ""),
        ("s3://media/", "media", ""),
        ("s3://media/reel", "media", "reel/"),
        ("s3://media/a/b/", "media", "a/b/"),
    ],
)
def test_storage_url_parsing(url: str, bucket: str, prefix: str) -> None:
    assert S3Location.parse(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "http://media/x", "s3://media/a//b", "s3://m/../x"])
def test_bad_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="REEL_STORAGE_URL"):
        S3Location.parse(url)


def test_wiring_picks_the_store(
    tmp_path: Path, s3_gateway: S3Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_gateway.aws_env().items():
        monkeypatch.setenv(name, value)
    assert isinstance(build_blob_store(Settings(data_dir=tmp_path)), LocalBlobStore)
    local = build_blob_store(Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "elsewhere").resolve()
    s3 = build_blob_store(
        Settings(
            data_dir=tmp_path,
            storage_url=f"s3://{s3_gateway.bucket}/wired",
            file_urls="presigned",
            file_url_ttl_s=600,
        )
    )
    assert isinstance(s3, S3BlobStore)
    assert s3.location == S3Location(s3_gateway.bucket, "wired/")
    assert s3.presign_ttl_s == 600
    assert s3.scratch_dir() == tmp_path / "scratch"
    with pytest.raises(ValueError, match="REEL_FILE_URLS=presigned needs S3"):
        build_blob_store(Settings(data_dir=tmp_path, file_urls="presigned"))
    with pytest.raises(ValueError, match="REEL_STORAGE_URL"):
        build_blob_store(Settings(data_dir=tmp_path, storage_url="gs://bucket"))


def test_client_reads_the_standard_aws_variables(
    s3_gateway: S3Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_gateway.aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    client = make_s3_client()
    assert client.meta.endpoint_url == s3_gateway.endpoint
    assert client.meta.region_name == "eu-west-3"
    store = S3BlobStore(S3Location(s3_gateway.bucket, "env/"), tmp_path)
    store.put_bytes("k.bin", b"through the environment")
    assert "env/k.bin" in s3_gateway.list_keys("env/")


# --- errors: a clear StorageUnavailable, never a bare botocore exception ---------------------


def test_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3BlobStore(S3Location("media", "p/"), tmp_path)
    for action in (
        lambda: store.put_bytes("a.png", b"x"),
        lambda: store.read_bytes("a.png"),
        lambda: store.exists("a.png"),
        lambda: store.delete("a.png"),
    ):
        with pytest.raises(StorageUnavailable, match=f"s3://media/p/a.png at {dead}"):
            action()


def test_missing_bucket(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    store = S3BlobStore(S3Location("no-such-bucket"), tmp_path, client=s3_gateway.client())
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        store.put_bytes("a.png", b"x")


def test_wrong_credentials(s3_gateway: S3Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_gateway.aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3BlobStore(S3Location(s3_gateway.bucket, "denied/"), tmp_path)
    with pytest.raises(StorageUnavailable, match=r"SignatureDoesNotMatch|AccessDenied"):
        store.put_bytes("a.png", b"x")
    with pytest.raises(StorageUnavailable):
        store.exists("a.png")
