"""The dispatcher contract, held against every dispatcher on every database it supports:
the table dispatcher on SQLite and PostgreSQL, procrastinate on PostgreSQL.

Exclusive claims, oldest first, only for served models; a silent holder is taken over and
fenced out; a prediction whose workers keep dying is failed with a reason; cancel stops the
holder; a hand-back does not count as an attempt; a submission rolled back leaves nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reel.dispatch.table import make_worker_id
from reel.lifecycle.clock import utcnow
from reel.predictions.keys import Principal
from reel.store.tables import Prediction, WebhookDelivery
from reel.wiring import Services
from support.factories import claim_soon, insert_prediction, load, new_prediction
from support.modes import DISPATCH_MODES, services_in_mode

MODEL = "runwayml/gen4-turbo"
OTHER_MODEL = "wavespeed-ai/wan-2.2/i2v-720p"
LEASE_S = 0.5


@pytest.fixture(params=DISPATCH_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(
        request, data_dir, lease_s=LEASE_S, max_attempts=2, public_url="http://reel.test"
    ) as built:
        yield built


@pytest.fixture(params=DISPATCH_MODES)
def long_lease_services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    """For tests of who gets what, where a lease running out mid-test (no heartbeats here) would
    be a takeover the test is not about."""
    with services_in_mode(request, data_dir, lease_s=60, max_attempts=2) as built:
        yield built


@pytest.fixture
def key_id(services: Services) -> str:
    return services.keys.create("t")[1].id


def test_claims_oldest_first_and_only_for_served_models(services: Services, key_id: str) -> None:
    first = insert_prediction(services, key_id)
    other_model = insert_prediction(services, key_id, model=OTHER_MODEL)
    second = insert_prediction(services, key_id)
    claims = [services.dispatcher.claim("w", [MODEL]) for _ in range(3)]
    assert [c.prediction_id if c else None for c in claims] == [first, second, None]
    assert load(services, other_model).status == "created"
    assert load(services, first).worker_id == "w" and load(services, first).status == "processing"
    other = services.dispatcher.claim("w-other", [OTHER_MODEL])
    assert other is not None and other.prediction_id == other_model


def test_each_prediction_goes_to_exactly_one_of_many_racing_workers(long_lease_services: Services) -> None:
    services = long_lease_services
    key_id = services.keys.create("t")[1].id
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


def test_a_silent_holder_is_taken_over_and_fenced_out(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    old = services.dispatcher.claim("gone-worker", [MODEL])
    assert old is not None
    assert services.dispatcher.heartbeat(old, progress=0.2) is True
    assert services.dispatcher.claim("new-worker", [MODEL]) is None  # the holder is alive
    time.sleep(LEASE_S * 1.2)  # ... then falls silent
    new = claim_soon(services, "new-worker")
    assert new.prediction_id == prediction_id and new.attempt == 2
    assert services.dispatcher.heartbeat(old) is False
    assert services.dispatcher.heartbeat(new, progress=0.5) is True
    row = load(services, prediction_id)
    assert (row.worker_id, row.progress, row.attempts) == ("new-worker", 0.5, 2)


def test_gives_up_after_max_attempts_with_a_reason_and_a_webhook(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    with services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.webhook_url = "https://hooks.example/reel"
    assert claim_soon(services, "a").attempt == 1
    time.sleep(LEASE_S * 1.2)
    assert claim_soon(services, "b").attempt == 2
    time.sleep(LEASE_S * 1.2)
    deadline = time.monotonic() + 10
    while load(services, prediction_id).status != "failed" and time.monotonic() < deadline:
        assert services.dispatcher.claim("c", [MODEL]) is None
        time.sleep(0.05)
    row = load(services, prediction_id)
    assert row.status == "failed"
    assert "stopped 2 times" in row.error
    with services.sessions() as session:
        delivery = session.query(WebhookDelivery).one()
    assert delivery.prediction_id == prediction_id
    assert '"status":"failed"' in delivery.body


def test_cancel_stops_the_holder(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    owner = Principal(key_id=key_id, webhook_secret="")
    services.predictions.cancel(owner, prediction_id)
    assert services.dispatcher.heartbeat(claim) is False
    services.dispatcher.finished(claim)
    assert load(services, prediction_id).status == "cancelled"
    assert services.dispatcher.claim("w2", [MODEL]) is None


def test_cancel_of_a_waiting_prediction_means_nobody_runs_it(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    services.predictions.cancel(Principal(key_id=key_id, webhook_secret=""), prediction_id)
    assert services.dispatcher.claim("w", [MODEL]) is None
    assert load(services, prediction_id).status == "cancelled"


def test_release_requeues_without_counting_an_attempt(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    services.dispatcher.release(claim)
    row = load(services, prediction_id)
    assert (row.status, row.attempts, row.worker_id) == ("created", 0, None)
    again = services.dispatcher.claim("w2", [MODEL])
    assert again is not None and again.prediction_id == prediction_id and again.attempt == 1


def test_a_finished_prediction_is_not_offered_again(services: Services, key_id: str) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    with services.sessions.begin() as session:  # what the worker's fenced write does
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.status, row.finished_at = "completed", utcnow()
    services.dispatcher.finished(claim)
    time.sleep(LEASE_S * 1.2)  # not even once the holder has been silent for a lease
    assert services.dispatcher.claim("w2", [MODEL]) is None
    assert load(services, prediction_id).status == "completed"


def test_a_submission_rolled_back_leaves_nothing_to_claim(services: Services, key_id: str) -> None:
    row = new_prediction(key_id, MODEL)
    prediction_id = row.id
    with pytest.raises(RuntimeError), services.sessions.begin() as session:
        session.add(row)
        services.dispatcher.submitted(session, prediction_id, MODEL)
        raise RuntimeError("the request failed after the insert")
    assert services.dispatcher.claim("w", [MODEL]) is None


@pytest.fixture(params=[mode for mode in DISPATCH_MODES if mode.startswith("table-")])
def table_services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, lease_s=30, max_attempts=2) as built:
        yield built


def test_the_table_dispatcher_takes_over_from_a_dead_local_worker_at_once(table_services: Services) -> None:
    # procrastinate has no such shortcut: it judges workers by their heartbeats only.
    key_id = table_services.keys.create("t")[1].id
    insert_prediction(table_services, key_id)
    # A pid that cannot exist on this host: its holder is certainly dead.
    dead = make_worker_id().split(":")[0] + ":4194304:abcdef"
    assert table_services.dispatcher.claim(dead, [MODEL]) is not None
    taken = table_services.dispatcher.claim("alive", [MODEL])
    assert taken is not None and taken.attempt == 2
