"""``GET /metrics`` in-process: who may read it (the client's address is set on the ASGI
scope, as uvicorn sets it from the socket), and the HTTP histogram's labels. The numbers on
real processes are ``tests/test_metrics.py``'s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from reel.predictions.fleet_metrics import may_scrape
from support.inprocess import InProcessReel, in_process_reel

TOKEN = "metrics-token-for-tests"


def get_metrics(app: FastAPI, client_host: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client_host, 43210))
        async with httpx.AsyncClient(transport=transport, base_url="http://reel.test") as client:
            return await client.get("/metrics", headers=headers or {})

    return anyio.run(fetch)


def assert_refused(reply: httpx.Response) -> None:
    assert reply.status_code == 403
    body = reply.json()
    assert body["code"] == 403 and body["data"] is None
    assert "reel_" not in reply.text and "sqlite" not in reply.text.lower()


@pytest.fixture(scope="module")
def with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReel]:
    with in_process_reel(tmp_path_factory.mktemp("metrics-token"), worker=False, metrics_token=TOKEN) as reel:
        yield reel


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_clients_may_scrape_by_default(reel_app: InProcessReel, host: str) -> None:
    reply = get_metrics(reel_app.app, host)
    assert reply.status_code == 200
    names = {family.name for family in text_string_to_metric_families(reply.text)}
    assert {"reel_queue_depth", "reel_workers_alive", "reel_http_request_duration_seconds"} <= names


@pytest.mark.parametrize("host", ["10.1.2.3", "192.0.2.7", "2001:db8::5", "testclient"])
def test_other_clients_are_refused_without_a_token(reel_app: InProcessReel, host: str) -> None:
    assert_refused(get_metrics(reel_app.app, host))
    # A Bearer header is no key to /metrics while no REEL_METRICS_TOKEN is set.
    assert_refused(get_metrics(reel_app.app, host, {"Authorization": "Bearer "}))


def test_the_token_lets_any_client_scrape(with_token: InProcessReel) -> None:
    reply = get_metrics(with_token.app, "203.0.113.9", {"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200 and "reel_queue_depth" in reply.text
    assert_refused(get_metrics(with_token.app, "203.0.113.9", {"Authorization": f"Bearer {TOKEN}x"}))
    assert_refused(get_metrics(with_token.app, "203.0.113.9", {"Authorization": f"Basic {TOKEN}"}))
    assert_refused(get_metrics(with_token.app, "203.0.113.9"))
    # Loopback still may, token or not.
    assert get_metrics(with_token.app, "127.0.0.1").status_code == 200


def test_may_scrape_rule() -> None:
    assert may_scrape("127.0.0.1", "", None)
    assert not may_scrape(None, "", None)
    assert not may_scrape("10.0.0.1", f"Bearer {TOKEN}", None)
    assert may_scrape("10.0.0.1", f"bearer  {TOKEN} ", TOKEN)
    assert not may_scrape("10.0.0.1", "Bearer", TOKEN)


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("reel_http_request_duration_seconds_count", labels) or 0.0


def test_route_labels_are_templates_unknown_paths_and_methods_collapse(reel_app: InProcessReel) -> None:
    before = {
        "result": _count("GET", "/api/v3/predictions/{prediction_id}/result", "401"),
        "unmatched": _count("GET", "unmatched", "404"),
        "other": _count("other", "/healthz", "405"),
    }
    with reel_app.client() as client:
        assert client.get("/api/v3/predictions/0123456789abcdef0123456789abcdef/result").status_code == 401
        assert client.get("/no/such/path/0123456789abcdef").status_code == 404
        assert client.request("BREW", "/healthz").status_code == 405
    assert _count("GET", "/api/v3/predictions/{prediction_id}/result", "401") == before["result"] + 1
    assert _count("GET", "unmatched", "404") == before["unmatched"] + 1
    assert _count("other", "/healthz", "405") == before["other"] + 1


def test_the_metrics_dir_of_a_dead_server_is_removed(tmp_path: Path) -> None:
    from reel import metrics

    stale = tmp_path / "metrics" / "serve-999999999"  # above pid_max: never a live process
    stale.mkdir(parents=True)
    mine = metrics.serve_dir(tmp_path)
    assert not stale.exists()
    assert mine.name.startswith("serve-") and mine.parent == tmp_path / "metrics"
