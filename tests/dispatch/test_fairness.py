"""Fair claims between keys and per-key caps, held against every dispatcher on every database
(``reel.dispatch.fair``): round robin by key, oldest first within a key; a key at its
``max_concurrent`` waits while others start; the cap holds against racing workers; and the
API's view of where a waiting prediction stands agrees with the order claims follow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reel.dispatch.fair import waiting_states
from reel.lifecycle import transitions
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.transitions import Claim
from reel.predictions.limits import Limits
from reel.wiring import Services
from support.factories import insert_prediction
from support.modes import DISPATCH_MODES, services_in_mode

MODEL = "runwayml/gen4-turbo"


@pytest.fixture(params=DISPATCH_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    # A long lease: nothing here heartbeats, and no test is about takeovers.
    with services_in_mode(request, data_dir, lease_s=60, max_attempts=2) as built:
        yield built


@pytest.fixture(params=DISPATCH_MODES)
def capped_by_default(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, lease_s=60, key_max_concurrent=1) as built:
        yield built


def new_key(services: Services, **limits: int) -> str:
    return services.keys.create("t", Limits(**limits))[1].id


def claim_ids(services: Services, count: int) -> list[str | None]:
    claims = [services.dispatcher.claim(f"w{i}", [MODEL]) for i in range(count)]
    return [claim.prediction_id if claim else None for claim in claims]


def end(services: Services, claim_of: str | Claim, worker: str = "") -> None:
    """End the prediction a worker holds (its claim, or its id and the worker), as it would."""
    claim = claim_of if isinstance(claim_of, Claim) else Claim(claim_of, MODEL, worker, 1)
    with services.sessions.begin() as session:
        assert transitions.fail(session, claim, "done", FailureCode.INTERNAL, on_ended=lambda *_: None)
    services.dispatcher.finished(claim)


def test_a_key_with_a_backlog_does_not_hold_back_another_keys_first(services: Services) -> None:
    busy, other = new_key(services), new_key(services)
    backlog = [insert_prediction(services, busy) for _ in range(5)]
    single = insert_prediction(services, other)
    # The backlog's oldest goes first (both keys' first turn; it is older); then the other
    # key's first turn comes before the backlog's second, and the backlog resumes in order.
    assert claim_ids(services, 3) == [backlog[0], single, backlog[1]]


def test_round_robin_between_keys_with_backlogs(services: Services) -> None:
    a, b, c = new_key(services), new_key(services), new_key(services)
    a_ids = [insert_prediction(services, a) for _ in range(3)]
    b_ids = [insert_prediction(services, b) for _ in range(3)]
    c_ids = [insert_prediction(services, c) for _ in range(1)]
    order = claim_ids(services, 8)
    assert order == [a_ids[0], b_ids[0], c_ids[0], a_ids[1], b_ids[1], a_ids[2], b_ids[2], None]


def test_a_key_at_its_cap_waits_while_other_keys_start(services: Services) -> None:
    capped, free = new_key(services, max_concurrent=1), new_key(services)
    first, second = insert_prediction(services, capped), insert_prediction(services, capped)
    other = insert_prediction(services, free)
    assert claim_ids(services, 3) == [first, other, None]
    with services.sessions() as session:
        states = waiting_states(session, [(second, MODEL)], None)
    assert states[second].throttled
    end(services, first, "w0")
    assert claim_ids(services, 1) == [second]


def test_the_server_default_cap_applies_to_keys_without_their_own(capped_by_default: Services) -> None:
    services = capped_by_default
    default, own = new_key(services), new_key(services, max_concurrent=2)
    d1, d2 = insert_prediction(services, default), insert_prediction(services, default)
    o1, o2 = insert_prediction(services, own), insert_prediction(services, own)
    assert sorted(filter(None, claim_ids(services, 4))) == sorted([d1, o1, o2])
    with services.sessions() as session:
        states = waiting_states(session, [(d2, MODEL)], 1)
    assert states[d2].throttled and states[d2].queue_position == 0


def test_racing_workers_never_start_more_than_a_keys_cap(services: Services) -> None:
    capped = new_key(services, max_concurrent=2)
    for _ in range(12):
        insert_prediction(services, capped)
    won: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def work(worker: str) -> None:
        start.wait()
        for _ in range(3):
            claim = services.dispatcher.claim(worker, [MODEL])
            if claim is not None:
                with lock:
                    won.append(claim.prediction_id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 2 and len(set(won)) == 2


def test_queue_positions_follow_the_claim_order(services: Services) -> None:
    a, b = new_key(services), new_key(services)
    a_ids = [insert_prediction(services, a) for _ in range(3)]
    b_id = insert_prediction(services, b)
    with services.sessions() as session:
        states = waiting_states(session, [(i, MODEL) for i in [*a_ids, b_id]], None)
    by_position = sorted(states, key=lambda i: states[i].queue_position)
    assert [states[i].queue_position for i in by_position] == [0, 1, 2, 3]
    assert not any(state.throttled for state in states.values())
    assert claim_ids(services, 4) == by_position


def test_one_worker_ending_each_prediction_serves_the_keys_in_turn(services: Services) -> None:
    """With one worker nothing else is running at a claim: whose turn it is comes from which key
    was served last."""
    busy, other = new_key(services), new_key(services)
    backlog = [insert_prediction(services, busy) for _ in range(3)]
    order: list[str] = []
    for step in range(4):
        if step == 1:
            single = insert_prediction(services, other)
        claim = services.dispatcher.claim("w0", [MODEL])
        assert claim is not None
        order.append(claim.prediction_id)
        end(services, claim)
    assert order == [backlog[0], single, backlog[1], backlog[2]]
