"""Text-to-video through the official SDKs, unmodified, against a real ``reel serve`` (sandbox).

``wavespeed`` 2.0.5 runs a WaveSpeed-style t2v id; ``runwayml`` 5.24.0's
``text_to_video.create(...).wait_for_task_output()`` runs Runway's ``gen4.5``. The videos are
downloaded and decoded (tests/backends/diffusers/test_loras_and_t2v_api.py runs the same SDK
calls on tiny real models).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import runwayml
import wavespeed
from runwayml import RunwayML
from runwayml.lib import polling

from support.media import check_video
from support.server import LiveServer


def test_wavespeed_sdk_runs_a_text_to_video_id(server: LiveServer, api_key: str, tmp_path: Path) -> None:
    client = wavespeed.Client(api_key=api_key, base_url=server.url, max_connection_retries=0)
    result = client.run(
        "wavespeed-ai/wan-2.2/t2v-5b-720p",
        {"prompt": "a red kite over the sea", "aspect_ratio": "9:16", "duration": 5, "seed": 2},
        poll_interval=0.1,
        timeout=120,
    )
    check_video(result["outputs"][0], tmp_path, (720, 1280), seconds=5)


def test_runway_sdk_text_to_video_waits_for_the_video(
    server: LiveServer, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "POLL_TIME", 0.1)
    monkeypatch.setattr(polling, "POLL_JITTER", 0.0)
    with RunwayML(api_key=api_key, base_url=server.url, max_retries=0) as client:
        task = client.text_to_video.create(
            model="gen4.5", prompt_text="a red kite over the sea", ratio="1280:720", duration=2, seed=3
        ).wait_for_task_output(timeout=120)
        assert isinstance(task, runwayml.types.task_retrieve_response.Succeeded)
        check_video(task.output[0], tmp_path, (1280, 720), seconds=2)
        with pytest.raises(runwayml.BadRequestError, match="needs an image"):
            client.text_to_video.create(
                model="gen4_turbo",  # type: ignore[arg-type]
                prompt_text="x",
                ratio="1280:720",
                duration=2,
            )
