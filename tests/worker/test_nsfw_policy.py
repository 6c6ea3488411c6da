"""What the worker does with the safety classifier's verdict: flag it, or refuse the output."""

from __future__ import annotations

from pathlib import Path

from reel.backends.sandbox import SandboxBackend
from reel.media.safety import NsfwClassifier
from reel.predictions.views import prediction_object
from reel.worker.runner import Worker
from support.factories import load, services_for
from support.media import png_base64

MODEL = "runwayml/gen4-turbo"


class FlagsEverything(NsfwClassifier):
    """Stands in for a positive verdict: the tests cannot ship explicit images."""

    def check_video(self, path: Path) -> bool:
        assert path.stat().st_size > 0
        return True


def _run_one(data_dir: Path, refuse: bool) -> tuple[str, dict[str, object]]:
    services = services_for(data_dir, refuse_nsfw=refuse, public_url="http://reel.test")
    owner = services.keys.authenticate(services.keys.create("t")[0])
    body = {"prompt": "x", "image": png_base64(320, 320), "aspect_ratio": "1:1"}
    prediction_id = services.predictions.submit(owner, MODEL, body, None).prediction.id
    worker = Worker(services, {MODEL: SandboxBackend()}, "w1", nsfw=FlagsEverything())
    assert worker.run_once()
    row = load(services, prediction_id)
    return row.status, prediction_object(row, "http://reel.test", services.blobs)


def test_flagged_output_is_returned_with_its_flag_by_default(data_dir: Path) -> None:
    status, data = _run_one(data_dir, refuse=False)
    assert status == "completed"
    assert data["has_nsfw_contents"] == [True]
    assert len(data["outputs"]) == 1  # type: ignore[arg-type]


def test_flagged_output_is_refused_when_configured(data_dir: Path) -> None:
    status, data = _run_one(data_dir, refuse=True)
    assert status == "failed"
    assert "safety classifier" in str(data["error"])
    assert data["outputs"] == []
