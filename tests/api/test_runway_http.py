"""Runway's ``/v1`` HTTP contract (api-contract.md, section 2), checked with raw httpx.

The SDK tests cover what the official client exercises; these cover the rest: the version
header, Runway's error shape on every error, each refused field (and that nothing was
created), the task object per status, one store seen through both dialects, and uploads.
Nothing here needs a process boundary: it runs against the app in-process (``support.inprocess``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from support.inprocess import InProcessReel, in_process_reel
from support.media import png_base64, png_bytes, png_data_uri

VERSION = {"X-Runway-Version": "2024-11-06"}
SLOW = "runway contract [sandbox:delay=60]"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def runway_client(reel_app: InProcessReel, key: str | None, version: bool = True) -> httpx.Client:
    client = reel_app.client(key)
    if version:
        client.headers.update(VERSION)
    return client


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gen4_turbo",
        "promptImage": png_data_uri(64, 64),
        "ratio": "960:960",
        "promptText": SLOW,
        "duration": 2,
        **extra,
    }


def assert_runway_error(response: httpx.Response, status: int, *words: str) -> str:
    """Runway's error shape: the status line, and a body that is only ``{"error": message}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"error"}, payload
    message = payload["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def wavespeed_total(reel_app: InProcessReel, key: str) -> int:
    with reel_app.client(key) as client:
        response = client.post("/api/v3/predictions", json={})
    total = response.json()["data"]["total"]
    assert isinstance(total, int)
    return total


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def me_key(reel_app: InProcessReel) -> str:
    """A key of this module's own, so counting its predictions sees only ours."""
    return reel_app.create_key("runway http")


@pytest.fixture(scope="module")
def me(reel_app: InProcessReel, me_key: str) -> Iterator[httpx.Client]:
    with runway_client(reel_app, me_key) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(reel_app: InProcessReel) -> Iterator[httpx.Client]:
    """No key and no version header: what the SDK sends to an upload URL."""
    with reel_app.client() as client:
        yield client


@pytest.fixture
def made(me: httpx.Client) -> Iterator[list[str]]:
    """Task ids a test made; cancelled and deleted afterwards so the shared worker is free."""
    ids: list[str] = []
    yield ids
    for task_id in ids:
        me.delete(f"/v1/tasks/{task_id}")
        me.delete(f"/v1/tasks/{task_id}")


def create(me: httpx.Client, made: list[str], payload: dict[str, Any]) -> str:
    response = me.post("/v1/image_to_video", json=payload)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    created = response.json()
    assert set(created) == {"id", "estimatedCost"}
    assert UUID.match(created["id"]), created
    assert created["estimatedCost"] == {"credits": 0}
    made.append(created["id"])
    return str(created["id"])


@pytest.fixture(scope="module")
def small_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReel]:
    """Tiny upload limit for the size checks. No worker: nothing here needs one."""
    with in_process_reel(
        tmp_path_factory.mktemp("runway-small"), worker=False, max_upload_bytes=20000
    ) as app:
        yield app


# --- transport: version header, auth, unknown routes -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/image_to_video"),
        ("GET", "/v1/tasks/00000000-0000-4000-8000-000000000000"),
        ("DELETE", "/v1/tasks/00000000-0000-4000-8000-000000000000"),
        ("POST", "/v1/uploads"),
    ],
)
def test_every_route_needs_the_version_header(
    reel_app: InProcessReel, me_key: str, method: str, path: str
) -> None:
    before = wavespeed_total(reel_app, me_key)
    with runway_client(reel_app, me_key, version=False) as client:
        missing = client.request(method, path, json=body())
        assert_runway_error(missing, 400, "X-Runway-Version", "2024-11-06")
        unknown = client.request(method, path, json=body(), headers={"X-Runway-Version": "2023-01-01"})
        assert_runway_error(unknown, 400, "X-Runway-Version", "2023-01-01")
    assert wavespeed_total(reel_app, me_key) == before


