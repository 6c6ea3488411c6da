"""``/readyz``, ``/api/v3/models`` and a database outage say what is wrong without internals.

These routes (and the 401/503 of any other) answer callers who hold no key: the database's
host, port, user and the driver's text, or a path on a worker's disk, go to the log only.
Driven in-process through ``create_app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reel.api.app import create_app
from reel.lifecycle.clock import utcnow
from reel.settings import Settings
from reel.store.tables import Worker
from reel.wiring import Services, build_services
from support.factories import services_for

pytestmark = pytest.mark.anyio

# Every one of these appears in the driver's error or the URL; none may reach a response.
SECRET_USER = "reel_secret_user"
SECRET_PASSWORD = "hunter2-secret"
SECRET_DATABASE = "reel_secret_db"
DOWN_DATABASES = {
    "closed port": ("127.0.0.1:1", ["127.0.0.1", "port 1", "refused"]),
    "unknown host": ("db-secret-host.invalid:5432", ["db-secret-host", "resolve", "5432"]),
}
MODEL = "runwayml/gen4-turbo"


def _down_database_services(data_dir: Path, address: str) -> Services:
    url = f"postgresql://{SECRET_USER}:{SECRET_PASSWORD}@{address}/{SECRET_DATABASE}"
    # Nothing connects before the first request: no migrations, the table dispatcher.
    return build_services(
        Settings(data_dir=data_dir, database_url=url, dispatch="table"), run_migrations=False
    )


def _client(services: Services) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://reel.test"
    )


def _assert_no_internals(text: str, extra: list[str]) -> None:
    for secret in [SECRET_USER, SECRET_PASSWORD, SECRET_DATABASE, "psycopg", "connection", *extra]:
        assert secret.lower() not in text.lower(), f"{secret!r} leaked in {text!r}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def services(data_dir: Path) -> Services:
    return services_for(data_dir)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(services) as client:
        yield client


@pytest.mark.parametrize("down", DOWN_DATABASES, ids=list(DOWN_DATABASES))
async def test_readyz_with_the_database_down_says_so_and_logs_the_detail(
    data_dir: Path, down: str, caplog: pytest.LogCaptureFixture
) -> None:
    address, driver_words = DOWN_DATABASES[down]
    caplog.set_level(logging.WARNING)
    async with _client(_down_database_services(data_dir, address)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "database unreachable"}
    _assert_no_internals(response.text, driver_words)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "database unreachable" in logged
    assert address.split(":")[0] in logged  # the operator's log has what the caller does not


@pytest.mark.parametrize("down", DOWN_DATABASES, ids=list(DOWN_DATABASES))
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v3/predictions/0123/result"),  # the key check meets the outage first
        ("GET", "/api/v3/models"),  # no key needed at all
        ("GET", "/v1/tasks/0123"),  # Runway's error shape
    ],
)
async def test_a_database_outage_is_a_503_without_the_drivers_text(
    data_dir: Path, down: str, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    address, driver_words = DOWN_DATABASES[down]
    caplog.set_level(logging.WARNING)
    headers = {
        "Authorization": "Bearer rk_000000000000_nope-nope-nope-nope-nope",
        "X-Runway-Version": "2024-11-06",
    }
    async with _client(_down_database_services(data_dir, address)) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == 503, response.text
    assert "database unavailable" in response.text
    _assert_no_internals(response.text, driver_words)
    assert address.split(":")[0] in "\n".join(record.getMessage() for record in caplog.records)


async def test_readyz_answers_ready_with_the_live_workers(
    services: Services, client: httpx.AsyncClient
) -> None:
    _announce(services, {MODEL: {"backend": "sandbox", "ready": True, "reason": "CPU sandbox"}})
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "workers": 1}


# What a worker may write: the diffusers backend names local directories and cache folders.
WORKER_REASONS = {
    "missing local dir": (
        "local model directory /home/alice/models/wan-ti2v does not exist; run `reel models pull {model}`",
        "weights missing (the local model directory does not exist): "
        "run `reel models pull {model}` on the worker",
    ),
    "incomplete dir": (
        "local model directory /srv/weights/wan is incomplete: /srv/weights/wan/vae/ has no config file; "
        "run `reel models pull {model}`",
        "weights incomplete: run `reel models pull {model}` on the worker",
    ),
    "not downloaded": (
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers is not downloaded (not in the Hugging Face cache "
        "/root/.cache/huggingface/hub); run `reel models pull {model}`",
        "weights not downloaded: run `reel models pull {model}` on the worker",
    ),
    "anything else": (
        "could not open /dev/nvidia0 on gpu-box-7.internal:9000 as user bob",
        "not ready on its worker; the worker's log has the reason",
    ),
}


@pytest.mark.parametrize("case", WORKER_REASONS, ids=list(WORKER_REASONS))
async def test_the_model_listing_shows_no_path_or_host_from_a_workers_reason(
    services: Services, client: httpx.AsyncClient, case: str
) -> None:
    written, shown = (text.format(model=MODEL) for text in WORKER_REASONS[case])
    _announce(services, {MODEL: {"backend": "diffusers", "ready": False, "reason": written}})
    response = await client.get("/api/v3/models")
    assert response.status_code == 200
    (item,) = [item for item in response.json()["data"] if item["id"] == MODEL]
    assert item["ready"] is False and item["backend"] == "diffusers" and item["workers"] == 1
    assert item["reason"] == shown
    for internal in ["/home", "/srv", "/root", "/dev", "alice", "gpu-box", "9000", "bob", ".cache"]:
        assert internal not in response.text


async def test_the_model_listing_without_workers_says_how_to_start_one(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/api/v3/models")).json()["data"]
    (item,) = [item for item in listing if item["id"] == MODEL]
    assert item == {
        "id": MODEL,
        "title": item["title"],
        "backend": "none",
        "sandbox": False,
        "ready": False,
        "reason": "no worker serving this model is running; start one with `reel worker`",
        "workers": 0,
        "durations": item["durations"],
        "parameters": item["parameters"],
    }
    assert "prompt" in item["parameters"] and item["durations"]


def _announce(services: Services, models: dict[str, dict[str, object]]) -> None:
    """A worker's presence row, as ``reel.worker.presence`` writes it."""
    now = utcnow()
    with services.sessions.begin() as session:
        session.add(
            Worker(id="host:1:abc", host="gpu-box", pid=1, models=models, started_at=now, last_seen_at=now)
        )
