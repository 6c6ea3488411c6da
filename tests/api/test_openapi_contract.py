"""The live ``/openapi.json`` against a real ``reel serve --sandbox``, judged by tools that
know nothing of Reel: schemathesis drives every operation (examples, coverage, fuzzing and
the stateful phase along the document's links) with a valid key, and openapi-python-client
generates a client that creates a prediction and reads it back.

schemathesis runs all its checks but ``positive_data_acceptance`` (a schema-valid request may
still be refused: an image that is no image, a URL that cannot be fetched): no 5xx, no
undocumented status, content type or header, no response that breaks its schema, no
schema-invalid request accepted, no wrong answer to an undeclared method (405 with a correct
``Allow``), no operation that works without the key or with a wrong one. The seed is pinned,
so a failure replays; its output names each failure with a curl command.
"""

from __future__ import annotations

import base64
import importlib
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from reel.media.video import probe_video
from support.server import LiveServer, create_key

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SEED = 20261206
"""schemathesis's seed: a failure reproduces with the same one."""
MAX_EXAMPLES = 10
"""Per operation and phase: the whole run stays around a minute on 2 cores."""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("openapi-contract")
    key = create_key(data_dir)
    live = LiveServer(data_dir, env={"REEL_SANDBOX": "1", "REEL_SYNC_WAIT_S": "5"}).start("--sandbox")
    yield live, key
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


def test_schemathesis_finds_no_contract_violation(sandbox: tuple[LiveServer, str], tmp_path: Path) -> None:
    server, key = sandbox
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--output-truncate",
            "false",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    # It really ran: every operation of the document, through every phase.
    document = httpx.get(f"{server.url}/openapi.json").json()
    count = sum(len(item) for item in document["paths"].values())
    assert f"{count} selected / {count} total" in run.stdout, run.stdout
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in run.stdout, run.stdout


def small_png() -> bytes:
    image = Image.new("RGB", (160, 96), (40, 110, 190))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_generated_client_creates_a_prediction_and_reads_it_back(
    sandbox: tuple[LiveServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = sandbox
    # A key of its own: the predictions schemathesis left waiting are another key's, so fair
    # queueing starts this one next rather than after all of them.
    key = create_key(server.data_dir, "generated client")
    generate = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--url",
            f"{server.url}/openapi.json",
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "reel_api_client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    package = importlib.import_module("reel_api_client")
    submit = importlib.import_module("reel_api_client.api.submit.submit_runwayml_gen4_turbo")
    result = importlib.import_module("reel_api_client.api.predictions.get_prediction_result")
    get_task = importlib.import_module("reel_api_client.api.runway.get_task")
    models = importlib.import_module("reel_api_client.models")

    client = package.AuthenticatedClient(base_url=server.url, token=key, raise_on_unexpected_status=True)
    body = models.SubmitRunwaymlGen4Turbo(
        prompt="a slow push-in",
        image="data:image/png;base64," + base64.b64encode(small_png()).decode(),
        aspect_ratio=models.SubmitRunwaymlGen4TurboAspectRatioType0("16:9"),
        duration=models.SubmitRunwaymlGen4TurboDurationType0(5),
        seed=7,
    )
    created = submit.sync(client=client, body=body)
    assert isinstance(created, models.EnvelopePrediction), created
    assert created.data.status == models.PredictionStatus.CREATED
    prediction_id = created.data.id

    deadline = time.monotonic() + 120
    read = result.sync(prediction_id, client=client)
    while isinstance(read, models.EnvelopePrediction) and read.data.status.value in ("created", "processing"):
        assert time.monotonic() < deadline, "the prediction did not end in 120 s"
        time.sleep(0.2)
        read = result.sync(prediction_id, client=client)
    assert isinstance(read, models.EnvelopePrediction), read
    assert read.data.id == prediction_id and read.data.status == models.PredictionStatus.COMPLETED
    assert read.data.model == "runwayml/gen4-turbo" and len(read.data.outputs) == 1

    # The typed answer's URL is a real H.264 MP4 of the ratio asked for.
    video = tmp_path / "out.mp4"
    video.write_bytes(httpx.get(read.data.outputs[0], timeout=30).content)
    info = probe_video(video)
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")

    # The same prediction through Runway's view: the generated union picks SUCCEEDED's type.
    task = get_task.sync(
        str(uuid.UUID(hex=prediction_id)),
        client=client,
        x_runway_version=models.GetTaskXRunwayVersion("2024-11-06"),
    )
    assert isinstance(task, models.SucceededTask), task
    assert task.output == read.data.outputs

    # An unknown id comes back as the typed error envelope, not an exception or a None.
    missing = result.sync("0" * 32, client=package.AuthenticatedClient(base_url=server.url, token=key))
    assert isinstance(missing, models.ErrorEnvelope) and missing.code == 404
