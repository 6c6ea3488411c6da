"""``reel run`` and ``reel predictions``, run as real subprocesses against a live server."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from reel.media.video import probe_video
from support.media import png_bytes
from support.server import LiveServer

pytestmark = pytest.mark.e2e

REEL = [sys.executable, "-m", "reel.cli"]


def _env(server: LiveServer, key: str | None) -> dict[str, str]:
    """The client reads its server and key from the environment, as a user's shell would set them."""
    env = {k: v for k, v in os.environ.items() if k not in ("REEL_SERVER", "REEL_API_KEY")}
    env["REEL_SERVER"] = server.url
    if key is not None:
        env["REEL_API_KEY"] = key
    return env


def _reel(
    server: LiveServer, key: str | None, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REEL, *args], capture_output=True, text=True, env=_env(server, key), cwd=cwd, timeout=120
    )


def _image(tmp_path: Path, width: int = 640, height: int = 360) -> Path:
    path = tmp_path / "input.png"
    path.write_bytes(png_bytes(width, height))
    return path


def _submit(server: LiveServer, key: str, prompt: str) -> str:
    """A prediction made by another client, straight through the HTTP API."""
    upload = httpx.post(
        f"{server.url}/api/v3/media/upload/binary",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("in.png", png_bytes(320, 180), "image/png")},
    ).json()["data"]
    answer = httpx.post(
        f"{server.url}/api/v3/runwayml/gen4-turbo",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": prompt, "image": upload["download_url"]},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["id"])


def _status(server: LiveServer, key: str, prediction_id: str) -> str:
    answer = httpx.get(
        f"{server.url}/api/v3/predictions/{prediction_id}/result", headers={"Authorization": f"Bearer {key}"}
    )
    return str(answer.json()["data"]["status"])


def test_run_uploads_a_local_file_shows_a_progress_bar_and_saves_a_playable_mp4(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    image = _image(tmp_path)
    out = tmp_path / "clip.mp4"
    # stderr on a pseudo-terminal, so rich draws its live bar as it would for a person.
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*REEL, "run", str(image), "--prompt", "a slow push-in", "--aspect-ratio", "9:16", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env={**_env(server, api_key), "COLUMNS": "120", "TERM": "xterm-256color"},
    )
    os.close(terminal)
    screen = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed its end
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(10)
    os.close(controller)
    shown = screen.decode(errors="replace")

    assert process.returncode == 0, shown
    assert stdout.decode().strip() == str(out), "stdout carries only the saved path"
    info = probe_video(out)
    assert (info.width, info.height) == (720, 1280)
    assert info.codec == "h264" and info.frame_count >= 24 * 5
    # The bar was fed by the prediction's progress: it showed values between 0 and 100 %.
    percents = {int(p) for p in re.findall(r"(\d+)%", shown)}
    assert any(0 < p < 100 for p in percents), shown
    assert 100 in percents and "━" in shown and "processing" in shown
    assert "Uploading input.png" in shown


def test_run_without_out_names_the_file_after_the_prediction(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    done = _reel(server, api_key, "run", str(_image(tmp_path, 400, 400)), "-p", "orbit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / done.stdout.strip()
    prediction_id = re.search(r"Submitted (\w+)", done.stderr)
    assert prediction_id and saved.name == f"{prediction_id.group(1)}.mp4"
    assert (probe_video(saved).width, probe_video(saved).height) == (960, 960)  # 1:1, closest to the image
    # Without a terminal, progress is plain lines for logs.
    assert "completed 100%" in done.stderr.splitlines()


def test_run_with_a_prompt_alone_makes_a_text_to_video_clip(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    out = tmp_path / "t2v.mp4"
    done = _reel(server, api_key, "run", "-p", "a red kite", "--aspect-ratio", "9:16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Submitted" in done.stderr and "wavespeed-ai/wan-2.2/t2v-5b-720p" in done.stderr
    assert done.stdout.strip() == str(out)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (720, 1280, 5 * 24)


def test_a_failed_prediction_exits_non_zero_with_its_error(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    out = tmp_path / "never.mp4"
    failed = _reel(server, api_key, "run", str(_image(tmp_path)), "-p", "[sandbox:fail] boom", "-o", str(out))
    assert failed.returncode == 1
    assert "failed: sandbox: failure requested by the prompt tag [sandbox:fail]" in failed.stderr
    assert failed.stdout == "" and not out.exists()


def test_request_errors_are_reported_with_the_servers_message(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    image = str(_image(tmp_path))
    bad_key = _reel(server, "rk_nope_nope", "run", image, "-p", "x")
    assert bad_key.returncode == 1 and "invalid API key" in bad_key.stderr

    no_key = _reel(server, None, "run", image, "-p", "x")
    assert no_key.returncode == 2 and "REEL_API_KEY" in no_key.stderr

    bad_ratio = _reel(server, api_key, "run", image, "-p", "x", "--aspect-ratio", "2:1")
    assert bad_ratio.returncode == 1 and "aspect_ratio" in bad_ratio.stderr

    missing = _reel(server, api_key, "run", str(tmp_path / "missing.png"), "-p", "x")
    assert missing.returncode == 1 and "neither an http(s) URL nor a file" in missing.stderr

    unreachable = subprocess.run(
        [*REEL, "predictions", "list", "--server", "http://127.0.0.1:9", "--key", api_key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1 and "could not reach http://127.0.0.1:9" in unreachable.stderr


def test_ctrl_c_cancels_the_prediction_on_the_server(
    server: LiveServer, api_key: str, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [*REEL, "run", str(_image(tmp_path)), "-p", "[sandbox:delay=60] slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(server, api_key),
    )
    assert process.stderr is not None
    prediction_id = None
    deadline = time.monotonic() + 60
    while prediction_id is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line, "the client ended before submitting"
        if match := re.match(r"Submitted (\w+)", line):
            prediction_id = match.group(1)
    assert prediction_id is not None
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 130, rest
    assert f"prediction {prediction_id} cancelled" in rest
    assert _status(server, api_key, prediction_id) == "cancelled"


def test_predictions_list_get_and_cancel(server: LiveServer, api_key: str, other_key: str) -> None:
    prediction_id = _submit(server, api_key, "[sandbox:delay=60] waiting to be cancelled")

    cancelled = _reel(server, api_key, "predictions", "cancel", prediction_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{prediction_id} cancelled"

    again = _reel(server, api_key, "predictions", "cancel", prediction_id)
    assert again.returncode == 1 and "already ended as cancelled" in again.stderr

    got = _reel(server, api_key, "predictions", "get", prediction_id)
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    assert data["id"] == prediction_id and data["status"] == "cancelled"

    listed = _reel(server, api_key, "predictions", "list", "--status", "cancelled", "--page-size", "100")
    assert listed.returncode == 0, listed.stderr
    assert prediction_id in listed.stdout
    assert "predictions in all" in listed.stderr
    completed = _reel(server, api_key, "predictions", "list", "--status", "completed", "--page-size", "100")
    assert prediction_id not in completed.stdout

    # Another key sees none of it: the client only has what the API gives that key.
    foreign = _reel(server, other_key, "predictions", "get", prediction_id)
    assert foreign.returncode == 1 and "not found" in foreign.stderr
    assert prediction_id not in _reel(server, other_key, "predictions", "list").stdout
