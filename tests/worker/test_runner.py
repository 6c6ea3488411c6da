"""The worker loop with real storage and encoding, and backends named by how they behave,
in both deployments: SQLite with the table dispatcher, PostgreSQL with procrastinate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reel.backends.base import (
    CancelCheck,
    FrameSink,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
)
from reel.backends.sandbox import SandboxBackend
from reel.errors import StorageUnavailable
from reel.predictions.keys import Principal
from reel.wiring import Services
from reel.worker.runner import Worker
from support.backends import ScriptedBackend
from support.factories import load
from support.media import png_base64
from support.modes import RUNNER_MODES, services_in_mode

MODEL = "runwayml/gen4-turbo"


def _blows_up(request: GenerationRequest, sink: FrameSink, progress: ProgressCallback, *_: object) -> None:
    progress(0.3)
    raise ZeroDivisionError("model blew up")


class SlowStepsBackend:
    """Forty 50 ms steps, checking the cancel flag before each, like a diffusers callback."""

    kind = "slow"

    def __init__(self) -> None:
        self.steps_run = 0

    def readiness(self) -> tuple[bool, str]:
        return True, ""

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None:
        for step in range(40):
            if is_cancelled():
                raise GenerationCancelled
            time.sleep(0.05)
            self.steps_run += 1
            progress((step + 1) / 40)
        for _ in range(request.num_frames):
            sink.write(np.zeros((request.height, request.width, 3), np.uint8))


@pytest.fixture(params=RUNNER_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, lease_s=0.4, public_url="http://reel.test") as built:
        yield built


@pytest.fixture
def owner(services: Services) -> Principal:
    return services.keys.authenticate(services.keys.create("t")[0])


def _submit(services: Services, owner: Principal, prompt: str = "move") -> str:
    body = {"prompt": prompt, "image": png_base64(320, 320), "aspect_ratio": "1:1"}
    return services.predictions.submit(owner, MODEL, body, None).prediction.id


def test_sandbox_prediction_completes_with_an_output_file(services: Services, owner: Principal) -> None:
    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    assert worker.run_once() is True
    row = load(services, prediction_id)
    assert row.status == "completed" and row.progress == 1.0 and row.inference_ms > 0
    assert services.blobs.exists(row.outputs[0])
    assert row.nsfw == [False]
    assert worker.run_once() is False


def test_text_to_video_runs_without_an_input_image_and_hands_the_backend_its_loras(
    services: Services, owner: Principal
) -> None:
    seen: list[GenerationRequest] = []

    def record(request: GenerationRequest, sink: FrameSink, progress: ProgressCallback, *_: object) -> None:
        seen.append(request)
        SandboxBackend().generate(request, sink, progress, lambda: False)

    t2v = "wavespeed-ai/wan-2.2/t2v-5b-720p-lora"
    body = {"prompt": "a kite", "duration": 5, "loras": [{"path": "owner/style", "scale": 0.5}]}
    prediction_id = services.predictions.submit(owner, t2v, body, None).prediction.id
    assert load(services, prediction_id).input_blob is None
    worker = Worker(services, {t2v: ScriptedBackend("recording", record)}, "w1")
    assert worker.run_once() is True
    assert load(services, prediction_id).status == "completed"
    (request,) = seen
    assert request.image is None and (request.width, request.height) == (1280, 720)
    assert request.params["loras"] == [{"path": "owner/style", "scale": 0.5}]
    services.predictions.delete(owner, [prediction_id])  # no input blob to delete: no error


def test_backend_crash_fails_that_prediction_and_the_worker_goes_on(
    services: Services, owner: Principal
) -> None:
    crashed = _submit(services, owner)
    fine = _submit(services, owner)
    backend = ScriptedBackend("crashing", _blows_up)
    worker = Worker(services, {MODEL: backend}, "w1")
    assert worker.run_once()
    row = load(services, crashed)
    assert row.status == "failed"
    assert "ZeroDivisionError: model blew up" in row.error
    assert "HTTP 5" not in row.error
    worker._backends = {MODEL: SandboxBackend()}
    assert worker.run_once()
    assert load(services, fine).status == "completed"


def test_cancel_stops_generation_at_the_next_step(services: Services, owner: Principal) -> None:
    prediction_id = _submit(services, owner)
    backend = SlowStepsBackend()
    worker = Worker(services, {MODEL: backend}, "w1")
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    deadline = time.monotonic() + 10
    while load(services, prediction_id).progress < 0.1 and time.monotonic() < deadline:
        time.sleep(0.02)
    services.predictions.cancel(owner, prediction_id)
    runner.join(10)
    assert not runner.is_alive()
    assert backend.steps_run < 40, "generation ran to the end despite the cancel"
    row = load(services, prediction_id)
    assert row.status == "cancelled" and row.outputs == []
    assert not list(services.blobs.scratch_dir().glob("*.mp4"))


def test_shutdown_hands_the_prediction_back(services: Services, owner: Principal) -> None:
    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SlowStepsBackend()}, "w1")
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    while load(services, prediction_id).status != "processing":
        time.sleep(0.02)
    worker.shutting_down.set()
    runner.join(10)
    row = load(services, prediction_id)
    assert (row.status, row.attempts) == ("created", 0)


def test_an_idle_worker_takes_new_work_and_stops_on_shutdown(services: Services, owner: Principal) -> None:
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    loop = threading.Thread(target=worker.run_forever)
    loop.start()
    try:
        time.sleep(0.5)  # idle: waiting for work
        prediction_id = _submit(services, owner)
        deadline = time.monotonic() + 60
        while load(services, prediction_id).status != "completed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert load(services, prediction_id).status == "completed"
    finally:
        worker.shutting_down.set()
        loop.join(15)
    assert not loop.is_alive()


def test_an_unreachable_store_hands_the_prediction_back(
    services: Services, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")

    def unreachable(key: str) -> bytes:
        raise StorageUnavailable(f"storage: could not read {key}: connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(services.blobs, "read_bytes", unreachable)
        with pytest.raises(StorageUnavailable):  # the loop waits, then tries again
            worker.run_once()
    row = load(services, prediction_id)
    assert (row.status, row.attempts, row.worker_id) == ("created", 0, None)
    assert worker.run_once() is True
    assert load(services, prediction_id).status == "completed"
