"""Nothing accepted is lost: real server processes killed with SIGKILL mid-prediction."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.media import png_base64
from support.server import LiveServer, create_key

MODEL = "runwayml/gen4-turbo"


def _get(server: LiveServer, key: str, prediction_id: str) -> dict[str, Any]:
    reply = httpx.get(
        f"{server.url}/api/v3/predictions/{prediction_id}/result",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    return data


def _wait_for(
    server: LiveServer, key: str, prediction_id: str, condition: Any, timeout_s: float = 60
) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = _get(server, key, prediction_id)
        if condition(data):
            return data
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout_s} s; last state {data}")


def _submit(server: LiveServer, key: str, prompt: str) -> str:
    reply = httpx.post(
        f"{server.url}/api/v3/{MODEL}",
        json={"prompt": prompt, "image": png_base64(), "aspect_ratio": "1:1"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    prediction_id: str = reply.json()["data"]["id"]
    return prediction_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.e2e
def test_server_killed_mid_prediction_finishes_it_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir).start()
    key = create_key(data_dir)
    try:
        prediction_id = _submit(server, key, "survive [sandbox:delay=3]")
        _wait_for(server, key, prediction_id, lambda d: d["status"] == "processing" and d["progress"] > 0)
        workers = server.worker_pids()
        assert workers, "serve should supervise a worker process"
        server.kill()
        # The worker dies with its server (it is tied to its parent), mid-generation.
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)

        server.start()
        final = _wait_for(server, key, prediction_id, lambda d: d["status"] in {"completed", "failed"})
        assert final["status"] == "completed", final
        assert len(final["outputs"]) == 1
        assert "restarting it (attempt 2)" in server.log()
    finally:
        server.stop()
    assert not server.server_errors()


@pytest.mark.e2e
def test_worker_killed_mid_prediction_leaves_the_api_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir).start()
    key = create_key(data_dir)
    try:
        prediction_id = _submit(server, key, "crash the worker [sandbox:delay=3]")
        _wait_for(server, key, prediction_id, lambda d: d["status"] == "processing" and d["progress"] > 0)
        (worker,) = server.worker_pids()
        os.kill(worker, 9)
        # The API keeps answering while the supervisor restarts the worker.
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        _get(server, key, prediction_id)
        final = _wait_for(server, key, prediction_id, lambda d: d["status"] in {"completed", "failed"})
        assert final["status"] == "completed", final
        assert server.worker_pids() and server.worker_pids() != [worker]
    finally:
        server.stop()
    assert not server.server_errors()


@pytest.mark.e2e
def test_sigterm_hands_the_prediction_back_and_it_finishes_on_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir).start()
    key = create_key(data_dir)
    try:
        prediction_id = _submit(server, key, "graceful [sandbox:delay=3]")
        _wait_for(server, key, prediction_id, lambda d: d["status"] == "processing")
        server.stop()
        assert "handed back" in server.log()
        server.start()
        final = _wait_for(server, key, prediction_id, lambda d: d["status"] in {"completed", "failed"})
        assert final["status"] == "completed", final
    finally:
        server.stop()
    assert not server.server_errors()
