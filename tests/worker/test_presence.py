"""Workers keep their row in ``workers`` current, readiness included."""

from __future__ import annotations

from pathlib import Path

from reel.backends.base import CancelCheck, FrameSink, GenerationRequest, ProgressCallback
from reel.store.tables import Worker
from reel.worker.presence import Presence, live_workers
from support.factories import services_for


class WeightsArriveLater:
    """Not ready until ``pulled`` is set, like a model whose weights are still downloading."""

    kind = "diffusers"

    def __init__(self) -> None:
        self.pulled = False

    def readiness(self) -> tuple[bool, str]:
        return (True, "") if self.pulled else (False, "run `reel models pull m`")

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
