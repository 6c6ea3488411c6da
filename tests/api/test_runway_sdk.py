"""The official ``runwayml`` SDK (5.24.0, unmodified) against a real Reel server's ``/v1``.

Each video that comes back is downloaded and decoded to check its size and length. Runway
tests ask for 2-second clips to keep the shared worker's time small.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import runwayml
from runwayml import RunwayML
from runwayml.lib import polling
from runwayml.lib.polling import TaskFailedError

from support.media import check_video, png_bytes, png_data_uri
from support.server import LiveServer

SLOW = "a slow push-in [sandbox:delay=60]"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK sleeps POLL_TIME ± POLL_JITTER / 2 seconds (6 ± 1.5) between polls.
    monkeypatch.setattr(polling, "POLL_TIME", 0.1)
    monkeypatch.setattr(polling, "POLL_JITTER", 0.0)


@pytest.fixture
def client(server: LiveServer, api_key: str) -> Iterator[RunwayML]:
    with RunwayML(api_key=api_key, base_url=server.url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def made(client: RunwayML) -> Iterator[list[str]]:
    """Task ids a test made; deleted afterwards so the shared worker is not kept busy."""
    ids: list[str] = []
    yield ids
    for task_id in ids:
        try:
            client.tasks.delete(task_id)  # a running task is cancelled ...
            client.tasks.delete(task_id)  # ... and then deleted
        except runwayml.NotFoundError:
            pass


def wait_until_running(client: RunwayML, task_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (task := client.tasks.retrieve(task_id)).status != "RUNNING":
        assert task.status == "PENDING", task
        assert time.monotonic() < deadline, f"task {task_id} never started: {task}"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("ratio", "size"), [("1280:720", (1280, 720)), ("1584:672", (1584, 672))], ids=["16:9", "21:9"]
)
def test_create_wait_succeeds_with_a_video_of_the_ratio_size(
    client: RunwayML, ratio: str, size: tuple[int, int], tmp_path: Path
) -> None:
    created = client.image_to_video.create(
        model="gen4_turbo",
        prompt_image=png_data_uri(),
        ratio=ratio,  # type: ignore[arg-type]
        prompt_text="a slow push-in",
        duration=2,
        seed=4_294_967_295,
    )
    task = created.wait_for_task_output(timeout=120)
    assert task.status == "SUCCEEDED"
    assert isinstance(task, runwayml.types.task_retrieve_response.Succeeded)
    assert task.id == created.id
    assert task.cost.credits == 0
    (url,) = task.output
    check_video(url, tmp_path, size, seconds=2)

    client.tasks.delete(task.id)
    with pytest.raises(runwayml.NotFoundError):
        client.tasks.retrieve(task.id)


def test_a_bad_ratio_is_a_bad_request(client: RunwayML) -> None:
    with pytest.raises(runwayml.BadRequestError) as caught:
        client.image_to_video.create(
            model="gen4_turbo",
            prompt_image=png_data_uri(64, 64),
            ratio="1:1",  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"error"}
    assert "ratio" in caught.value.body["error"]


def test_a_bad_key_is_an_authentication_error(server: LiveServer) -> None:
    with RunwayML(api_key="rk_000000000000_not-a-real-key-at-all", base_url=server.url, max_retries=0) as bad:
        with pytest.raises(runwayml.AuthenticationError):
            bad.image_to_video.create(model="gen4_turbo", prompt_image=png_data_uri(64, 64), ratio="960:960")
        with pytest.raises(runwayml.AuthenticationError):
            bad.tasks.retrieve("00000000-0000-4000-8000-000000000000")


def test_a_failed_generation_raises_task_failed_with_a_failure_code(
    client: RunwayML, made: list[str]
) -> None:
    created = client.image_to_video.create(
        model="gen4_turbo",
        prompt_image=png_data_uri(64, 64),
        ratio="960:960",
        prompt_text="falls over [sandbox:fail]",
        duration=2,
    )
    made.append(created.id)
    with pytest.raises(TaskFailedError) as caught:
        created.wait_for_task_output(timeout=120)
    failed = caught.value.task_details
    assert isinstance(failed, runwayml.types.task_retrieve_response.Failed)
    assert failed.failure_code == "INTERNAL"
    assert "[sandbox:fail]" in failed.failure
    assert failed.cost.credits == 0


def test_delete_cancels_a_running_task_then_deletes_it(client: RunwayML, made: list[str]) -> None:
    created = client.image_to_video.create(
        model="gen4_turbo", prompt_image=png_data_uri(64, 64), ratio="960:960", prompt_text=SLOW, duration=2
    )
    made.append(created.id)
    wait_until_running(client, created.id)
    running = client.tasks.retrieve(created.id)
    assert isinstance(running, runwayml.types.task_retrieve_response.Running)
    assert 0.0 <= running.progress <= 1.0
    assert running.estimated_cost.credits == 0

    client.tasks.delete(created.id)
    cancelled = client.tasks.retrieve(created.id)
    assert isinstance(cancelled, runwayml.types.task_retrieve_response.Cancelled)

    client.tasks.delete(created.id)
    with pytest.raises(runwayml.NotFoundError):
        client.tasks.retrieve(created.id)
    with pytest.raises(runwayml.NotFoundError):
        client.tasks.delete(created.id)


def test_a_pending_task_has_an_estimated_cost(client: RunwayML, server: LiveServer, made: list[str]) -> None:
    # Whatever state it is in when read, the SDK must parse it as its status's type.
    created = client.image_to_video.create(
        model="gen4_turbo", prompt_image=png_data_uri(64, 64), ratio="960:960", prompt_text=SLOW, duration=2
    )
    made.append(created.id)
    task = client.tasks.retrieve(created.id)
    assert task.status in {"PENDING", "RUNNING"}
    assert task.estimated_cost.credits == 0  # type: ignore[union-attr]
    assert task.created_at.tzinfo is not None


def test_another_keys_task_is_not_found(
    client: RunwayML, server: LiveServer, other_key: str, made: list[str]
) -> None:
    created = client.image_to_video.create(
        model="gen4_turbo", prompt_image=png_data_uri(64, 64), ratio="960:960", prompt_text=SLOW, duration=2
    )
    made.append(created.id)
    with RunwayML(api_key=other_key, base_url=server.url, max_retries=0) as other:
        with pytest.raises(runwayml.NotFoundError):
            other.tasks.retrieve(created.id)
        with pytest.raises(runwayml.NotFoundError):
            other.tasks.delete(created.id)
    assert client.tasks.retrieve(created.id).status in {"PENDING", "RUNNING"}


def test_upload_then_create_with_the_runway_uri(
    client: RunwayML, server: LiveServer, other_key: str, tmp_path: Path
) -> None:
    image = tmp_path / "portrait.png"
    image.write_bytes(png_bytes(300, 400))
    uploaded = client.uploads.create_ephemeral(file=image)
    assert uploaded.uri.startswith("runway://")

    # The URI is only good for the key that uploaded it.
    with (
        RunwayML(api_key=other_key, base_url=server.url, max_retries=0) as other,
        pytest.raises(runwayml.BadRequestError) as caught,
    ):
        other.image_to_video.create(model="gen4_turbo", prompt_image=uploaded.uri, ratio="832:1104")
    assert "promptImage" in str(caught.value.body)

    created = client.image_to_video.create(
        model="gen4_turbo",
        prompt_image=[{"uri": uploaded.uri, "position": "first"}],
        ratio="832:1104",
        duration=2,
    )
    task = created.wait_for_task_output(timeout=120)
    assert task.status == "SUCCEEDED"
    check_video(task.output[0], tmp_path, (832, 1104), seconds=2)  # type: ignore[union-attr]
    client.tasks.delete(task.id)
