"""Per-key limits in-process: the CLI that sets them (``reel keys create/limits/list``), the
429 answers' shape in both dialects, an Idempotency-Key replay that is not counted,
``queue_position`` in history, and the client's "N ahead of you"."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from reel.cli import app as reel_cli
from reel.client.commands import LineView, queue_note
from support.inprocess import InProcessReel, in_process_reel
from support.media import png_base64

MODEL = "runwayml/gen4-turbo"


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # No worker: what is submitted stays waiting, which is what these tests look at.
    with in_process_reel(tmp_path_factory.mktemp("limits"), worker=False) as app:
        yield app


def cli(reel: InProcessReel, *args: str) -> str:
    result = CliRunner().invoke(reel_cli, [*args, "--data-dir", str(reel.data_dir)])
    assert result.exit_code == 0, result.output
    return result.output


def new_key(reel: InProcessReel, *limits: str) -> str:
    return cli(reel, "keys", "create", "--name", "limited", *limits).strip().splitlines()[-1]


def key_id(key: str) -> str:
    return key.split("_")[1]


def submit(client: httpx.Client, prompt: str = "a push-in", **headers: str) -> httpx.Response:
    return client.post(
        f"/api/v3/{MODEL}",
        json={"prompt": prompt, "image": png_base64(), "aspect_ratio": "1:1"},
        headers=headers,
    )


def test_limits_are_set_changed_cleared_and_listed_with_todays_usage(reel: InProcessReel) -> None:
    key = new_key(reel, "--max-concurrent", "2", "--per-minute", "30")
    with reel.client(key) as client:
        assert submit(client).status_code == 200
    out = cli(reel, "keys", "limits", key_id(key), "--per-day", "9", "--max-concurrent", "0")
    assert "max concurrent default (unlimited), per minute 30, per day 9" in " ".join(out.split())
    row = next(line for line in cli(reel, "keys", "list").splitlines() if key_id(key) in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[-5:-1] == ["default (unlimited)", "30", "9", "1"], cells
    assert CliRunner().invoke(reel_cli, ["keys", "limits", "nosuchkey", "--per-day", "1"]).exit_code == 1


def test_429_in_each_dialects_shape_and_nothing_created(reel: InProcessReel) -> None:
    key = new_key(reel, "--per-day", "1")
    with reel.client(key) as client:
        assert submit(client).status_code == 200
        refused = submit(client)
        assert refused.status_code == 429
        assert refused.json() == {"code": 429, "message": refused.json()["message"], "data": None}
        assert "1 predictions per UTC day" in refused.json()["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 86400
        runway = client.post(
            "/v1/image_to_video",
            json={
                "model": "gen4_turbo",
                "promptImage": f"data:image/png;base64,{png_base64()}",
                "ratio": "960:960",
            },
            headers={"X-Runway-Version": "2024-11-06"},
        )
        assert runway.status_code == 429 and list(runway.json()) == ["error"]
        assert runway.headers["Retry-After"] == refused.headers["Retry-After"]
        listed = client.post("/api/v3/predictions", json={}).json()["data"]
    assert listed["total"] == 1


def test_an_idempotent_replay_is_answered_not_counted(reel: InProcessReel) -> None:
    key = new_key(reel, "--per-minute", "1")
    with reel.client(key) as client:
        first = submit(client, **{"Idempotency-Key": "once"})
        again = submit(client, **{"Idempotency-Key": "once"})
        other = submit(client, **{"Idempotency-Key": "another"})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert other.status_code == 429


def test_waiting_predictions_report_their_queue_position(reel: InProcessReel) -> None:
    key = new_key(reel)
    with reel.client(key) as client:
        ids = [submit(client, f"p{i}").json()["data"]["id"] for i in range(2)]
        positions = {
            pid: client.get(f"/api/v3/predictions/{pid}/result").json()["data"]["queue_position"]
            for pid in ids
        }
        history = client.post("/api/v3/predictions", json={}).json()["data"]["items"]
    # Other tests' keys have waiting predictions too, and this key has had no turn yet.
    assert positions[ids[0]] < positions[ids[1]]
    assert {item["id"]: item["queue_position"] for item in history} == positions


def test_the_client_says_how_many_are_ahead(capsys: pytest.CaptureFixture[str]) -> None:
    waiting = {"status": "created", "progress": 0, "queue_position": 3}
    assert queue_note(waiting) == "3 ahead of you"
    assert queue_note({**waiting, "queue_position": 0}) == "next to start"
    assert queue_note({"status": "processing", "progress": 0.5, "queue_position": 3}) == ""
    view = LineView()
    view.update(waiting)
    view.update({"status": "processing", "progress": 0.1})
    assert capsys.readouterr().err.splitlines() == ["created 0% (3 ahead of you)", "processing 10%"]