def test_no_key_or_a_wrong_key_is_401(reel_app: InProcessReel) -> None:
    with runway_client(reel_app, None) as anonymous:
        assert_runway_error(anonymous.post("/v1/image_to_video", json=body()), 401, "API key")
    with runway_client(reel_app, "rk_000000000000_not-a-real-key-at-all") as wrong:
        response = wrong.get("/v1/tasks/00000000-0000-4000-8000-000000000000")
        assert_runway_error(response, 401, "API key")


def test_unknown_routes_and_methods_answer_in_runways_shape(me: httpx.Client) -> None:
    assert_runway_error(me.get("/v1/nothing-here"), 404)
    assert_runway_error(me.put("/v1/tasks/abc"), 405)


def test_an_unknown_task_is_404(me: httpx.Client) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_runway_error(me.get(f"/v1/tasks/{unknown}"), 404, "not found", unknown)
    assert_runway_error(me.get("/v1/tasks/not-a-uuid"), 404)
    assert_runway_error(me.delete("/v1/tasks/00000000-0000-4000-8000-000000000000"), 404)


# --- image_to_video: refused fields -----------------------------------------------------------

_LONG_PROMPT = "\U0001f3ac" * 501  # 501 characters, 1002 UTF-16 code units


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "gen5_imaginary"}, "model"),
        ({"model": None}, "model"),
        ({"ratio": "1:1"}, "ratio"),
        ({"ratio": "1920:1080"}, "ratio"),
        ({"ratio": None}, "ratio"),
        ({"promptText": _LONG_PROMPT}, "promptText"),
        ({"promptText": "   "}, "promptText"),
        ({"promptText": 7}, "promptText"),
        ({"duration": 1}, "duration"),
        ({"duration": 11}, "duration"),
        ({"duration": 2.5}, "duration"),
        ({"duration": "5"}, "duration"),
        ({"seed": -1}, "seed"),
        ({"seed": 4_294_967_296}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"promptImage": None}, "promptImage"),
        ({"promptImage": ""}, "promptImage"),
        ({"promptImage": [{"uri": png_data_uri(64, 64), "position": "last"}]}, "promptImage"),
        ({"promptImage": [{"position": "first"}]}, "promptImage"),
        ({"promptImage": [{"uri": png_data_uri(64, 64), "position": "first"}] * 2}, "promptImage"),
        ({"promptImage": "data:image/png;base64,bm90IGFuIGltYWdl"}, "promptImage"),
        ({"promptImage": "ftp://example.com/cat.png"}, "promptImage"),
        ({"promptImage": "runway://uploads/doesnotexist0000000000"}, "promptImage"),
        ({"promptImage": "runway://elsewhere/x"}, "promptImage"),
    ],
)
def test_a_bad_field_is_400_naming_it_and_creates_nothing(
    reel_app: InProcessReel, me_key: str, me: httpx.Client, change: dict[str, Any], field: str
) -> None:
    before = wavespeed_total(reel_app, me_key)
    assert_runway_error(me.post("/v1/image_to_video", json=body(**change)), 400, field)
    assert wavespeed_total(reel_app, me_key) == before


def test_a_body_that_is_not_a_json_object_is_400(me: httpx.Client) -> None:
    assert_runway_error(me.post("/v1/image_to_video", content=b"{not json"), 400, "JSON")
    assert_runway_error(me.post("/v1/image_to_video", json=[1, 2]), 400)


def test_limits_that_are_just_inside_are_accepted(me: httpx.Client, made: list[str]) -> None:
    # 1000 UTF-16 units: 500 characters outside the BMP; the longest duration; the largest seed.
    create(me, made, body(promptText="\U0001f3ac" * 483 + SLOW, duration=10, seed=4_294_967_295))
    create(me, made, body(promptText=None, duration=None, seed=None))
    create(me, made, body(promptImage=[{"uri": png_data_uri(64, 64), "position": "first"}]))
    create(me, made, body(model="wavespeed-ai/wan-2.2/i2v-720p", duration=8))
    message = assert_runway_error(
        me.post("/v1/image_to_video", json=body(model="wavespeed-ai/wan-2.2/i2v-720p", duration=2)),
        400,
        "duration",
    )
    assert "5 or 8" in message


