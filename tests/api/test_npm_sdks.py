"""The official npm SDKs, unmodified, against a real Reel server: ``wavespeed`` 0.3.2 and
``@runwayml/sdk`` 4.20.1.

The SDKs run in ``node`` subprocesses (``tests/js/*.mjs``, one script per SDK, one scenario per
run) that print one JSON object; the videos they get back are downloaded and decoded here. The
packages are installed once per session with ``npm ci`` from ``tests/js/package-lock.json``;
without node, npm or the registry these tests fail, never skip.

The Runway SDK sleeps 6 ± 1.5 s before every poll of ``waitForTaskOutput()`` (a constant, not an
option), so only three scenarios wait on it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.media import check_video, png_bytes
from support.server import LiveServer

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE_MODULES = JS_DIR / "node_modules"
# The judges the API contract names.
PINS = {"wavespeed": "0.3.2", "@runwayml/sdk": "4.20.1"}
MIN_NODE_MAJOR = 18
# What was installed from: a lockfile or manifest that differs from it means reinstall.
STAMP = NODE_MODULES / ".reel-install-stamp"
WAVESPEED_MODEL_OUTPUT_S = 5
RUNWAY_SECONDS = 2


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the npm SDK tests need Node >= {MIN_NODE_MAJOR} and npm")
    return path


def _installed_version(package: str) -> str | None:
    manifest = NODE_MODULES / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def _wanted_stamp() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((JS_DIR / name).read_bytes())
    return digest.hexdigest()


def _is_current() -> bool:
    return (
        STAMP.exists()
        and STAMP.read_text() == _wanted_stamp()
        and all(_installed_version(name) == version for name, version in PINS.items())
    )


@pytest.fixture(scope="session")
def node() -> str:
    """``node``, checked for its version, with the pinned SDKs installed in tests/js/node_modules."""
    node = _tool("node")
    npm = _tool("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE_MAJOR:
        pytest.fail(f"node {version} is too old: the npm SDKs need Node >= {MIN_NODE_MAJOR}")
    # Another pytest run in this tree may be installing too: one npm ci at a time.
    with open(JS_DIR / "package-lock.json", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current():
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=240,  # under pytest-timeout's 300 s, so this message is the one seen
            )
            if installed.returncode != 0:
                pytest.fail(
                    f"`npm ci` in {JS_DIR} failed ({installed.returncode}):\n"
                    f"{installed.stdout}\n{installed.stderr}"
                )
            STAMP.write_text(_wanted_stamp())
        if not _is_current():
            found = {name: _installed_version(name) for name in PINS}
            pytest.fail(f"`npm ci` installed {found}, not the pinned {PINS}")
    return node


@dataclass
class NodeSdk:
    """One SDK's script: ``run(scenario, *args)`` is the JSON it prints."""

    node: str
    script: str
    server: LiveServer
    key: str

    def run(self, scenario: str, *args: str) -> Any:
        # Nothing from the developer's environment steers the SDKs (RUNWAYML_LOG, WAVESPEED_CLIENT_NAME…).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWAYML_", "WAVESPEED_"))}
        env |= {"REEL_URL": self.server.url, "REEL_KEY": self.key}
        done = subprocess.run(
            [self.node, self.script, scenario, *args],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        told = f"node {self.script} {scenario} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert done.returncode == 0, told
        # One line only: the SDKs print to stdout only when they retry, and nothing here should retry.
        lines = done.stdout.splitlines()
        assert len(lines) == 1, told
        return json.loads(lines[0])


@pytest.fixture
def wavespeed_js(node: str, server: LiveServer, api_key: str) -> NodeSdk:
    return NodeSdk(node, "wavespeed.mjs", server, api_key)


@pytest.fixture
def runway_js(node: str, server: LiveServer, api_key: str) -> NodeSdk:
    return NodeSdk(node, "runway.mjs", server, api_key)


@pytest.fixture
def square_png(tmp_path: Path) -> str:
    path = tmp_path / "square.png"
    path.write_bytes(png_bytes(320, 320))
    return str(path)


def test_the_installed_sdks_are_the_contracts_versions(node: str) -> None:
    manifest = json.loads((JS_DIR / "package.json").read_text())
    assert manifest["dependencies"] == PINS
    locked = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    assert {name: locked[f"node_modules/{name}"]["version"] for name in PINS} == PINS
    assert {name: _installed_version(name) for name in PINS} == PINS


# --- wavespeed (npm) -------------------------------------------------------------------------


def test_wavespeed_run_with_base64_returns_one_mp4(
    wavespeed_js: NodeSdk, square_png: str, tmp_path: Path
) -> None:
    result = wavespeed_js.run("run", square_png)
    (url,) = result["outputs"]
    assert url.startswith(wavespeed_js.server.url) and url.endswith(".mp4")
    check_video(url, tmp_path, (960, 960), WAVESPEED_MODEL_OUTPUT_S)


def test_wavespeed_upload_then_run_on_the_download_url(wavespeed_js: NodeSdk, tmp_path: Path) -> None:
    portrait = tmp_path / "portrait.png"
    portrait.write_bytes(png_bytes(180, 320))
    result = wavespeed_js.run("upload", str(portrait))
    # The bytes PUT to the ticket's URL are what the download_url serves.
    assert httpx.get(result["downloadUrl"], timeout=10).raise_for_status().content == portrait.read_bytes()
    # No aspect_ratio: the one closest to the uploaded 9:16 image.
    (url,) = result["outputs"]
    check_video(url, tmp_path, (720, 1280), WAVESPEED_MODEL_OUTPUT_S)


def test_wavespeed_bad_key_is_a_401(wavespeed_js: NodeSdk, square_png: str) -> None:
    result = wavespeed_js.run("bad-key", square_png)
    assert result["run"]["className"] == "WavespeedSubmissionException"
    assert "HTTP 401" in result["run"]["message"]
    assert "invalid API key" in result["run"]["message"]
    assert "HTTP 401" in result["upload"]["message"]


def test_wavespeed_failed_prediction_rejects_with_its_error(
    wavespeed_js: NodeSdk, square_png: str, server: LiveServer, api_key: str
) -> None:
    result = wavespeed_js.run("fail", square_png)
    message = result["run"]["message"]
    assert message.startswith("Prediction failed (task_id: ")
    assert "[sandbox:fail]" in message

    no_throw = result["runNoThrow"]
    assert no_throw["outputs"] is None
    assert no_throw["status"] == "failed"
    assert no_throw["isPredictionException"] is True
    assert "[sandbox:fail]" in no_throw["message"]
    # The task the SDK names is the failed prediction on the server.
    seen = httpx.get(
        f"{server.url}/api/v3/predictions/{no_throw['taskId']}/result",
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["data"]
    assert seen["status"] == "failed"
    assert no_throw["message"] == f"Prediction failed: {seen['error']}"


def test_wavespeed_sync_mode_returns_the_outputs(
    wavespeed_js: NodeSdk, square_png: str, tmp_path: Path
) -> None:
    (url,) = wavespeed_js.run("sync", square_png)["outputs"]
    check_video(url, tmp_path, (960, 960), WAVESPEED_MODEL_OUTPUT_S)


# --- @runwayml/sdk ---------------------------------------------------------------------------


def test_runway_create_wait_succeeds_then_delete_makes_it_404(
    runway_js: NodeSdk, square_png: str, tmp_path: Path
) -> None:
    result = runway_js.run("create-wait", square_png)
    task = result["task"]
    assert task["status"] == "SUCCEEDED"
    assert task["id"] == result["createdId"]
    assert task["cost"] == {"credits": 0}
    (url,) = task["output"]
    check_video(url, tmp_path, (1280, 720), RUNWAY_SECONDS)

    deleted = runway_js.run("delete", task["id"])
    assert deleted["deleted"] is None  # 204: no body
    for after in (deleted["retrieve"], deleted["deleteAgain"]):
        assert after["className"] == "NotFoundError"
        assert after["status"] == 404
    assert deleted["retrieveIsNotFound"] is True


def test_runway_bad_ratio_is_a_bad_request(runway_js: NodeSdk, square_png: str) -> None:
    error = runway_js.run("bad-ratio", square_png)
    assert error["className"] == "BadRequestError"
    assert error["status"] == 400
    assert set(error["error"]) == {"error"}
    assert "ratio" in error["error"]["error"]


def test_runway_bad_key_is_an_authentication_error(runway_js: NodeSdk, square_png: str) -> None:
    result = runway_js.run("bad-key", square_png)
    for error in (result["create"], result["retrieve"]):
        assert error["className"] == "AuthenticationError"
        assert error["status"] == 401


def test_runway_failed_generation_is_task_failed_with_a_failure_code(
    runway_js: NodeSdk, square_png: str
) -> None:
    error = runway_js.run("fail", square_png)
    assert error["className"] == "TaskFailedError"
    failed = error["taskDetails"]
    assert failed["status"] == "FAILED"
    assert failed["failureCode"] == "INTERNAL"
    assert "[sandbox:fail]" in failed["failure"]
    assert error["message"] == failed["failure"]
    assert failed["cost"] == {"credits": 0}


def test_runway_delete_while_running_cancels(runway_js: NodeSdk, square_png: str) -> None:
    result = runway_js.run("cancel", square_png)
    running = result["running"]
    assert running["status"] == "RUNNING"
    assert 0 <= running["progress"] <= 1
    assert running["estimatedCost"] == {"credits": 0}
    assert result["cancelled"]["status"] == "CANCELLED"
    assert result["cancelled"]["cost"] == {"credits": 0}
    assert result["waited"]["className"] == "TaskFailedError"
    assert result["waited"]["taskDetails"]["status"] == "CANCELLED"
    assert result["afterDelete"]["className"] == "NotFoundError"
    assert result["afterDelete"]["status"] == 404


def test_runway_ephemeral_uploads_feed_create(
    runway_js: NodeSdk, square_png: str, tmp_path: Path, server: LiveServer, api_key: str
) -> None:
    result = runway_js.run("upload", square_png)
    assert result["streamUri"].startswith("runway://")
    assert result["blobUri"].startswith("runway://")
    assert result["streamUri"] != result["blobUri"]
    # The Blob's task was accepted, then cancelled and deleted by the script.
    gone = httpx.get(
        f"{server.url}/v1/tasks/{result['blobTaskId']}",
        headers={"Authorization": f"Bearer {api_key}", "X-Runway-Version": "2024-11-06"},
    )
    assert gone.status_code == 404

    task = result["task"]
    assert task["status"] == "SUCCEEDED"
    (url,) = task["output"]
    check_video(url, tmp_path, (960, 960), RUNWAY_SECONDS)
