"""Scale-out on the real PostgreSQL server: two `reel serve --no-worker` API replicas and two
`reel worker` processes, driven through the official wavespeed SDK.

Either replica answers for any prediction; cancelling through one replica stops the
generation on whichever worker runs it at its next step; a worker stopped with SIGTERM hands
its prediction back and another finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import wavespeed

from reel.media.video import probe_video
from support import predictions_api
from support.cluster import MODEL, Cluster, WorkerProcess
from support.media import png_base64
from support.postgres import fresh_database
from support.server import LiveServer


@pytest.fixture(scope="module")
def cluster(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"REEL_DATABASE_URL": postgres_database, "REEL_SANDBOX": "1", "REEL_LEASE_S": "5"}
    running = Cluster(tmp_path_factory.mktemp("scale-out"), env).start(apis=2, workers=2)
    yield running
    running.stop()
    errors = running.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def key(cluster: Cluster) -> str:
    return cluster.create_key()


@pytest.mark.e2e
def test_sdk_clients_of_either_replica_get_every_video(cluster: Cluster, key: str, tmp_path: Path) -> None:
    clients = [wavespeed.Client(api_key=key, base_url=api.url) for api in cluster.apis]

    def run(n: int) -> dict[str, Any]:
        result: dict[str, Any] = clients[n % 2].run(
            MODEL, {"prompt": f"clip {n}", "image": png_base64(), "aspect_ratio": "1:1"}, timeout=180
        )
        return result

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    urls = [result["outputs"][0] for result in results]
    assert len(set(urls)) == 4
    for n, url in enumerate(urls):
        # Outputs are served by any replica, whichever one took the request.
        other = cluster.apis[(n + 1) % 2].url
        video = httpx.get(other + httpx.URL(url).path, timeout=30)
        assert video.status_code == 200
        path = tmp_path / f"{n}.mp4"
        path.write_bytes(video.content)
        info = probe_video(path)
        assert (info.codec, info.width, info.height) == ("h264", 960, 960)
    assert all(count == 1 for count in cluster.generations().values())  # nothing generated twice


@pytest.mark.e2e
def test_cancel_through_one_replica_stops_the_generation_on_the_worker(cluster: Cluster, key: str) -> None:
    first, second = (api.url for api in cluster.apis)
    prediction_id = predictions_api.submit(first, key, "long one [sandbox:delay=20]")
    predictions_api.wait_for(second, key, prediction_id, predictions_api.is_generating)
    started = time.monotonic()
    reply = httpx.post(
        f"{second}/api/v3/predictions/{prediction_id}/cancel", headers={"Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 200 and reply.json()["data"]["status"] == "cancelled"
    deadline = time.monotonic() + 15
    stopped = f"prediction {prediction_id}: generation stopped"
    while not any(stopped in worker.log() for worker in cluster.workers):
        assert time.monotonic() < deadline, "no worker stopped the generation"
        time.sleep(0.05)
    # Well before the 20 s it would take: stopped at a step, not at the end.
    assert time.monotonic() - started < 10
    assert prediction_id not in cluster.generations()
    assert predictions_api.result(first, key, prediction_id)["status"] == "cancelled"
    # The worker is free again.
    follow_up = predictions_api.submit(first, key, "after the cancel")
    assert predictions_api.wait_for(first, key, follow_up, predictions_api.has_ended)["status"] == "completed"


def _holder(cluster: Cluster, prediction_id: str) -> WorkerProcess:
    (holder,) = [
        w for w in cluster.workers if w.alive() and f"prediction {prediction_id}: generating" in w.log()
    ]
    return holder


@pytest.mark.e2e
def test_sigterm_hands_the_prediction_to_another_worker(cluster: Cluster, key: str) -> None:
    api = cluster.apis[0].url
    prediction_id = predictions_api.submit(api, key, "graceful [sandbox:delay=6]")
    predictions_api.wait_for(api, key, prediction_id, predictions_api.is_generating)
    holder = _holder(cluster, prediction_id)
    assert holder.stop() == 0
    assert f"prediction {prediction_id} handed back" in holder.log()
    cluster.add_worker()  # two workers again, for whatever runs next
    final = predictions_api.wait_for(api, key, prediction_id, predictions_api.has_ended)
    assert final["status"] == "completed"
    assert cluster.generations()[prediction_id] == 1


@pytest.mark.e2e
def test_reel_serve_with_its_own_worker_runs_on_postgresql(tmp_path: Path) -> None:
    with fresh_database() as url:
        server = LiveServer(tmp_path / "data", env={"REEL_DATABASE_URL": url, "REEL_SANDBOX": "1"}).start()
        try:
            key = Cluster(tmp_path, {"REEL_DATABASE_URL": url}).create_key()
            client = wavespeed.Client(api_key=key, base_url=server.url)
            result = client.run(MODEL, {"prompt": "one box", "image": png_base64(), "aspect_ratio": "1:1"})
            assert httpx.get(result["outputs"][0], timeout=30).status_code == 200
            assert "registered with the job queue" in server.log()  # dispatch went through procrastinate
        finally:
            server.stop()
        assert not server.server_errors()