def test_21_9_is_a_runway_only_size(reel_app: InProcessReel, me_key: str) -> None:
    with reel_app.client(me_key) as wavespeed:
        response = wavespeed.post(
            "/api/v3/runwayml/gen4-turbo",
            json={"prompt": SLOW, "image": png_base64(64, 64), "aspect_ratio": "21:9"},
        )
    assert response.status_code == 400, response.text
    assert "aspect_ratio" in response.json()["message"]


# --- tasks: the object per status, one store with two views -----------------------------------


def test_a_task_shows_its_fields_through_cancel_and_delete(me: httpx.Client, made: list[str]) -> None:
    task_id = create(me, made, body())
    task = me.get(f"/v1/tasks/{task_id}").json()
    assert task["id"] == task_id
    assert ISO_MS_Z.match(task["createdAt"])
    assert task["status"] in {"PENDING", "RUNNING"}
    assert task["estimatedCost"] == {"credits": 0}
    if task["status"] == "RUNNING":
        assert 0 <= task["progress"] <= 1

    cancelled = me.delete(f"/v1/tasks/{task_id}")
    assert cancelled.status_code == 204
    assert cancelled.content == b""
    task = me.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "CANCELLED"
    assert task["cost"] == {"credits": 0}
    assert "estimatedCost" not in task and "failure" not in task

    assert me.delete(f"/v1/tasks/{task_id}").status_code == 204
    assert_runway_error(me.get(f"/v1/tasks/{task_id}"), 404)
    assert_runway_error(me.delete(f"/v1/tasks/{task_id}"), 404)


def test_the_task_id_is_accepted_without_dashes_and_in_capitals(me: httpx.Client, made: list[str]) -> None:
    task_id = create(me, made, body())
    for spelling in (task_id.replace("-", ""), task_id.upper()):
        response = me.get(f"/v1/tasks/{spelling}")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == task_id


def test_one_store_two_views(reel_app: InProcessReel, me_key: str, me: httpx.Client, made: list[str]) -> None:
    with reel_app.client(me_key) as wavespeed:
        # A Runway task is a prediction ...
        task_id = create(me, made, body(ratio="1584:672"))
        prediction = wavespeed.get(f"/api/v3/predictions/{task_id.replace('-', '')}/result").json()["data"]
        assert prediction["status"] in {"created", "processing"}
        assert prediction["model"] == "runwayml/gen4-turbo"

        # ... and a WaveSpeed prediction is a task.
        submitted = wavespeed.post(
            "/api/v3/runwayml/gen4-turbo", json={"prompt": SLOW, "image": png_base64(64, 64)}
        ).json()["data"]
        task = me.get(f"/v1/tasks/{submitted['id']}").json()
        made.append(task["id"])
        assert UUID.match(task["id"]) and task["id"].replace("-", "") == submitted["id"]
        assert task["status"] in {"PENDING", "RUNNING"}

        assert me.delete(f"/v1/tasks/{task['id']}").status_code == 204
        cancelled = wavespeed.get(f"/api/v3/predictions/{submitted['id']}/result").json()["data"]
        assert cancelled["status"] == "cancelled"


def test_another_keys_task_is_404(reel_app: InProcessReel, me: httpx.Client, made: list[str]) -> None:
    task_id = create(me, made, body())
    with runway_client(reel_app, reel_app.create_key("someone else")) as other:
        assert_runway_error(other.get(f"/v1/tasks/{task_id}"), 404)
        assert_runway_error(other.delete(f"/v1/tasks/{task_id}"), 404)
    assert me.get(f"/v1/tasks/{task_id}").json()["status"] in {"PENDING", "RUNNING"}


