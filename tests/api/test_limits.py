"""Per-key limits, fair queueing and usage on real `reel serve` processes, through the
official SDKs where they have a say: 429 with ``Retry-After``, which ``runwayml`` waits out
by itself and a ``wavespeed`` user after reading it from the SDK's error, and then both
succeed; ``THROTTLED`` then ``RUNNING`` for a key at its ``max_concurrent``; one limit
shared by two API replicas on PostgreSQL; a key's backlog not delaying another key's single
prediction; ``organization.retrieve()`` and ``retrieve_usage()`` of the ``runwayml`` SDK."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import wavespeed
from runwayml import RunwayML
from runwayml.lib import polling

from support.faults import short_clip_registry
from support.media import png_base64, png_data_uri
from support.predictions_api import has_ended, result, submit, wait_for
from support.server import REEL, LiveServer

MODEL = "runwayml/gen4-turbo"
RUNWAY_VERSION = {"X-Runway-Version": "2024-11-06"}


def create_limited_key(data_dir: Path, *limits: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [*REEL, "keys", "create", "--name", "limited", "--data-dir", str(data_dir), *limits],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A sandbox server on SQLite whose gen4-turbo makes 1 s clips (quick generations)."""
    data_dir = tmp_path_factory.mktemp("limits")
    registry = short_clip_registry(data_dir / "models.toml", MODEL)
    live = LiveServer(data_dir, env={"REEL_SANDBOX": "1", "REEL_MODELS_FILE": str(registry)}).start()
    yield live
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


