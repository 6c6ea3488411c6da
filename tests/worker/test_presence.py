"""Workers keep their row in ``workers`` current, readiness included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reel.backends.base import CancelCheck, FrameSink, GenerationRequest, ProgressCallback
from reel.predictions.readiness import live_workers
from reel.store.tables import Worker
from reel.worker.presence import Presence
from support.factories import services_for


class WeightsArriveLater:
    """Not ready until ``pulled`` is set, like a model whose weights are still downloading."""

    kind = "diffusers"

    def __init__(self, reason: str = "run `reel models pull m`") -> None:
        self.pulled = False
        self.reason = reason

    def readiness(self) -> tuple[bool, str]:
        return (True, "") if self.pulled else (False, self.reason)

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None:
        raise AssertionError("not used")


def test_readiness_is_refreshed_on_every_beat_and_leave_removes_the_row(data_dir: Path) -> None:
    services = services_for(data_dir)
    backend = WeightsArriveLater()
    presence = Presence(services.sessions, "host:1:abc", {"m": backend})
    presence.beat()
    with services.sessions() as session:
        (worker,) = live_workers(session)
        assert worker.models["m"] == {
            "backend": "diffusers",
            "ready": False,
            "reason": "run `reel models pull m`",
        }
    backend.pulled = True
    presence.beat()
    with services.sessions() as session:
        assert session.get(Worker, "host:1:abc").models["m"]["ready"] is True  # type: ignore[union-attr]
    presence.leave()
    with services.sessions() as session:
        assert live_workers(session) == []


def test_the_full_reason_is_logged_once_per_change(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The model listing shows only a sanitized reason (see reel.predictions.readiness): the
    # worker's log is where the operator finds the path that is missing.
    caplog.set_level(logging.INFO, logger="reel.worker.presence")
    services = services_for(data_dir)
    full = "local model directory /srv/weights/wan does not exist; run `reel models pull m`"
    backend = WeightsArriveLater(full)
    presence = Presence(services.sessions, "host:1:abc", {"m": backend})
    presence.beat()
    presence.beat()
    not_ready = [r.getMessage() for r in caplog.records if "is not ready" in r.getMessage()]
    assert len(not_ready) == 1 and full in not_ready[0] and "host:1:abc" in not_ready[0]
    backend.pulled = True
    presence.beat()
    assert any("m is ready now" in r.getMessage() for r in caplog.records)
