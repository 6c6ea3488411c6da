"""Build services on a temporary data directory and put predictions straight into the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reel.lifecycle.clock import new_prediction_id, utcnow
from reel.lifecycle.states import Status
from reel.lifecycle.transitions import Claim
from reel.settings import Settings
from reel.store.tables import Prediction
from reel.wiring import Services, build_services


def services_for(data_dir: Path, **settings: Any) -> Services:
    return build_services(Settings(data_dir=data_dir, **settings))


def new_prediction(key_id: str, model: str = "runwayml/gen4-turbo") -> Prediction:
    """A waiting prediction row, not yet added to any session."""
    return Prediction(
        id=new_prediction_id(),
        key_id=key_id,
        model=model,
        status=Status.CREATED,
        input={},
        params={},
        input_blob="inputs/none.png",
        outputs=[],
        output_file_ids=[],
        nsfw=[],
        error="",
        progress=0.0,
        inference_ms=0,
        base64_output=False,
        created_at=utcnow(),
        attempts=0,
    )


def insert_prediction(services: Services, key_id: str, model: str = "runwayml/gen4-turbo") -> str:
    row = new_prediction(key_id, model)
    with services.sessions.begin() as session:
        session.add(row)
        services.dispatcher.submitted(session, row.id, model)
    return row.id


def load(services: Services, prediction_id: str) -> Prediction:
    with services.sessions() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        return row


def claim_soon(
    services: Services, worker: str, model: str = "runwayml/gen4-turbo", timeout_s: float = 10.0
) -> Claim:
    """Claim for ``worker`` as soon as the dispatcher offers something (a takeover waits for
    the holder's silence to be noticed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        claim = services.dispatcher.claim(worker, [model])
        if claim is not None:
            return claim
        time.sleep(0.05)
    raise AssertionError(f"{worker} got nothing to claim in {timeout_s} s")
