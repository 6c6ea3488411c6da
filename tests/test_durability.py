"""Nothing accepted is lost: real server processes killed with SIGKILL mid-prediction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from support import predictions_api
from support.server import LiveServer, create_key


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
        prediction_id = predictions_api.submit(server.url, key, "survive [sandbox:delay=3]")
        predictions_api.wait_for(server.url, key, prediction_id, predictions_api.is_generating)
        workers = server.worker_pids()
        assert workers, "serve should supervise a worker process"
        server.kill()
        # The worker dies with its server (it is tied to its parent), mid-generation.
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)

        server.start()
        final = predictions_api.wait_for(server.url, key, prediction_id, predictions_api.has_ended)
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
        prediction_id = predictions_api.submit(server.url, key, "crash the worker [sandbox:delay=3]")
        predictions_api.wait_for(server.url, key, prediction_id, predictions_api.is_generating)
        (worker,) = server.worker_pids()
        os.kill(worker, 9)
        # The API keeps answering while the supervisor restarts the worker.
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        predictions_api.result(server.url, key, prediction_id)
        final = predictions_api.wait_for(server.url, key, prediction_id, predictions_api.has_ended)
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
        prediction_id = predictions_api.submit(server.url, key, "graceful [sandbox:delay=3]")
        predictions_api.wait_for(server.url, key, prediction_id, lambda d: d["status"] == "processing")
        server.stop()
        assert "handed back" in server.log()
        server.start()
        final = predictions_api.wait_for(server.url, key, prediction_id, predictions_api.has_ended)
        assert final["status"] == "completed", final
    finally:
        server.stop()
    assert not server.server_errors()
