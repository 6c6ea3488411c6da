"""One worker overlaps a prediction's decode, encode, safety check and upload with the next
prediction's denoising: the real worker loop, real storage and encoding, both deployments, and
the tiny distilled TI2V model on the CPU.

The order is made observable, not guessed at: a forward pre-hook on the VAE decoder (which
only the deferred post-processing runs) holds the first prediction's decode until a
transformer step has run. With the overlap that step is the second prediction's first; without
it nothing would run it and the wait would time out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reel.catalog.registry import load_registry
from reel.media.video import probe_video
from reel.predictions.keys import Principal
from reel.store.tables import Prediction
from reel.wiring import Services
from reel.worker.runner import Worker
from support.factories import load
from support.media import png_base64
from support.modes import RUNNER_MODES, services_in_mode
from support.tiny_models import TURBO_OF

pytest.importorskip("diffusers")

MODEL = "runwayml/gen4-turbo"
FRAMES = 8
LEASE_S = 0.4


@pytest.fixture(params=RUNNER_MODES)
def services(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Services]:
    with services_in_mode(request, data_dir, lease_s=LEASE_S, public_url="http://reel.test") as built:
        yield built


@pytest.fixture(scope="module")
def backend(models_file: Path) -> Any:
    from reel.backends.diffusers.backend import DiffusersBackend
    from reel.backends.diffusers.runtime import DiffusersRuntime

    return DiffusersBackend(load_registry(models_file)[TURBO_OF["wan2.2-ti2v"]], DiffusersRuntime("cpu"))


@pytest.fixture
def owner(services: Services) -> Principal:
    return services.keys.authenticate(services.keys.create("t")[0])


def _submit_short(services: Services, owner: Principal) -> str:
    """A Gen-4 Turbo prediction through the service, made a 1 s clip (8 frames) so the tiny
    model's run is short; everything else is what the API stored."""
    body = {"prompt": "a kite", "image": png_base64(96, 64), "aspect_ratio": "16:9"}
    prediction_id = services.predictions.submit(owner, MODEL, body, None).prediction.id
    with services.sessions.begin() as session:
        row = session.get(Prediction, prediction_id)
        assert row is not None
        row.params = {**row.params, "num_frames": FRAMES}
    return prediction_id


class Choreography:
    """Hooks on the loaded pipeline: the first decode waits for a transformer step."""

    def __init__(self, pipe: Any, *, hold_s: float = 30.0, on_hold: Any = None) -> None:
        self.decoding = threading.Event()
        self.step_during_decode = threading.Event()
        self.saw_step: bool | None = None
        self._held = False
        self._hold_s = hold_s
        self._on_hold = on_hold
        self._handles = [
            pipe.vae.decoder.register_forward_pre_hook(self._before_decode),
            pipe.transformer.register_forward_pre_hook(self._before_step),
        ]

    def _before_decode(self, *_: Any) -> None:
        if self._held:
            return
        self._held = True
        self.decoding.set()
        if self._on_hold is not None:
            self._on_hold()
        self.saw_step = self.step_during_decode.wait(self._hold_s)
        time.sleep(3 * LEASE_S)  # longer than a lease: only heartbeats keep this claim alive

    def _before_step(self, *_: Any) -> None:
        if self.decoding.is_set():
            self.step_during_decode.set()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def test_the_next_prediction_denoises_while_the_last_one_is_post_processed(
    services: Services, owner: Principal, backend: Any, tmp_path: Path
) -> None:
    first, second = _submit_short(services, owner), _submit_short(services, owner)
    choreography = Choreography(backend.load().pipe)
    worker = Worker(services, {MODEL: backend}, "w1")
    try:
        assert worker.run_once()  # denoises the first; its decode goes to the post thread
        assert worker.run_once()  # denoises the second meanwhile, then waits for the first
        assert worker.drain()
    finally:
        choreography.remove()
    # The second prediction's first step started before the first one's encode ended.
    assert choreography.saw_step is True
    for prediction_id in (first, second):
        row = load(services, prediction_id)
        assert (row.status, row.progress, len(row.outputs)) == ("completed", 1.0, 1), row.error
        video = tmp_path / f"{prediction_id}.mp4"
        video.write_bytes(services.blobs.read_bytes(row.outputs[0]))
        info = probe_video(video)
        assert (info.width, info.height, info.frame_count) == (1280, 720, FRAMES)
    assert worker.run_once() is False and worker.drain() is False


def test_a_prediction_cancelled_during_its_deferred_decode_ends_cancelled_once(
    services: Services, owner: Principal, backend: Any
) -> None:
    first, second = _submit_short(services, owner), _submit_short(services, owner)

    def cancel_first() -> None:
        services.predictions.cancel(owner, first)

    choreography = Choreography(backend.load().pipe, on_hold=cancel_first)
    worker = Worker(services, {MODEL: backend}, "w1")
    try:
        assert worker.run_once() and worker.run_once() and worker.drain()
    finally:
        choreography.remove()
    cancelled = load(services, first)
    assert (cancelled.status, cancelled.outputs) == ("cancelled", [])
    assert load(services, second).status == "completed"
    assert services.blobs.scratch_dir().exists() and not list(services.blobs.scratch_dir().iterdir())


def test_shutdown_during_a_deferred_decode_hands_that_prediction_back(
    services: Services, owner: Principal, backend: Any
) -> None:
    prediction_id = _submit_short(services, owner)
    worker = Worker(services, {MODEL: backend}, "w1")
    choreography = Choreography(backend.load().pipe, hold_s=0.0, on_hold=worker.shutting_down.set)
    try:
        assert worker.run_once()
        assert worker.drain()
    finally:
        choreography.remove()
    row = load(services, prediction_id)
    assert (row.status, row.outputs, row.error) == ("created", [], "")
