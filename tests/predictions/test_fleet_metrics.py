"""The metrics the lifecycle counts and the database gauges, in both deployments (SQLite with
the table dispatcher, PostgreSQL with procrastinate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from reel.backends.build import build_backends
from reel.lifecycle import transitions
from reel.lifecycle.failures import FailureCode
from reel.predictions.fleet_metrics import FleetCollector
from reel.store.tables import Prediction
from reel.wiring import Services
from reel.worker.presence import Presence
from support.factories import claim_soon, insert_prediction
from support.modes import RUNNER_MODES, services_in_mode

MODEL = "runwayml/gen4-turbo"


@pytest.fixture(params=RUNNER_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir) as built:
        yield built


def make_key(services: Services) -> str:
    _plaintext, info = services.keys.create("metrics")
    return info.id


def fleet(services: Services) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["model"]): sample.value
        for family in FleetCollector(services.sessions).collect()
        for sample in family.samples
    }


def ended(status: str) -> float:
    return REGISTRY.get_sample_value("reel_predictions_total", {"model": MODEL, "status": status}) or 0.0


def observations(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count", {"model": MODEL}) or 0.0


def test_queue_running_and_workers_are_read_from_the_database(services: Services) -> None:
    key_id = make_key(services)
    assert fleet(services)[("reel_queue_depth", MODEL)] == 0
    assert fleet(services)[("reel_workers_alive", MODEL)] == 0
    for _ in range(3):
        insert_prediction(services, key_id)
    Presence(services.sessions, "w-metrics", {MODEL: build_backends(sandbox=True)[MODEL]}).beat()
    claim_soon(services, "w-metrics")
    now = fleet(services)
    assert now[("reel_queue_depth", MODEL)] == 2
    assert now[("reel_predictions_running", MODEL)] == 1
    assert now[("reel_workers_alive", MODEL)] == 1
    assert now[("reel_workers_alive", "wavespeed-ai/ltx-video/i2v")] == 0  # it serves one model


def test_ends_are_counted_once_committed_and_runs_are_timed(services: Services) -> None:
    key_id = make_key(services)
    first, second = insert_prediction(services, key_id), insert_prediction(services, key_id)
    before = {s: ended(s) for s in ("failed", "cancelled")}
    waits, runs = observations("reel_queue_wait_seconds"), observations("reel_prediction_duration_seconds")
    claim = claim_soon(services, "w-counts")
    assert claim.prediction_id == first and claim.key_id == key_id  # the worker's log context
    assert observations("reel_queue_wait_seconds") == waits + 1

    # A transition in a transaction that rolls back is not counted ...
    with pytest.raises(RuntimeError), services.sessions.begin() as session:
        row = session.get(Prediction, second)
        assert row is not None
        transitions.cancel(row)
        raise RuntimeError("the commit never happens")
    assert ended("cancelled") == before["cancelled"]
    # ... the same one committed is, once.
    with services.sessions.begin() as session:
        row = session.get(Prediction, second)
        assert row is not None
        transitions.cancel(row)
    assert ended("cancelled") == before["cancelled"] + 1

    with services.sessions.begin() as session:
        assert transitions.fail(session, claim, "boom", FailureCode.GENERATION, on_ended=lambda *_: None)
    assert ended("failed") == before["failed"] + 1
    assert observations("reel_prediction_duration_seconds") == runs + 1
    # A fenced write that finds the claim gone writes nothing and counts nothing.
    with services.sessions.begin() as session:
        assert not transitions.fail(session, claim, "again", FailureCode.GENERATION, on_ended=lambda *_: None)
    assert ended("failed") == before["failed"] + 1
