"""What only the procrastinate dispatcher does: its jobs, queues, notifications and sweeps,
on the real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from reel.dispatch.procrastinate import MAX_QUEUE_BYTES, ProcrastinateDispatcher, queue_for
from reel.predictions.keys import Principal
from reel.wiring import Services
from support.factories import claim_soon, insert_prediction, load, new_prediction, services_for
from support.modes import close

MODEL = "runwayml/gen4-turbo"
LEASE_S = 0.5


@pytest.fixture
def services(postgres_url: str, data_dir: Path) -> Iterator[Services]:
    built = services_for(data_dir, database_url=postgres_url, lease_s=LEASE_S, max_attempts=3)
    assert isinstance(built.dispatcher, ProcrastinateDispatcher)  # auto picks it on PostgreSQL
    yield built
    close(built)


@pytest.fixture
def key_id(services: Services) -> str:
    return services.keys.create("t")[1].id


def jobs(services: Services) -> list[Any]:
    with services.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, queue_name, lock, queueing_lock, args, status "
                    "FROM procrastinate_jobs ORDER BY id"
                )
            ).all()
        )


def slow_polling(services: Services) -> ProcrastinateDispatcher:
    """A second dispatcher that polls once a minute: it only wakes early through NOTIFY."""
    return ProcrastinateDispatcher(
        services.sessions, services.engine, lease_s=LEASE_S, max_attempts=3, poll_interval_s=60
    )


def listeners(services: Services) -> set[int]:
    """Backend pids of this database's connections whose last statement was a LISTEN."""
    with services.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND state = 'idle'"
            )
        ).scalars()
        return set(found)


def waiting(dispatcher: ProcrastinateDispatcher) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.wait_for_work, args=([MODEL], stop), daemon=True)
    return thread, stop


def test_each_prediction_is_one_job_in_its_models_queue_deferred_with_it(
    services: Services, key_id: str
) -> None:
    prediction_id = insert_prediction(services, key_id)
    (job,) = jobs(services)
    assert job.queue_name == MODEL and job.status == "todo"
    assert job.args == {"prediction_id": prediction_id}
    assert job.lock == job.queueing_lock == prediction_id
    assert load(services, prediction_id).job_id == job.id


def test_the_database_refuses_a_second_waiting_job_for_one_prediction(
    services: Services, key_id: str
) -> None:
    prediction_id = insert_prediction(services, key_id)
    with pytest.raises(IntegrityError), services.sessions.begin() as session:
        services.dispatcher.submitted(session, prediction_id, MODEL)
    assert len(jobs(services)) == 1


def test_a_rolled_back_insert_leaves_no_job(services: Services, key_id: str) -> None:
    row = new_prediction(key_id, MODEL)
    prediction_id = row.id
    with pytest.raises(RuntimeError), services.sessions.begin() as session:
        session.add(row)
        services.dispatcher.submitted(session, prediction_id, MODEL)
        assert len(jobs(services)) == 0  # not visible outside the transaction ...
        raise RuntimeError("abort")
    assert jobs(services) == []  # ... and gone with it


def test_long_model_ids_get_queue_names_that_fit_postgres_channel_names(
    services: Services, key_id: str
) -> None:
    long_a = "some-org/" + "a" * 80 + "/i2v-720p"
    long_b = "some-org/" + "a" * 80 + "/i2v-480p"
    assert len(queue_for(long_a).encode()) <= MAX_QUEUE_BYTES
    assert queue_for(long_a) != queue_for(long_b)
    assert queue_for(MODEL) == MODEL
    prediction_id = insert_prediction(services, key_id, model=long_a)  # its NOTIFY must not fail
    assert services.dispatcher.claim("w", [long_b]) is None
    claim = services.dispatcher.claim("w", [long_a])
    assert claim is not None and claim.prediction_id == prediction_id


def test_an_idle_worker_is_woken_by_notify_not_by_its_poll(services: Services, key_id: str) -> None:
    dispatcher = slow_polling(services)
    try:
        assert dispatcher.claim("idle", [MODEL]) is None  # starts listening
        assert dispatcher._wake.wait(5)  # connected; it wakes once then, for anything missed
        dispatcher._wake.clear()
        thread, stop = waiting(dispatcher)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "woke without any work"
        insert_prediction(services, key_id)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the insert's notification did not wake the worker"
        stop.set()
    finally:
        dispatcher.close()


def test_notifications_come_back_after_the_listening_connection_is_killed(
    services: Services, key_id: str
) -> None:
    dispatcher = slow_polling(services)
    try:
        assert dispatcher.claim("idle", [MODEL]) is None
        deadline = time.monotonic() + 10
        while not (old := listeners(services)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert old, "no LISTEN connection found"
        with services.engine.begin() as conn:
            for pid in old:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The listener wakes the worker when it notices the loss and again when it reconnects,
        # before its new connection LISTENs: once a new pid listens, both wakes are behind us.
        deadline = time.monotonic() + 15
        while not (listeners(services) - old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listeners(services) - old, "the listener did not reconnect"
        dispatcher._wake.clear()  # wait for the insert's notification alone
        thread, stop = waiting(dispatcher)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "woke without any work"
        insert_prediction(services, key_id)
        thread.join(timeout=10)
        assert not thread.is_alive()
        stop.set()
    finally:
        dispatcher.close()


def test_abort_reaches_the_running_claim_without_waiting_for_a_heartbeat(
    services: Services, key_id: str
) -> None:
    prediction_id = insert_prediction(services, key_id)
    claim = services.dispatcher.claim("w", [MODEL])
    assert claim is not None
    time.sleep(0.5)  # the listener is up
    services.predictions.cancel(Principal(key_id=key_id, webhook_secret=""), prediction_id)
    assert claim.cancelled.wait(10), "the abort notification never set the claim's cancel flag"
    (job,) = jobs(services)
    assert job.status == "doing"  # flagged for abort; the worker closes it
    services.dispatcher.finished(claim)
    assert jobs(services) == []


def test_a_job_lost_by_a_live_worker_is_queued_again(services: Services, key_id: str) -> None:
    # The worker keeps polling (its queue heartbeat is fresh) but stopped heartbeating this
    # prediction, e.g. because its hand-back failed while the database was away.
    prediction_id = insert_prediction(services, key_id)
    lost = services.dispatcher.claim("w", [MODEL])
    assert lost is not None
    taken = claim_soon(services, "w", MODEL)
    assert taken.prediction_id == prediction_id and taken.attempt == 2


def test_a_prediction_without_a_job_is_queued_by_the_sweep(services: Services, key_id: str) -> None:
    # As left by REEL_DISPATCH=table on the same database, or by an operator deleting a job.
    prediction_id = insert_prediction(services, key_id)
    with services.engine.begin() as conn:
        conn.execute(text("DELETE FROM procrastinate_jobs"))
    assert services.dispatcher.claim("w", [MODEL]) is None
    time.sleep(LEASE_S * 1.2)
    claim = claim_soon(services, "w", MODEL)
    assert claim.prediction_id == prediction_id and claim.attempt == 1


def test_leave_unregisters_the_worker(services: Services, key_id: str) -> None:
    assert services.dispatcher.claim("w", [MODEL]) is None
    with services.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar() == 1
    services.dispatcher.leave("w")
    with services.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar() == 0
