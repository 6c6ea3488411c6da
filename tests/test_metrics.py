"""``GET /metrics`` and JSON logs on real processes: a ``reel serve --sandbox`` whose API and
supervised worker are added up in one scrape, and a ``reel worker --metrics-port`` of its own.

The scenario makes predictions whose fate is known (2 completed, 1 failed through the
``[sandbox:fail]`` tag, 1 cancelled while running, 1 cancelled while waiting), then reads
``/metrics`` with prometheus-client's own parser and the server's log line by line as JSON.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cluster import WorkerProcess
from support.faults import short_clip_registry
from support.media import png_base64
from support.predictions_api import MODEL, has_ended, is_generating, result, submit, wait_for
from support.server import LiveServer, create_key, free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PROMPTS = {
    "done1": "a calm sea at dawn",
    "done2": "a windy wheat field",
    "failed": "a storm [sandbox:fail]",
    "running": "a long take [sandbox:delay=60]",
    "waiting": "a scene that never starts",
}


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    reply = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples) -> set[str]:
    return {label for _name, labels in samples for _key, label in labels}


@dataclass
class Scenario:
    server: LiveServer
    key: str
    ids: dict[str, str] = field(default_factory=dict)
    while_busy: Samples = field(default_factory=dict)
    """Scraped while ``running`` ran and ``waiting`` waited."""
    after: Samples = field(default_factory=dict)
    """Scraped once everything had ended."""

    @property
    def key_id(self) -> str:
        return self.key.split("_")[1]


def _short_clips(workdir: Path) -> dict[str, str]:
    return {"REEL_MODELS_FILE": str(short_clip_registry(workdir / "models.toml", MODEL))}


class _Receiver(BaseHTTPRequestHandler):
    received: threading.Event

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()
        self.received.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("metrics")
    env = {"REEL_LOG_FORMAT": "json", "REEL_ALLOW_PRIVATE_URLS": "1", **_short_clips(workdir)}
    server = LiveServer(workdir / "data", env=env)
    server.start("--sandbox")
    # done2 has a webhook: the worker's lines about delivering it are about done2 too.
    received = threading.Event()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), type("Receiver", (_Receiver,), {"received": received}))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        run = Scenario(server, create_key(server.data_dir, "metrics"))
        url, key = server.url, run.key
        for name in ("done1", "failed"):
            run.ids[name] = submit(url, key, PROMPTS[name])
        reply = httpx.post(
            f"{url}/api/v3/{MODEL}",
            params={"webhook": f"http://127.0.0.1:{receiver.server_address[1]}/hook"},
            json={"prompt": PROMPTS["done2"], "image": png_base64(), "aspect_ratio": "1:1"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        run.ids["done2"] = reply.json()["data"]["id"]
        for name in ("done1", "done2", "failed"):
            wait_for(url, key, run.ids[name], has_ended)
        assert received.wait(30), "the webhook never arrived"
        run.ids["running"] = submit(url, key, PROMPTS["running"])
        wait_for(url, key, run.ids["running"], is_generating)
        run.ids["waiting"] = submit(url, key, PROMPTS["waiting"])
        assert result(url, key, run.ids["waiting"])["status"] == "created"
        run.while_busy = scrape(url)
        for name in ("waiting", "running"):
            reply = httpx.post(
                f"{url}/api/v3/predictions/{run.ids[name]}/cancel",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert reply.status_code == 200, reply.text
        wait_for(url, key, run.ids["running"], has_ended)
        # A path no route matches, with an id in it: its label must not carry the id.
        assert httpx.get(f"{url}/no/such/{run.ids['done1']}", timeout=10).status_code == 404
        run.after = _scrape_until(url, lambda s: _ended(s) == {"completed": 2, "failed": 1, "cancelled": 2})
        yield run
    finally:
        receiver.shutdown()
        server.stop()


def _ended(samples: Samples) -> dict[str, float]:
    return {
        status: value(samples, "reel_predictions_total", model=MODEL, status=status)
        for status in ("completed", "failed", "cancelled")
    }


def _scrape_until(url: str, done: Any, timeout_s: float = 15.0) -> Samples:
    """The worker counts a prediction's end right after committing it, so a scrape may come a
    moment before; wait for it (exact equality is asserted by the tests)."""
    deadline = time.monotonic() + timeout_s
    samples = scrape(url)
    while not done(samples) and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape(url)
    return samples


def test_the_counts_agree_with_the_predictions_made(scenario: Scenario) -> None:
    statuses = {
        name: result(scenario.server.url, scenario.key, pid)["status"] for name, pid in scenario.ids.items()
    }
    assert statuses == {
        "done1": "completed",
        "done2": "completed",
        "failed": "failed",
        "running": "cancelled",
        "waiting": "cancelled",
    }
    assert _ended(scenario.after) == {"completed": 2, "failed": 1, "cancelled": 2}


def test_histograms_have_the_observations(scenario: Scenario) -> None:
    after = scenario.after
    # Started: the two completed, the failed one and the one cancelled while running.
    assert value(after, "reel_queue_wait_seconds_count", model=MODEL) == 4
    assert value(after, "reel_queue_wait_seconds_bucket", model=MODEL, le="+Inf") == 4
    # Run to an end by the worker: the completed and the failed ones.
    assert value(after, "reel_prediction_duration_seconds_count", model=MODEL) == 3
    assert value(after, "reel_prediction_duration_seconds_sum", model=MODEL) > 0
    polls = value(
        after,
        "reel_http_request_duration_seconds_count",
        method="GET",
        route="/api/v3/predictions/{prediction_id}/result",
        status="200",
    )
    assert polls >= 5


def test_queue_depth_running_and_workers_come_from_the_database(scenario: Scenario) -> None:
    busy, after = scenario.while_busy, scenario.after
    assert value(busy, "reel_queue_depth", model=MODEL) == 1
    assert value(busy, "reel_predictions_running", model=MODEL) == 1
    assert value(after, "reel_queue_depth", model=MODEL) == 0
    assert value(after, "reel_predictions_running", model=MODEL) == 0
    assert value(after, "reel_workers_alive", model=MODEL) == 1
    # Every model of the catalog is listed, so an empty queue reads 0 rather than nothing.
    assert ("reel_queue_depth", frozenset({("model", "wavespeed-ai/ltx-video/i2v")})) in after


def test_routes_are_templates_and_no_label_holds_an_id_a_key_or_a_prompt(scenario: Scenario) -> None:
    after = scenario.after
    http = {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"])
        for name, labels in after
        if name == "reel_http_request_duration_seconds_count"
    }
    # One operation per model (its route is the model's own path, never an id's).
    assert ("POST", f"/api/v3/{MODEL}", "200") in http
    assert ("GET", "/api/v3/predictions/{prediction_id}/result", "200") in http
    assert ("POST", "/api/v3/predictions/{prediction_id}/cancel", "200") in http
    assert ("GET", "unmatched", "404") in http
    labels = label_values(after) | label_values(scenario.while_busy)
    secrets = [*scenario.ids.values(), scenario.key, scenario.key_id, *PROMPTS.values()]
    assert not [label for label in labels for secret in secrets if secret in label]
    assert not [label for label in labels if re.search(r"[0-9a-f]{32}", label)]


def _log_entries(server: LiveServer) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def test_json_logs_one_object_per_line_with_the_prediction_on_its_lines(scenario: Scenario) -> None:
    entries = _log_entries(scenario.server)
    assert all({"time", "level", "process", "logger", "message"} <= entry.keys() for entry in entries)
    server_pid = scenario.server.process.pid if scenario.server.process else None
    for name, prediction_id in scenario.ids.items():
        about = [entry for entry in entries if entry.get("prediction_id") == prediction_id]
        assert about, f"no log line carries {name}'s prediction_id"
        for entry in about:
            assert entry["key_id"] == scenario.key_id and entry["model"] == MODEL, entry
        # Said by the API (created, cancelled) and, for those that started, by the worker.
        assert any(entry["process"] == server_pid for entry in about), name
        if name != "waiting":
            assert any(entry["process"] != server_pid for entry in about), name
        # Every line that names the prediction carries its fields, bar the access log, which
        # uvicorn writes outside the request's context (its path holds the id).
        naming = [e for e in entries if prediction_id in e["message"] and e["logger"] != "uvicorn.access"]
        assert naming and all(entry.get("prediction_id") == prediction_id for entry in naming), naming
    failed = [
        e for e in entries if e.get("prediction_id") == scenario.ids["failed"] and e["level"] == "WARNING"
    ]
    assert any("failure requested by the prompt tag" in entry["message"] for entry in failed)
    access = [entry["message"] for entry in entries if entry["logger"] == "uvicorn.access"]
    # As LiveServer.server_errors reads a text log: no 5xx, bar readiness saying "not yet".
    errors = [line for line in access if re.search(r'HTTP/1\.1" 5\d\d', line) and '"GET /readyz' not in line]
    assert access and not errors


def test_a_scale_out_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    """``reel serve --no-worker`` and a ``reel worker --metrics-port`` on one data dir: the
    worker's counters are on its own port, the fleet's state on the API's."""
    env = _short_clips(tmp_path)
    api = LiveServer(tmp_path / "data", env=env).start("--no-worker", "--sandbox")
    port = free_port()
    worker_env = {**env, "REEL_METRICS_PORT": str(port), "REEL_LOG_FORMAT": "json"}
    worker = WorkerProcess(tmp_path / "data", worker_env, 1).start()
    try:
        key = create_key(api.data_dir, "scale-out")
        prediction_id = submit(api.url, key, "a lighthouse")
        assert wait_for(api.url, key, prediction_id, has_ended, timeout_s=120)["status"] == "completed"
        own = _scrape_until(
            f"http://127.0.0.1:{port}",
            lambda s: value(s, "reel_predictions_total", model=MODEL, status="completed") == 1,
        )
        assert value(own, "reel_predictions_total", model=MODEL, status="completed") == 1
        assert value(own, "reel_queue_wait_seconds_count", model=MODEL) == 1
        assert value(own, "reel_prediction_duration_seconds_count", model=MODEL) == 1
        assert value(own, "process_resident_memory_bytes") > 0  # a process of its own
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=10).status_code == 404
        fleet = scrape(api.url)
        assert value(fleet, "reel_workers_alive", model=MODEL) == 1
        assert value(fleet, "reel_predictions_total", model=MODEL, status="completed") == 0
        # `reel worker` logs JSON too, with the prediction on its lines about it.
        lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
        about = [entry for entry in lines if entry.get("prediction_id") == prediction_id]
        assert any("completed in" in entry["message"] for entry in about)
        assert all(entry["key_id"] == key.split("_")[1] and entry["model"] == MODEL for entry in about)
    finally:
        worker.stop()
        api.stop()
    assert not api.server_errors()
