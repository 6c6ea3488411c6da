"""The verified-key cache: a key is read from the database once per ``cache_s``; a revoke
through the service, or a touch of the data dir's marker by another process, drops it at
once; a revoke the process cannot see (another host) applies within twice ``cache_s``."""

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


def test_when_a_key_falls_due_one_request_reads_it_and_the_others_go_on(services: Services) -> None:
    """Regression: every request in flight read an expired key at once, and under load that
    burst queued for the API's threads for seconds (polls' p99 was 5 s)."""
    keys = KeyService(services.sessions, cache_s=0.3)
    plaintext, _ = keys.create("t")
    keys.authenticate(plaintext)
    time.sleep(0.35)
    assert keys.cached(plaintext) is None  # the first to see it due goes to read it
    assert keys.cached(plaintext) is not None  # the others are answered meanwhile
    assert keys.cached(plaintext) is not None
    keys.verify(plaintext)
    assert keys.cached(plaintext) is not None
    time.sleep(0.65)  # past twice cache_s, nobody having read it again: nobody is answered
    assert keys.cached(plaintext) is None
    assert keys.cached(plaintext) is None


def test_a_key_found_revoked_when_read_again_is_answered_from_the_cache_no_more(services: Services) -> None:
    keys = KeyService(services.sessions, cache_s=0.3)
    plaintext, info = keys.create("t")
    keys.authenticate(plaintext)
    revoke_behind_its_back(services, info.id)
    time.sleep(0.35)
    assert keys.cached(plaintext) is None
    with pytest.raises(Unauthorized):
        keys.verify(plaintext)
    assert keys.cached(plaintext) is None
    with pytest.raises(Unauthorized):
        keys.authenticate(plaintext)