def test_a_finished_task_has_cost_and_output_or_failure(me: httpx.Client, made: list[str]) -> None:
    failing = create(me, made, body(promptText="[sandbox:fail=runway contract says no]"))
    deadline = time.monotonic() + 60
    while (task := me.get(f"/v1/tasks/{failing}").json())["status"] in {"PENDING", "RUNNING"}:
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    assert task == {
        "id": failing,
        "status": "FAILED",
        "createdAt": task["createdAt"],
        "cost": {"credits": 0},
        "failure": "runway contract says no",
        "failureCode": "INTERNAL",
    }


# --- uploads ----------------------------------------------------------------------------------


def start_upload(client: httpx.Client, filename: str = "cat.png") -> dict[str, Any]:
    response = client.post("/v1/uploads", json={"filename": filename, "type": "ephemeral"})
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert set(ticket) == {"uploadUrl", "fields", "runwayUri"}
    assert ticket["runwayUri"].startswith("runway://")
    return dict(ticket)


def post_file(
    anonymous: httpx.Client, ticket: dict[str, Any], data: bytes, filename: str = "cat.png"
) -> httpx.Response:
    # As the SDK does it: no Authorization, the fields first, then the part named "file".
    return anonymous.post(ticket["uploadUrl"], data=ticket["fields"], files={"file": (filename, data)})


def test_upload_then_use_the_uri_once_uploaded(
    me: httpx.Client, anonymous: httpx.Client, made: list[str]
) -> None:
    ticket = start_upload(me)
    # Not usable before the bytes arrived.
    assert_runway_error(
        me.post("/v1/image_to_video", json=body(promptImage=ticket["runwayUri"])), 400, "promptImage"
    )
    sent = post_file(anonymous, ticket, png_bytes(64, 64))
    assert sent.status_code == 204, sent.text
    create(me, made, body(promptImage=ticket["runwayUri"]))
    # The upload URL is good for one upload.
    assert_runway_error(post_file(anonymous, ticket, png_bytes(64, 64)), 404)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "ephemeral"}, "filename"),
        ({"filename": "a.png"}, "type"),
        ({"filename": "a.png", "type": "x"}, "type"),
    ],
)
def test_a_bad_upload_request_is_400(me: httpx.Client, payload: dict[str, Any], field: str) -> None:
    assert_runway_error(me.post("/v1/uploads", json=payload), 400, field)


def test_the_upload_url_needs_its_token_and_a_file_part(me: httpx.Client, anonymous: httpx.Client) -> None:
    ticket = start_upload(me)
    wrong = re.sub(r"token=[^&]+", "token=guessed", ticket["uploadUrl"])
    assert_runway_error(anonymous.post(wrong, files={"file": ("cat.png", png_bytes(8, 8))}), 404)
    assert_runway_error(anonymous.post(ticket["uploadUrl"], data={"other": "x"}), 400, "file")
    assert_runway_error(anonymous.post(ticket["uploadUrl"], files={"file": ("cat.png", b"")}), 400, "empty")


def _a_body_never_sent() -> Iterable[bytes]:
    raise AssertionError("the app read a body it should have refused from its Content-Length")
    yield b""  # a generator: the error comes when the app asks for the first chunk


def test_an_upload_over_the_limit_is_413(small_app: InProcessReel) -> None:
    key = small_app.create_key("runway small")
    with runway_client(small_app, key) as client, small_app.client() as anonymous:
        ticket = start_upload(client)
        assert_runway_error(post_file(anonymous, ticket, b"x" * 20_001), 413, "20000")
        # Refused from Content-Length alone, before the body is read.
        response = anonymous.post(
            ticket["uploadUrl"],
            headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10_000_000)},
            content=_a_body_never_sent(),
        )
        assert response.status_code == 413
        assert "error" in response.text
        # The ticket is still good for a file within the limit.
        assert post_file(anonymous, ticket, png_bytes(16, 16)).status_code == 204
