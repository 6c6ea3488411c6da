"""Blobs in an S3-compatible bucket (AWS S3, MinIO, a JuiceFS gateway, R2 …) through boto3.

Selected by ``REEL_STORAGE_URL=s3://bucket/prefix``. The endpoint, region and credentials
come from the standard AWS variables and files, read by boto3 itself:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``,
which boto3 alone ignores), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``AWS_MAX_ATTEMPTS`` and so on.

Files are produced in a local scratch directory and uploaded when finished; files over the
multipart threshold go up in parts, several at once (boto3's managed transfer). Errors
leave as ``FileNotFoundError`` for a missing key and ``StorageUnavailable`` for everything
else (unreachable endpoint, wrong credentials, missing bucket), with the endpoint and the
object named in the message.
"""

from __future__ import annotations

import io
import mimetypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reel.errors import StorageUnavailable

MAX_PRESIGN_TTL_S = 7 * 24 * 3600
"""Signature version 4, which every S3 implementation accepts, caps presigned URLs at 7 days."""

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (``""`` or ending in ``/``), parsed from ``s3://bucket/prefix``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"REEL_STORAGE_URL: expected s3://bucket or s3://bucket/prefix, got {url!r}")
        prefix = parts.path.strip("/")
        if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
            raise ValueError(f"REEL_STORAGE_URL: the prefix in {url!r} has an empty, . or .. segment")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def make_s3_client() -> Any:
    """An S3 client configured the standard AWS way (environment, ``~/.aws`` files)."""
    # boto3 reads AWS_DEFAULT_REGION but not AWS_REGION, which the other AWS SDKs use.
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None
    config = Config(
        # SigV4 for presigned URLs too (boto3 would otherwise presign with SigV2 on some setups).
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=60,
        # One connection per API threadpool worker, roughly, so streams do not queue.
        max_pool_connections=32,
    )
    return boto3.session.Session(region_name=region).client("s3", config=config)


class S3BlobStore:
    """Blobs under ``location`` in a bucket.

    ``scratch`` is a local directory for files being produced. ``multipart_threshold_bytes``:
    files at least this big are uploaded in parts. ``presign_ttl_s``: when set, outputs are
    handed to clients as presigned GET URLs valid this long (``REEL_FILE_URLS=presigned``);
    when None, Reel's ``/files`` route streams them (``proxy``). ``client``: a boto3 S3
    client; default: one from the standard AWS configuration.
    """

    def __init__(
        self,
        location: S3Location,
        scratch: Path,
        *,
        multipart_threshold_bytes: int = 8 * 1024 * 1024,
        presign_ttl_s: int | None = None,
        client: Any = None,
    ) -> None:
        if presign_ttl_s is not None and not 1 <= presign_ttl_s <= MAX_PRESIGN_TTL_S:
            raise ValueError(f"presigned URLs live 1 to {MAX_PRESIGN_TTL_S} s, not {presign_ttl_s}")
        self.location = location
        self._scratch = scratch
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._client = client if client is not None else make_s3_client()
        # s3transfer raises the part size to S3's 5 MiB minimum when the threshold is lower.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=multipart_threshold_bytes,
        )
        self.presign_ttl_s = presign_ttl_s

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    def object_key(self, key: str) -> str:
        """The bucket key that holds ``key``: the prefix, then the key."""
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"blob key is not a plain relative path: {key!r}")
        return self.location.prefix + key

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        where = f"s3://{self.location.bucket}/{self.location.prefix}{key} at {self.endpoint}"
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING_CODES:
                raise FileNotFoundError(f"no blob {where}") from exc
            message = error.get("Message") or exc
            raise StorageUnavailable(f"storage: could not {action} {where}: {code} {message}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageUnavailable(f"storage: could not {action} {where}: {exc}") from exc

    def _extra_args(self, key: str) -> dict[str, str]:
        return {"ContentType": mimetypes.guess_type(key)[0] or "application/octet-stream"}

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("store", key):
            self._client.upload_fileobj(
                io.BytesIO(data),
                self.location.bucket,
                self.object_key(key),
                ExtraArgs=self._extra_args(key),
                Config=self._transfer,
            )

    def put_file(self, key: str, source: Path) -> None:
        # From the path rather than an open file: each part is read (and retried) from disk.
        with self._errors("store", key):
            self._client.upload_file(
                str(source),
                self.location.bucket,
                self.object_key(key),
                ExtraArgs=self._extra_args(key),
                Config=self._transfer,
            )
        source.unlink()

    def open(self, key: str, byte_range: tuple[int, int] | None = None) -> BinaryIO:
        extra = {} if byte_range is None else {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"}
        with self._errors("read", key):
            response = self._client.get_object(Bucket=self.location.bucket, Key=self.object_key(key), **extra)
        # botocore's StreamingBody reads and closes like a binary file.
        return cast(BinaryIO, _ErrorsWhileReading(response["Body"], self, key))

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, *, filename: str, content_type: str, ttl_s: int) -> str:
        """A GET URL for ``key`` valid ``ttl_s`` seconds, answered with ``content_type``."""
        disposition = "attachment" if content_type == "application/octet-stream" else "inline"
        with self._errors("sign a URL for", key):
            return str(
                self._client.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.location.bucket,
                        "Key": self.object_key(key),
                        "ResponseContentType": content_type,
                        "ResponseContentDisposition": f'{disposition}; filename="{filename}"',
                    },
                    ExpiresIn=ttl_s,
                )
            )

    @property
    def signs_urls(self) -> bool:
        return self.presign_ttl_s is not None

    def direct_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        if self.presign_ttl_s is None:
            return None
        return self.presigned_url(key, filename=filename, content_type=content_type, ttl_s=self.presign_ttl_s)

    def _head(self, key: str) -> dict[str, Any]:
        with self._errors("look up", key):
            return cast(
                dict[str, Any],
                self._client.head_object(Bucket=self.location.bucket, Key=self.object_key(key)),
            )

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.location.bucket, Key=self.object_key(key))

    def scratch_dir(self) -> Path:
        return self._scratch


class _ErrorsWhileReading(io.RawIOBase):
    """A response body whose network errors leave as ``StorageUnavailable``, like the rest."""

    def __init__(self, body: Any, store: S3BlobStore, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self._store._errors("read", self._key):
            return bytes(self._body.read(None if size is None or size < 0 else size))

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()