def post_v3(base: str, key: str, prompt: str = "a slow push-in") -> httpx.Response:
    return httpx.post(
        f"{base}/api/v3/{MODEL}",
        json={"prompt": prompt, "image": png_base64(), "aspect_ratio": "1:1"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def post_runway(base: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/image_to_video",
        json={"model": "gen4_turbo", "promptImage": png_data_uri(), "ratio": "960:960", "duration": 2},
        headers={"Authorization": f"Bearer {key}", **RUNWAY_VERSION},
        timeout=30,
    )


def test_over_per_minute_both_dialects_answer_429_and_both_sdks_wait_it_out(reel: LiveServer) -> None:
    ws_key = create_limited_key(reel.data_dir, "--per-minute", "1")
    rw_key = create_limited_key(reel.data_dir, "--per-minute", "1")
    assert post_v3(reel.url, ws_key).status_code == 200
    assert post_runway(reel.url, rw_key).status_code == 200

    refused = post_v3(reel.url, ws_key)
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == 429 and body["data"] is None and "per minute" in body["message"]
    assert 50 <= int(refused.headers["Retry-After"]) <= 60
    refused = post_runway(reel.url, rw_key)
    assert refused.status_code == 429
    assert set(refused.json()) == {"error"} and "per minute" in refused.json()["error"]
    assert 50 <= int(refused.headers["Retry-After"]) <= 60

    def with_wavespeed() -> dict[str, Any]:
        # wavespeed 2.0.5 does not re-submit on its own (a failed submit may have created a
        # task): its error carries the answer, whose message says when to come back.
        client = wavespeed.Client(api_key=ws_key, base_url=reel.url, max_retries=0)
        request = {"prompt": "again", "image": png_base64(), "aspect_ratio": "1:1"}
        with pytest.raises(RuntimeError, match="HTTP 429") as refused:
            client.run(MODEL, request, poll_interval=0.1)
        wait = re.search(r"retry in (\d+) s", str(refused.value))
        assert wait is not None, refused.value
        time.sleep(int(wait.group(1)))
        return client.run(MODEL, request, poll_interval=0.1)

    def with_runway() -> str:
        # runwayml honours Retry-After (up to 60 s) on its own.
        with RunwayML(api_key=rw_key, base_url=reel.url, max_retries=2) as client:
            created = client.image_to_video.create(
                model="gen4_turbo", prompt_image=png_data_uri(), ratio="960:960", duration=2
            )
            return str(created.id)

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        ws_future, rw_future = pool.submit(with_wavespeed), pool.submit(with_runway)
        ws_result, task_id = ws_future.result(timeout=180), rw_future.result(timeout=180)
    assert time.monotonic() - started >= 45  # both waited for the window, neither got through early
    assert ws_result["outputs"] and ws_result["outputs"][0].endswith(".mp4")
    assert task_id
    # Refused requests created nothing: each key made exactly two predictions.
    for key in (ws_key, rw_key):
        listed = httpx.post(
            f"{reel.url}/api/v3/predictions", json={}, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert listed.json()["data"]["total"] == 2


def test_a_key_at_max_concurrent_shows_throttled_then_running(
    reel: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "POLL_TIME", 0.1)
    key = create_limited_key(reel.data_dir, "--max-concurrent", "1")
    first = submit(reel.url, key, "first [sandbox:delay=3]")
    second = submit(reel.url, key, "second")
    wait_for(reel.url, key, first, lambda data: data["status"] == "processing")
    waiting = result(reel.url, key, second)
    assert waiting["status"] == "created" and waiting["queue_position"] == 0
    seen: list[str] = []
    with RunwayML(api_key=key, base_url=reel.url, max_retries=0) as client:
        task_id = str(uuid.UUID(second))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.tasks.retrieve(task_id).status
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(0.05)
        assert client.tasks.retrieve(str(uuid.UUID(first))).status == "SUCCEEDED"
    # THROTTLED while the first runs; PENDING, if at all, only between its end and the
    # worker's next claim.
    assert seen[0] == "THROTTLED" and "RUNNING" in seen and seen[-1] == "SUCCEEDED", seen
    assert set(seen) <= {"THROTTLED", "PENDING", "RUNNING", "SUCCEEDED"}, seen


def test_one_keys_backlog_does_not_delay_another_keys_prediction(reel: LiveServer) -> None:
    busy = create_limited_key(reel.data_dir)
    other = create_limited_key(reel.data_dir)
    with ThreadPoolExecutor(4) as pool:
        backlog = list(pool.map(lambda i: submit(reel.url, busy, f"backlog {i}"), range(50)))
    single = submit(reel.url, other, "just one")
    done = wait_for(reel.url, other, single, has_ended, timeout_s=120)
    assert done["status"] == "completed"
    states = [result(reel.url, busy, pid)["status"] for pid in backlog]
    # One worker: the backlog prediction running when the single one arrived may finish first,
    # and the next one may have started since; the other 48 are still waiting.
    assert states.count("created") >= 47, states
    httpx.post(
        f"{reel.url}/api/v3/predictions/delete",
        json={"ids": backlog},
        headers={"Authorization": f"Bearer {busy}"},
        timeout=30,
    ).raise_for_status()


def test_runway_organization_and_usage_through_the_sdk(reel: LiveServer) -> None:
    key = create_limited_key(reel.data_dir, "--max-concurrent", "2", "--per-day", "40")
    for i in range(3):
        submit(reel.url, key, f"usage {i}")
    with RunwayML(api_key=key, base_url=reel.url, max_retries=0) as client:
        org = client.organization.retrieve()
        assert org.credit_balance == 0
        assert org.tier.models["gen4_turbo"].max_concurrent_generations == 2
        assert org.tier.models["gen4_turbo"].max_daily_generations == 40
        assert org.usage.models["gen4_turbo"].daily_generations == 3
        today = datetime.now(UTC).date()
        usage = client.organization.retrieve_usage(
            start_date=today - timedelta(days=2), before_date=today + timedelta(days=1)
        )
        assert usage.models == ["gen4_turbo"]
        assert [r.date for r in usage.results] == [today]
        (used,) = usage.results[0].used_credits
        assert used.model == "gen4_turbo" and used.amount == 0
        assert (used.model_extra or {}).get("generations") == 3
    bad = httpx.post(
        f"{reel.url}/v1/organization/usage",
        json={"startDate": "2026-13-45"},
        headers={"Authorization": f"Bearer {key}", **RUNWAY_VERSION},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"].startswith("startDate:")


def test_two_api_replicas_on_postgresql_enforce_one_shared_limit(postgres_url: str, tmp_path: Path) -> None:
    env = {"REEL_DATABASE_URL": postgres_url, "REEL_SANDBOX": "1"}
    replicas = [LiveServer(tmp_path / f"api{i}", env=env) for i in range(2)]
    for replica in replicas:
        replica.start("--no-worker")
    try:
        key = create_limited_key(replicas[0].data_dir, "--per-minute", "4", env=env)
        barrier = threading.Barrier(10)

        def attempt(i: int) -> int:
            barrier.wait()
            return post_v3(replicas[i % 2].url, key).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(attempt, range(10)))
        assert sorted(statuses) == [200] * 4 + [429] * 6, statuses
    finally:
        for replica in replicas:
            replica.stop()
        for replica in replicas:
            assert not replica.server_errors()
