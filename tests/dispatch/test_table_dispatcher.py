"""The SQLite-mode dispatcher: exclusive claims, leases, take-over, giving up, hand-back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reel.dispatch.local import make_worker_id
from reel.predictions.keys import Principal
from reel.store.tables import WebhookDelivery
from reel.wiring import Services
from support.factories import insert_prediction, load, services_for

MODEL = "runwayml/gen4-turbo"


@pytest.fixture
def services(data_dir: Path) -> Services:
    return services_for(data_dir, lease_s=0.5, max_attempts=2, public_url="http://reel.test")


@pytest.fixture
def key_id(services: Services) -> str:
    return services.keys.create("t")[1].id


def test_claims_oldest_first_and_only_for_served_models(services: Services, key_id: str) -> None:
    first = insert_prediction(services, key_id)
    other_model = insert_prediction(services, key_id, model="wavespeed-ai/wan-2.2/i2v-720p")
    second = insert_prediction(services, key_id)
    claims = [services.dispatcher.claim("w", [MODEL]) for _ in range(3)]
    assert [c.prediction_id if c else None for c in claims] == [first, second, None]
    assert load(services, other_model).status == "created"


def test_each_prediction_goes_to_exactly_one_of_many_racing_workers(services: Services, key_id: str) -> None:
    ids = {insert_prediction(services, key_id) for _ in range(30)}
    won: list[str] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        while (claim := services.dispatcher.claim(worker, [MODEL])) is not None:
            with lock:
                won.append(claim.prediction_id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == sorted(ids)


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out(
    services: Services, key_id: str
) -> None:
    prediction_id = insert_prediction(services, key_id)
    old = services.dispatcher.claim("gone-worker", [MODEL])
    assert old is not None
    assert services.dispatcher.claim("new-worker", [MODEL]) is None  # lease still valid
    time.sleep(0.6)
    new = services.dispatcher.claim("new-worker", [MODEL])
    assert new is not None and new.prediction_id == prediction_id and new.attempt == 2
    assert services.dispatcher.heartbeat(old) is False
    assert services.dispatcher.heartbeat(new, progress=0.5) is True
    assert load(services, prediction_id).progress == 0.5


def test_dead_local_worker_is_taken_over_at_once(services: Services, key_id: str) -> None:
    insert_prediction(services, key_id)
    # A pid that cannot exist on this host: its holder is certainly dead.
    dead = make_worker_id().split(":")[0] + ":4194304:abcdef"
    assert services.dispatcher.claim(dead, [MODEL]) is not None
    taken = services.dispatcher.claim("alive", [MODEL])
    assert taken is not None and taken.attempt == 2


def test_gives_up_after_max_attempts_with_a_reason_and_a_webhook(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    with services.sessions.begin() as session:
        row = session.get(type(load(services, prediction_id)), prediction_id)
        assert row is not None
        row.webhook_url = "https://hooks.example/reel"
    for worker in ("a", "b"):
        assert services.dispatcher.claim(worker, [MODEL]) is not None
        time.sleep(0.6)
    assert services.dispatcher.claim("c", [MODEL]) is None
    row = load(services, prediction_id)
    assert row.status == "failed"
    assert "stopped 2 times" in row.error
    with services.sessions() as session:
        delivery = session.query(WebhookDelivery).one()
    assert delivery.prediction_id == prediction_id
    assert '"status":"failed"' in delivery.body


def test_cancel_stops_heartbeats(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    owner = Principal(key_id=key_id, webhook_secret="")
    services.predictions.cancel(owner, prediction_id)
    assert services.dispatcher.heartbeat(claim) is False
    assert load(services, prediction_id).status == "cancelled"


def test_release_requeues_without_counting_an_attempt(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    services.dispatcher.release(claim)
    row = load(services, prediction_id)
    assert (row.status, row.attempts, row.worker_id) == ("created", 0, None)
    again = services.dispatcher.claim("w2", [MODEL])
    assert again is not None and again.attempt == 1
