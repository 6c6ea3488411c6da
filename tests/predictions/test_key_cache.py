"""The verified-key cache: a key is read from the database once per ``cache_s``; a revoke
through the service, or a touch of the data dir's marker by another process, drops it at
once; a revoke the process cannot see (another host) applies within ``cache_s``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import event, update

from reel.errors import Unauthorized
from reel.predictions.keys import KeyService
from reel.store.tables import ApiKey
from reel.wiring import REVOCATION_MARKER, Services
from support.factories import services_for


@pytest.fixture
def services(data_dir: Path) -> Services:
    return services_for(data_dir)


def revoke_behind_its_back(services: Services, key_id: str) -> None:
    """What another host's revoke looks like to this process: the row changes, nothing else."""
    with services.sessions.begin() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=ApiKey.created_at))


def test_a_cached_key_is_not_read_again_until_cache_s_passes(services: Services) -> None:
    keys = KeyService(services.sessions, cache_s=0.5)
    plaintext, info = keys.create("t")
    reads: list[str] = []
    event.listen(services.engine, "before_cursor_execute", lambda *args: reads.append(args[2]))
    keys.authenticate(plaintext)
    first = len(reads)
    for _ in range(20):
        keys.authenticate(plaintext)
    assert first >= 1 and len(reads) == first
    revoke_behind_its_back(services, info.id)
    keys.authenticate(plaintext)  # still trusted: within cache_s
    time.sleep(0.6)
    with pytest.raises(Unauthorized):
        keys.authenticate(plaintext)


def test_a_revoke_by_another_process_on_the_data_dir_applies_at_once(
    services: Services, data_dir: Path
) -> None:
    marker = data_dir / REVOCATION_MARKER
    server = KeyService(services.sessions, cache_s=60, revocation_marker=marker)
    cli = KeyService(services.sessions, cache_s=60, revocation_marker=marker)
    plaintext, info = server.create("t")
    other, _ = server.create("other")
    server.authenticate(plaintext)
    server.authenticate(other)
    cli.revoke(info.id)
    with pytest.raises(Unauthorized):
        server.authenticate(plaintext)
    assert server.authenticate(other).key_id != info.id  # the others are read again, and work


def test_without_a_cache_every_request_reads_the_key(services: Services) -> None:
    keys = KeyService(services.sessions, cache_s=0)
    plaintext, info = keys.create("t")
    keys.authenticate(plaintext)
    revoke_behind_its_back(services, info.id)
    with pytest.raises(Unauthorized):
        keys.authenticate(plaintext)
