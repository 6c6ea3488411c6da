"""Faults outside the model, in process: each ends its prediction (or hands it back) and the
worker goes on; nothing is left in scratch, no output is orphaned, nothing runs twice.

Regression tests for issue 9's defects 1 (a delete race killed the worker) and 2 (a storage
blip threw a finished video away), in both deployments.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reel.backends.base import CancelCheck, FrameSink, GenerationRequest, ProgressCallback
from reel.backends.sandbox import SandboxBackend
from reel.errors import StorageUnavailable
from reel.media.safety import NsfwClassifier
from reel.predictions.keys import Principal
from reel.wiring import Services
from reel.worker.runner import Worker
from support.backends import ScriptedBackend
from support.factories import load
from support.media import png_base64
from support.modes import RUNNER_MODES, services_in_mode

MODEL = "runwayml/gen4-turbo"


@pytest.fixture(params=RUNNER_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, lease_s=2.0, public_url="http://reel.test") as built:
        yield built


@pytest.fixture
def owner(services: Services) -> Principal:
    return services.keys.authenticate(services.keys.create("t")[0])


def _submit(services: Services, owner: Principal) -> str:
    body = {"prompt": "move", "image": png_base64(128, 128), "aspect_ratio": "1:1", "duration": 5}
    return services.predictions.submit(owner, MODEL, body, None).prediction.id


def _blob_files(services: Services, under: str) -> list[Path]:
    root: Path = services.blobs.root  # type: ignore[attr-defined]
    return sorted(p for p in (root / under).rglob("*") if p.is_file())


def _scratch_files(services: Services) -> list[Path]:
    return [p for p in services.blobs.scratch_dir().iterdir() if p.is_file()]


class CountingSandbox(SandboxBackend):
    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None:
        self.runs += 1
        super().generate(request, sink, progress, is_cancelled)


def test_an_input_gone_from_storage_fails_that_prediction_and_the_worker_goes_on(
    services: Services, owner: Principal
) -> None:
    broken = _submit(services, owner)
    fine = _submit(services, owner)
    services.blobs.delete(load(services, broken).input_blob)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    assert worker.run_once() is True  # no FileNotFoundError out of the loop
    row = load(services, broken)
    assert (row.status, row.failure_code) == ("failed", "internal")
    assert row.error == "the input image is no longer in storage"
    assert worker.run_once() is True
    assert load(services, fine).status == "completed"


def test_a_prediction_deleted_between_claim_and_input_read_ends_quietly(
    services: Services, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    read_bytes = services.blobs.read_bytes

    def deleted_first(key: str) -> bytes:
        services.predictions.delete(owner, [prediction_id])  # the client's DELETE wins the race
        return read_bytes(key)

    monkeypatch.setattr(services.blobs, "read_bytes", deleted_first)
    assert worker.run_once() is True
    row = load(services, prediction_id)
    assert row.status == "cancelled" and row.deleted_at is not None and row.outputs == []
    assert _blob_files(services, "outputs") == [] and _scratch_files(services) == []


def test_a_crashing_safety_check_fails_the_prediction_with_its_reason(
    services: Services, owner: Principal
) -> None:
    class Broken(NsfwClassifier):
        def check_video(self, path: Path) -> bool:
            raise RuntimeError("onnxruntime: model file is corrupt\nstack details")

    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1", nsfw=Broken())
    assert worker.run_once() is True
    row = load(services, prediction_id)
    assert (row.status, row.failure_code) == ("failed", "internal")
    assert row.error == (
        "internal error while checking the output with the safety classifier: "
        "RuntimeError: onnxruntime: model file is corrupt"
    )
    assert _blob_files(services, "outputs") == [] and _scratch_files(services) == []


def test_an_encoder_failure_is_not_blamed_on_the_model(services: Services, owner: Principal) -> None:
    def wrong_size_frames(request: GenerationRequest, sink: FrameSink, *_: object) -> None:
        sink.write(np.zeros((request.height + 2, request.width, 3), np.uint8))

    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: ScriptedBackend("wrong-size", wrong_size_frames)}, "w1")
    assert worker.run_once() is True
    row = load(services, prediction_id)
    assert row.status == "failed"
    assert row.error.startswith("internal error while encoding the video: "), row.error
    assert _scratch_files(services) == []


def test_a_storage_blip_during_the_upload_keeps_the_finished_video(
    services: Services, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction_id = _submit(services, owner)
    backend = CountingSandbox()
    worker = Worker(services, {MODEL: backend}, "w1")
    put_file = services.blobs.put_file
    refusals = []

    def blipping(key: str, source: Path) -> None:
        if len(refusals) < 3:
            refusals.append(key)
            raise StorageUnavailable(f"storage: could not store {key}: connection refused")
        put_file(key, source)

    monkeypatch.setattr(services.blobs, "put_file", blipping)
    assert worker.run_once() is True
    row = load(services, prediction_id)
    assert row.status == "completed", row.error
    assert backend.runs == 1, "the video was generated again"
    assert len(refusals) == 3 and services.blobs.exists(row.outputs[0])
    assert _scratch_files(services) == []


def test_a_video_whose_prediction_is_cancelled_while_the_store_is_away_is_not_kept(
    services: Services, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    prediction_id = _submit(services, owner)
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    attempts = []

    def away(key: str, source: Path) -> None:
        attempts.append(key)
        if len(attempts) == 2:
            services.predictions.cancel(owner, prediction_id)
        raise StorageUnavailable(f"storage: could not store {key}: timed out")

    monkeypatch.setattr(services.blobs, "put_file", away)
    done = threading.Event()
    runner = threading.Thread(target=lambda: (worker.run_once(), done.set()))
    runner.start()
    runner.join(30)
    assert done.is_set(), "the worker kept retrying the upload of a cancelled prediction"
    row = load(services, prediction_id)
    assert row.status == "cancelled" and row.outputs == []
    assert _blob_files(services, "outputs") == [] and _scratch_files(services) == []


def test_an_unexpected_error_in_claiming_does_not_stop_the_loop(
    services: Services, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1")
    claim = services.dispatcher.claim
    calls = []

    def flaky(worker_id: str, models: list[str]) -> object:
        calls.append(worker_id)
        if len(calls) == 1:
            raise KeyError("a bug")
        return claim(worker_id, models)

    monkeypatch.setattr(services.dispatcher, "claim", flaky)
    prediction_id = _submit(services, owner)
    loop = threading.Thread(target=worker.run_forever)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while load(services, prediction_id).status != "completed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load(services, prediction_id).status == "completed"
    finally:
        worker.shutting_down.set()
        loop.join(15)
    assert not loop.is_alive() and len(calls) >= 2


def test_a_failure_message_names_no_server_path(services: Services, owner: Principal) -> None:
    def missing_file(*_: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/srv/reel/weights/vae.safetensors")

    prediction_id = _submit(services, owner)
    assert Worker(services, {MODEL: ScriptedBackend("missing-file", missing_file)}, "w1").run_once() is True
    row = load(services, prediction_id)
    assert row.error == (
        "internal error in the missing-file backend: FileNotFoundError: [Errno 2] No such file or directory"
    )
