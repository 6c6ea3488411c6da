"""One real S3-compatible server (a JuiceFS gateway on loopback) for the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.s3 import S3Gateway


@pytest.fixture(scope="session")
def s3_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Gateway]:
    gateway = S3Gateway(tmp_path_factory.mktemp("s3-gateway")).start()
    yield gateway
    gateway.stop()
