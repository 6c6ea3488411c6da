"""The WaveSpeed v3 HTTP contract (docs: api-contract.md, section 1), checked with raw httpx.

The SDK tests cover what the official client exercises; these cover the rest of the contract:
the envelope on every error, the prediction object's fields, history, delete, cancel, uploads,
served files and the system routes. Nothing here needs a process boundary, so everything runs
against the app in-process (``support.inprocess``), with its worker in a thread.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from support.inprocess import InProcessReel, in_process_reel
from support.media import png_base64, png_bytes

MODEL = "runwayml/gen4-turbo"
OTHER_MODEL = "wavespeed-ai/wan-2.2/i2v-720p"
# Slow enough that the worker never finishes it while a test looks at it; cancelling or
# deleting it stops the worker within about a second.
SLOW = "contract [sandbox:delay=60]"
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
POLL_S = 0.1
WAIT_S = 60.0


# --- helpers ----------------------------------------------------------------------------------


def body(prompt: str = SLOW, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "image": png_base64(64, 64), "aspect_ratio": "1:1", **extra}


def data_of(response: httpx.Response) -> Any:
    """The ``data`` of a successful envelope, after checking the envelope itself."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"code", "message", "data"}
    assert payload["code"] == 200
    assert payload["message"] == "success"
    return payload["data"]


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """An error envelope: HTTP ``status`` as ``code``, ``data`` null, a message with ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"code", "message", "data"}, payload
    assert payload["code"] == status
    assert payload["data"] is None
    message = payload["message"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def wait_for(
    client: httpx.Client,
    prediction_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = WAIT_S,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        data = data_of(client.get(f"/api/v3/predictions/{prediction_id}/result"))
        if done(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"prediction {prediction_id} did not get there in {timeout_s} s: {data}")
        time.sleep(POLL_S)


def wait_for_log(reel_app: InProcessReel, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in reel_app.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in the log")
        time.sleep(POLL_S)


def history_total(client: httpx.Client) -> int:
    total = data_of(client.post("/api/v3/predictions", json={}))["total"]
    assert isinstance(total, int)
    return total


def gif_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="GIF")
    return base64.b64encode(buffer.getvalue()).decode()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def my_key(reel_app: InProcessReel) -> str:
    return reel_app.create_key("tests")


@pytest.fixture(scope="module")
def me(reel_app: InProcessReel, my_key: str) -> Iterator[httpx.Client]:
    with reel_app.client(my_key) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(reel_app: InProcessReel) -> Iterator[httpx.Client]:
    """No key: what a browser or ``curl`` sends to the URLs the API hands out."""
    with reel_app.client() as client:
        yield client


@pytest.fixture
def made(me: httpx.Client) -> Iterator[list[str]]:
    """Ids of predictions a test made; deleted afterwards so the shared worker is not kept busy."""
    ids: list[str] = []
    yield ids
    if ids:
        me.post("/api/v3/predictions/delete", json={"ids": ids})


def submit(
    client: httpx.Client, made: list[str], payload: dict[str, Any], model: str = MODEL
) -> dict[str, Any]:
    data = data_of(client.post(f"/api/v3/{model}", json=payload))
    made.append(data["id"])
    return data


@pytest.fixture(scope="module")
def completed(me: httpx.Client) -> Iterator[dict[str, Any]]:
    """One prediction that ran to completion, shared by the tests that only read it."""
    data = data_of(me.post(f"/api/v3/{MODEL}", json=body("contract: finished")))
    yield wait_for(me, data["id"], lambda d: d["status"] in {"completed", "failed"})
    me.delete(f"/api/v3/predictions/{data['id']}")


@pytest.fixture(scope="module")
def small_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReel]:
    """The app with tiny limits, for the size checks. No worker: nothing here needs one."""
    with in_process_reel(
        tmp_path_factory.mktemp("small"),
        worker=False,
        max_upload_bytes=20000,
        max_body_bytes=30000,
        max_image_pixels=10000,
    ) as app:
        yield app


@pytest.fixture(scope="module")
def small(small_app: InProcessReel) -> Iterator[httpx.Client]:
    with small_app.client(small_app.create_key("small")) as client:
        yield client


# The body cap is max(REEL_MAX_BODY_BYTES, 1.4 × REEL_MAX_UPLOAD_BYTES + 64 KiB): 93 536 bytes here.
OVER_SMALL_BODY_LIMIT = 100_000


# --- submit and the prediction object ---------------------------------------------------------


def test_submit_answers_200_with_a_created_prediction(
    me: httpx.Client, reel_app: InProcessReel, made: list[str]
) -> None:
    before = datetime.now(UTC)
    data = submit(me, made, body(extra_field="ignored"))
    assert data["status"] == "created"
    assert isinstance(data["id"], str) and len(data["id"]) >= 16
    assert data["model"] == MODEL
    assert data["outputs"] == []
    assert data["has_nsfw_contents"] == []
    assert data["error"] == ""
    assert data["urls"] == {"get": f"{reel_app.url}/api/v3/predictions/{data['id']}/result"}
    assert isinstance(data["timings"]["inference"], int)
    assert data["timings"]["inference"] == 0
    assert ISO_MS_Z.match(data["created_at"]), data["created_at"]
    created = datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC) + timedelta(seconds=1)


def test_ids_are_distinct(me: httpx.Client, made: list[str]) -> None:
    first = submit(me, made, body())
    second = submit(me, made, body())
    assert first["id"] != second["id"]


def test_result_of_a_fresh_prediction_and_its_alias_agree(me: httpx.Client, made: list[str]) -> None:
    data = submit(me, made, body())
    result = data_of(me.get(f"/api/v3/predictions/{data['id']}/result"))
    alias = data_of(me.get(f"/api/v3/predictions/{data['id']}"))
    stable = ("id", "model", "urls", "created_at", "outputs", "error")
    assert {k: result[k] for k in stable} == {k: data[k] for k in stable}
    assert {k: alias[k] for k in stable} == {k: data[k] for k in stable}
    assert alias["status"] in {"created", "processing"}


def test_completed_prediction(
    completed: dict[str, Any], reel_app: InProcessReel, anonymous: httpx.Client
) -> None:
    assert completed["status"] == "completed", completed
    assert completed["error"] == ""
    assert isinstance(completed["timings"]["inference"], int)
    assert completed["timings"]["inference"] > 0
    assert completed["progress"] == 1
    (output,) = completed["outputs"]
    assert output.startswith(reel_app.url + "/") and output.endswith(".mp4")
    (flag,) = completed["has_nsfw_contents"]
    assert isinstance(flag, bool)
    video = anonymous.get(output)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.headers["x-content-type-options"] == "nosniff"
    assert video.content[4:8] == b"ftyp"


def test_alias_equals_result(me: httpx.Client, completed: dict[str, Any]) -> None:
    pid = completed["id"]
    result = me.get(f"/api/v3/predictions/{pid}/result")
    alias = me.get(f"/api/v3/predictions/{pid}")
    assert data_of(alias) == data_of(result) == completed
    assert alias.json() == result.json()


def test_unknown_id_is_a_404_on_every_route(me: httpx.Client) -> None:
    unknown = "0" * 32
    assert_error(me.get(f"/api/v3/predictions/{unknown}/result"), 404, unknown)
    assert_error(me.get(f"/api/v3/predictions/{unknown}"), 404, unknown)
    assert_error(me.post(f"/api/v3/predictions/{unknown}/cancel"), 404, unknown)
    assert_error(me.delete(f"/api/v3/predictions/{unknown}"), 404, unknown)


# --- authentication ---------------------------------------------------------------------------

ROUTES = [
    ("POST", f"/api/v3/{MODEL}"),
    ("GET", "/api/v3/predictions/0123/result"),
    ("GET", "/api/v3/predictions/0123"),
    ("POST", "/api/v3/predictions/0123/cancel"),
    ("DELETE", "/api/v3/predictions/0123"),
    ("POST", "/api/v3/predictions"),
    ("POST", "/api/v3/predictions/delete"),
    ("GET", "/api/v3/webhook/secret"),
    ("POST", "/api/v3/media/uploads"),
    ("POST", "/api/v3/media/upload/binary"),
]
BAD_AUTHORIZATIONS = [
    None,
    "",
    "Bearer",
    "Bearer garbage",
    "Basic dXNlcjpwYXNz",
    "Bearer rk_000000000000_" + "a" * 43,
    "Token rk_000000000000_" + "a" * 43,
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS)
def test_missing_or_wrong_key_is_a_401_envelope(
    anonymous: httpx.Client, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = anonymous.request(method, path, headers=headers, json={"prompt": "x"})
    assert_error(response, 401, "API key")
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_valid_key_without_bearer_is_a_401(anonymous: httpx.Client, my_key: str) -> None:
    response = anonymous.get("/api/v3/webhook/secret", headers={"Authorization": my_key})
    assert_error(response, 401, "API key")


def test_bearer_scheme_is_case_insensitive(anonymous: httpx.Client, my_key: str) -> None:
    response = anonymous.get("/api/v3/webhook/secret", headers={"Authorization": f"bearer {my_key}"})
    assert data_of(response)["secret"].startswith("whsec_")


# --- malformed requests -----------------------------------------------------------------------

JSON_ROUTES = [f"/api/v3/{MODEL}", "/api/v3/predictions/delete", "/api/v3/media/uploads"]


@pytest.mark.parametrize("path", [*JSON_ROUTES, "/api/v3/predictions"])
@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"prompt": "x",}', b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"42"]
)
def test_a_body_that_is_not_a_json_object_is_a_400(me: httpx.Client, path: str, raw: bytes) -> None:
    before = history_total(me)
    response = me.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "body")
    assert history_total(me) == before


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_an_empty_body_is_a_400(me: httpx.Client, path: str) -> None:
    assert_error(me.post(path, content=b""), 400, "body")


def test_a_body_over_the_limit_is_a_413(small: httpx.Client) -> None:
    before = history_total(small)
    payload = body(padding="x" * OVER_SMALL_BODY_LIMIT)
    assert_error(small.post(f"/api/v3/{MODEL}", json=payload), 413, "body", "limit")
    assert history_total(small) == before


def test_a_chunked_body_over_the_limit_is_a_413(small: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "x", "padding": "'
        for _ in range(OVER_SMALL_BODY_LIMIT // 1000):
            yield b"x" * 1000
        yield b'"}'

    response = small.post(f"/api/v3/{MODEL}", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body")


def test_a_body_under_the_limit_passes_the_size_check(small: httpx.Client) -> None:
    # Same route, same padding field, smaller: it gets as far as the model check.
    payload = body(padding="x" * 10_000)
    assert_error(small.post("/api/v3/nobody/no-model", json=payload), 404, "model")


def test_unknown_model_is_a_404_naming_it(me: httpx.Client) -> None:
    before = history_total(me)
    assert_error(me.post("/api/v3/nobody/no-such-model", json=body()), 404, "nobody/no-such-model")
    assert history_total(me) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/nope"), ("GET", "/api/v2/predictions/x/result"), ("DELETE", "/files")],
)
def test_unknown_route_is_a_404_envelope(me: httpx.Client, method: str, path: str) -> None:
    assert_error(me.request(method, path), 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_path_under_api_v3_is_a_404_not_a_405(me: httpx.Client, method: str) -> None:
    response = me.request(method, "/api/v3/nothing/here")
    assert_error(response, 404)
    assert "/api/v3/nothing/here" in response.json()["message"]


# --- submit validation ------------------------------------------------------------------------


def test_base64_output_with_a_webhook_is_a_400(me: httpx.Client) -> None:
    before = history_total(me)
    response = me.post(
        f"/api/v3/{MODEL}",
        params={"webhook": "https://example.com/hook"},
        json=body(enable_base64_output=True),
    )
    assert_error(response, 400, "enable_base64_output", "webhook")
    assert history_total(me) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://2130706433/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://example.com/hook",
        "not a url",
    ],
)
def test_a_webhook_url_to_a_private_address_is_a_400_naming_webhook(me: httpx.Client, url: str) -> None:
    before = history_total(me)
    response = me.post(f"/api/v3/{MODEL}", params={"webhook": url}, json=body())
    message = assert_error(response, 400, "webhook")
    assert message.startswith("webhook:")
    assert history_total(me) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/healthz",
        "http://localhost:{port}/files/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/x.png",
        "http://127.0.0.2/x.png",
        "http://[::1]/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ],
)
def test_an_image_url_to_a_private_address_is_a_400_naming_image(
    me: httpx.Client, reel_app: InProcessReel, url: str
) -> None:
    before = history_total(me)
    response = me.post(f"/api/v3/{MODEL}", json=body(image=url.format(port=reel_app.port)))
    message = assert_error(response, 400, "image")
    assert message.startswith("image:")
    assert history_total(me) == before


def test_an_image_over_the_pixel_cap_is_a_400(small: httpx.Client) -> None:
    before = history_total(small)
    response = small.post(f"/api/v3/{MODEL}", json=body(image=png_base64(200, 200)))
    assert_error(response, 400, "image", "200", "limit")
    assert history_total(small) == before


def test_an_image_over_the_byte_cap_is_a_400(small: httpx.Client) -> None:
    # 6400 px, under the pixel cap, padded past the 20 000-byte cap (after IEND: still a PNG).
    raw = png_bytes(80, 80) + b"\x00" * 25_000
    response = small.post(f"/api/v3/{MODEL}", json=body(image=base64.b64encode(raw).decode()))
    assert_error(response, 400, "image", "20000")


def test_a_small_image_passes_the_small_servers_checks(small: httpx.Client) -> None:
    before = history_total(small)
    data = data_of(small.post(f"/api/v3/{MODEL}", json=body(image=png_base64(90, 90))))
    assert data["status"] == "created"
    assert history_total(small) == before + 1
    small.delete(f"/api/v3/predictions/{data['id']}")


def test_a_gif_is_a_400_naming_the_format(me: httpx.Client) -> None:
    before = history_total(me)
    assert_error(me.post(f"/api/v3/{MODEL}", json=body(image=gif_base64())), 400, "image", "GIF")
    assert history_total(me) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt": "", "image": "IMAGE"}, "prompt"),
        ({"prompt": 5, "image": "IMAGE"}, "prompt"),
        ({"prompt": "x", "image": ""}, "image"),
        ({"prompt": "x", "image": 5}, "image"),
        ({"prompt": "x", "image": "IMAGE", "aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"prompt": "x", "image": "IMAGE", "aspect_ratio": 1}, "aspect_ratio"),
        ({"prompt": "x", "image": "IMAGE", "enable_sync_mode": "yes"}, "enable_sync_mode"),
        ({"prompt": "x", "image": "IMAGE", "enable_base64_output": 1}, "enable_base64_output"),
        ({"prompt": "x", "image": "IMAGE", "duration": 7}, "duration"),
        ({"prompt": "x", "image": "IMAGE", "seed": "1"}, "seed"),
    ],
)
def test_bad_fields_are_a_400_naming_them(me: httpx.Client, payload: dict[str, Any], field: str) -> None:
    before = history_total(me)
    sent = {k: (png_base64(64, 64) if v == "IMAGE" else v) for k, v in payload.items()}
    message = assert_error(me.post(f"/api/v3/{MODEL}", json=sent), 400, field)
    assert message.startswith(field)
    assert history_total(me) == before


# --- history ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_key(reel_app: InProcessReel) -> Iterator[tuple[httpx.Client, list[dict[str, Any]]]]:
    """A fresh key with three predictions, oldest first: failed (gen4), cancelled (wan), cancelled (gen4)."""
    with reel_app.client(reel_app.create_key("history")) as client:
        failed = data_of(client.post(f"/api/v3/{MODEL}", json=body("history [sandbox:fail]")))
        failed = wait_for(client, failed["id"], lambda d: d["status"] == "failed")
        made = [failed]
        for model in (OTHER_MODEL, MODEL):
            data = data_of(client.post(f"/api/v3/{model}", json=body()))
            made.append(data_of(client.post(f"/api/v3/predictions/{data['id']}/cancel")))
        yield client, made


def listed(client: httpx.Client, **query: Any) -> dict[str, Any]:
    data = data_of(client.post("/api/v3/predictions", json=query))
    assert set(data) == {"page", "total", "items"}
    return data


def ids(data: dict[str, Any]) -> list[str]:
    return [item["id"] for item in data["items"]]


def test_history_lists_newest_first_with_total(
    history_key: tuple[httpx.Client, list[dict[str, Any]]],
) -> None:
    client, (failed, wan, gen4) = history_key
    data = listed(client)
    assert data["page"] == 1
    assert data["total"] == 3
    assert ids(data) == [gen4["id"], wan["id"], failed["id"]]
    first = data["items"][0]
    assert first == data_of(client.get(f"/api/v3/predictions/{gen4['id']}/result"))
    # No body at all means the defaults.
    assert ids(data_of(client.post("/api/v3/predictions"))) == ids(data)


def test_history_pages(history_key: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, (failed, wan, gen4) = history_key
    page1 = listed(client, page=1, page_size=2)
    page2 = listed(client, page=2, page_size=2)
    page3 = listed(client, page=3, page_size=2)
    assert (page1["page"], page2["page"], page3["page"]) == (1, 2, 3)
    assert ids(page1) == [gen4["id"], wan["id"]]
    assert ids(page2) == [failed["id"]]
    assert ids(page3) == []
    assert page1["total"] == page2["total"] == page3["total"] == 3
    assert listed(client, page_size=100)["total"] == 3
    assert ids(listed(client, page_size=1)) == [gen4["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": "many"}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        # Past what SQL's OFFSET takes: was a 500 (found by schemathesis).
        ({"page": 1443269912509298863620751360}, "page"),
        ({"status": "exploded"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2024-13-45"}, "created_before"),
    ],
)
def test_history_rejects_bad_queries(
    history_key: tuple[httpx.Client, list[dict[str, Any]]], query: dict[str, Any], field: str
) -> None:
    client, _ = history_key
    message = assert_error(client.post("/api/v3/predictions", json=query), 400, field)
    assert message.startswith(field)


def test_history_filters_by_model_and_status(history_key: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, (failed, wan, gen4) = history_key
    assert ids(listed(client, model=OTHER_MODEL)) == [wan["id"]]
    assert ids(listed(client, model=MODEL)) == [gen4["id"], failed["id"]]
    assert listed(client, model=MODEL)["total"] == 2
    assert listed(client, model="nobody/nothing") == {"page": 1, "total": 0, "items": []}
    assert ids(listed(client, status="failed")) == [failed["id"]]
    assert ids(listed(client, status="cancelled")) == [gen4["id"], wan["id"]]
    assert listed(client, status="completed")["total"] == 0
    assert ids(listed(client, status="cancelled", model=MODEL)) == [gen4["id"]]
    (item,) = listed(client, status="failed")["items"]
    assert item["status"] == "failed" and item["error"]


def test_history_filters_by_creation_time(history_key: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, (failed, wan, gen4) = history_key
    middle = wan["created_at"]
    assert ids(listed(client, created_after=middle)) == [gen4["id"], wan["id"]]
    assert ids(listed(client, created_before=middle)) == [failed["id"]]
    assert ids(listed(client, created_after=middle, created_before=gen4["created_at"])) == [wan["id"]]
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert listed(client, created_after=later.isoformat())["total"] == 0
    assert listed(client, created_before=later.isoformat())["total"] == 3


def test_history_times_in_other_offsets_mean_the_same_instant(
    history_key: tuple[httpx.Client, list[dict[str, Any]]],
) -> None:
    client, (_failed, wan, gen4) = history_key
    middle = datetime.strptime(wan["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    in_utc = ids(listed(client, created_after=middle.isoformat()))
    east = middle.astimezone(timezone(timedelta(hours=5)))
    assert ids(listed(client, created_after=east.isoformat())) == in_utc == [gen4["id"], wan["id"]]
    # Without an offset a time is read as UTC, not refused and not a server error.
    naive = middle.replace(tzinfo=None).isoformat()
    assert ids(listed(client, created_after=naive)) == in_utc


def test_history_is_empty_for_a_new_key(reel_app: InProcessReel) -> None:
    with reel_app.client(reel_app.create_key("empty")) as client:
        assert listed(client, page=4) == {"page": 4, "total": 0, "items": []}


# --- delete and cancel ------------------------------------------------------------------------


def test_delete_one_completed_prediction(me: httpx.Client, anonymous: httpx.Client) -> None:
    data = data_of(me.post(f"/api/v3/{MODEL}", json=body("contract: to delete")))
    pid = data["id"]
    done = wait_for(me, pid, lambda d: d["status"] in {"completed", "failed"})
    assert done["status"] == "completed", done
    (output,) = done["outputs"]
    assert anonymous.get(output).status_code == 200
    before = history_total(me)

    assert data_of(me.delete(f"/api/v3/predictions/{pid}")) == {"id": pid, "status": "deleted"}

    assert_error(me.get(f"/api/v3/predictions/{pid}/result"), 404, pid)
    assert_error(me.get(f"/api/v3/predictions/{pid}"), 404, pid)
    assert_error(anonymous.get(output), 404)
    assert_error(me.delete(f"/api/v3/predictions/{pid}"), 404, pid)
    assert_error(me.post(f"/api/v3/predictions/{pid}/cancel"), 404, pid)
    assert history_total(me) == before - 1
    assert pid not in ids(listed(me, page_size=100))


def test_delete_many(me: httpx.Client, made: list[str]) -> None:
    first = submit(me, made, body())
    second = submit(me, made, body())
    kept = submit(me, made, body())
    response = me.post("/api/v3/predictions/delete", json={"ids": [first["id"], second["id"], "0" * 32]})
    assert data_of(response) == {"deleted_count": 2}
    for pid in (first["id"], second["id"]):
        assert_error(me.get(f"/api/v3/predictions/{pid}/result"), 404)
    assert data_of(me.get(f"/api/v3/predictions/{kept['id']}/result"))["id"] == kept["id"]
    # Deleting again finds nothing.
    assert data_of(me.post("/api/v3/predictions/delete", json={"ids": [first["id"]]})) == {"deleted_count": 0}


@pytest.mark.parametrize("payload", [{}, {"ids": []}, {"ids": "abc"}, {"ids": [1, 2]}, {"ids": ["x"] * 101}])
def test_delete_many_rejects_bad_ids(me: httpx.Client, payload: dict[str, Any]) -> None:
    assert_error(me.post("/api/v3/predictions/delete", json=payload), 400, "ids")


def test_cancel_a_running_prediction(me: httpx.Client, reel_app: InProcessReel, made: list[str]) -> None:
    pid = submit(me, made, body("contract: cancel me [sandbox:delay=20]"))["id"]
    wait_for(me, pid, lambda d: d["status"] == "processing")

    cancelled = data_of(me.post(f"/api/v3/predictions/{pid}/cancel"))
    assert cancelled["id"] == pid
    assert cancelled["status"] == "cancelled"
    assert cancelled["outputs"] == []

    # The worker notices at its next heartbeat and stops generating...
    wait_for_log(reel_app, f"prediction {pid} was cancelled or taken over; stopping")
    # ...and the prediction stays cancelled.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        data = data_of(me.get(f"/api/v3/predictions/{pid}/result"))
        assert data["status"] == "cancelled"
        assert data["outputs"] == []
        time.sleep(0.2)
    assert_error(me.post(f"/api/v3/predictions/{pid}/cancel"), 409, pid, "cancelled")


def test_cancel_a_waiting_prediction(me: httpx.Client, made: list[str]) -> None:
    pid = submit(me, made, body())["id"]
    assert data_of(me.post(f"/api/v3/predictions/{pid}/cancel"))["status"] == "cancelled"
    assert data_of(me.get(f"/api/v3/predictions/{pid}"))["status"] == "cancelled"


def test_cancel_a_completed_prediction_is_a_409(me: httpx.Client, completed: dict[str, Any]) -> None:
    pid = completed["id"]
    assert_error(me.post(f"/api/v3/predictions/{pid}/cancel"), 409, pid, "completed")
    assert data_of(me.get(f"/api/v3/predictions/{pid}/result")) == completed


def test_deleting_a_running_prediction_cancels_it(
    me: httpx.Client, reel_app: InProcessReel, made: list[str]
) -> None:
    pid = submit(me, made, body("contract: delete me [sandbox:delay=20]"))["id"]
    wait_for(me, pid, lambda d: d["status"] == "processing")
    assert data_of(me.delete(f"/api/v3/predictions/{pid}")) == {"id": pid, "status": "deleted"}
    wait_for_log(reel_app, f"prediction {pid} was cancelled or taken over; stopping")
    assert_error(me.get(f"/api/v3/predictions/{pid}/result"), 404)
    assert f"prediction {pid} completed" not in reel_app.log()


# --- webhook secret ---------------------------------------------------------------------------


def test_webhook_secret_is_stable_and_per_key(me: httpx.Client, reel_app: InProcessReel) -> None:
    first = data_of(me.get("/api/v3/webhook/secret"))
    assert set(first) == {"secret"}
    assert first["secret"].startswith("whsec_") and len(first["secret"]) > len("whsec_") + 16
    assert data_of(me.get("/api/v3/webhook/secret")) == first
    with reel_app.client(reel_app.create_key("someone else")) as them:
        theirs = data_of(them.get("/api/v3/webhook/secret"))["secret"]
    assert theirs.startswith("whsec_")
    assert theirs != first["secret"]


# --- uploads and served files -----------------------------------------------------------------


def ticket(client: httpx.Client, filename: str, size: int, content_type: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"filename": filename, "size": size}
    if content_type is not None:
        payload["content_type"] = content_type
    return data_of(client.post("/api/v3/media/uploads", json=payload))


def test_upload_ticket_shape(me: httpx.Client, reel_app: InProcessReel, anonymous: httpx.Client) -> None:
    data = ticket(me, "photo.png", 1234, "image/png")
    assert set(data) >= {"type", "filename", "size", "download_url", "upload"}
    assert data["type"] == "image"
    assert data["filename"] == "photo.png"
    assert data["size"] == 1234
    assert data["download_url"].startswith(reel_app.url + "/")
    upload = data["upload"]
    assert upload["method"] == "PUT"
    assert upload["url"].startswith(reel_app.url + "/")
    assert isinstance(upload["headers"], dict)
    assert upload["headers"].get("Content-Type") == "image/png"
    # Nothing to download until the bytes arrive.
    assert_error(anonymous.get(data["download_url"]), 404)


def test_two_step_upload_round_trip(me: httpx.Client, anonymous: httpx.Client, made: list[str]) -> None:
    raw = png_bytes(120, 90)
    data = ticket(me, "frame.png", len(raw), "image/png")
    put = anonymous.put(data["upload"]["url"], content=raw, headers=data["upload"]["headers"])
    assert 200 <= put.status_code < 300, put.text
    assert "authorization" not in put.request.headers
    served = anonymous.get(data["download_url"])
    assert served.status_code == 200
    assert served.content == raw
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    # Usable as a prediction's image.
    assert submit(me, made, body(image=data["download_url"]))["status"] == "created"


def test_chunked_upload_without_content_length(me: httpx.Client, anonymous: httpx.Client) -> None:
    raw = png_bytes(200, 100)
    data = ticket(me, "chunked.png", len(raw), "image/png")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]

    put = anonymous.put(data["upload"]["url"], content=chunks())
    assert "content-length" not in put.request.headers
    assert put.request.headers["transfer-encoding"] == "chunked"
    assert 200 <= put.status_code < 300, put.text
    assert anonymous.get(data["download_url"]).content == raw


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_more_bytes_than_declared_is_a_413(
    me: httpx.Client, anonymous: httpx.Client, chunked: bool
) -> None:
    data = ticket(me, "big.bin", 100)
    raw = b"x" * 5000
    content: bytes | Iterator[bytes] = iter([raw[:50], raw[50:]]) if chunked else raw
    assert_error(anonymous.put(data["upload"]["url"], content=content), 413, "body", "100")
    assert_error(anonymous.get(data["download_url"]), 404)


def test_upload_url_works_once(me: httpx.Client, anonymous: httpx.Client) -> None:
    data = ticket(me, "once.bin", 3)
    assert anonymous.put(data["upload"]["url"], content=b"abc").status_code == 200
    assert_error(anonymous.put(data["upload"]["url"], content=b"xyz"), 404)
    assert anonymous.get(data["download_url"]).content == b"abc"


def test_upload_with_a_wrong_token_is_a_404(me: httpx.Client, anonymous: httpx.Client) -> None:
    data = ticket(me, "token.bin", 3)
    url = httpx.URL(data["upload"]["url"])
    assert url.params["token"]
    assert_error(
        anonymous.put(url.copy_set_param("token", "x" + url.params["token"][1:]), content=b"abc"), 404
    )
    assert_error(anonymous.put(url.copy_remove_param("token"), content=b"abc"), 400, "token")
    # The right token still works afterwards.
    assert anonymous.put(url, content=b"abc").status_code == 200


def test_declared_size_over_the_limit_is_a_413_at_the_ticket(me: httpx.Client, small: httpx.Client) -> None:
    assert_error(small.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 20_001}), 413, "size")
    assert ticket(small, "a.png", 20_000)["size"] == 20_000
    huge = 20 * 1024 * 1024 + 1  # the default limit
    assert_error(me.post("/api/v3/media/uploads", json={"filename": "a.png", "size": huge}), 413, "size")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"size": 10}, "filename"),
        ({"filename": "", "size": 10}, "filename"),
        ({"filename": "a.png"}, "size"),
        ({"filename": "a.png", "size": 0}, "size"),
        ({"filename": "a.png", "size": -5}, "size"),
        ({"filename": "a.png", "size": "ten"}, "size"),
    ],
)
def test_bad_upload_tickets_are_a_400(me: httpx.Client, payload: dict[str, Any], field: str) -> None:
    assert_error(me.post("/api/v3/media/uploads", json=payload), 400, field)


def test_legacy_binary_upload(
    me: httpx.Client, reel_app: InProcessReel, anonymous: httpx.Client, made: list[str]
) -> None:
    raw = png_bytes(160, 90)
    response = me.post("/api/v3/media/upload/binary", files={"file": ("legacy.png", raw, "image/png")})
    data = data_of(response)
    assert data["type"] == "image"
    assert data["filename"] == "legacy.png"
    assert data["size"] == len(raw)
    assert data["download_url"].startswith(reel_app.url + "/")
    assert anonymous.get(data["download_url"]).content == raw
    created = submit(me, made, body(image=data["download_url"]))
    assert created["status"] == "created"


def test_legacy_upload_needs_a_file_part(me: httpx.Client) -> None:
    assert_error(
        me.post("/api/v3/media/upload/binary", files={"other": ("a.png", b"x", "image/png")}), 400, "file"
    )
    assert_error(me.post("/api/v3/media/upload/binary", data={"file": "just text"}), 400, "file")


def test_uploaded_html_is_served_as_an_opaque_download(
    me: httpx.Client, anonymous: httpx.Client, tmp_path: Path
) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    data = ticket(me, "page.html", len(page), "text/html")
    assert anonymous.put(data["upload"]["url"], content=page).status_code == 200
    legacy = data_of(me.post("/api/v3/media/upload/binary", files={"file": ("page.html", page, "text/html")}))
    svg = data_of(
        me.post(
            "/api/v3/media/upload/binary", files={"file": ("pic.svg", b"<svg onload=x()/>", "image/svg+xml")}
        )
    )
    for url in (data["download_url"], legacy["download_url"], svg["download_url"]):
        served = anonymous.get(url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/octet-stream"
        assert "text/html" not in served.headers["content-type"]
        assert served.headers["x-content-type-options"] == "nosniff"
    assert anonymous.get(data["download_url"]).content == page


def test_a_file_url_with_the_wrong_name_is_a_404(me: httpx.Client, anonymous: httpx.Client) -> None:
    data = ticket(me, "name.bin", 3)
    assert anonymous.put(data["upload"]["url"], content=b"abc").status_code == 200
    assert anonymous.get(data["download_url"]).status_code == 200
    assert_error(anonymous.get(data["download_url"].rsplit("/", 1)[0] + "/other.bin"), 404)


# --- system routes ----------------------------------------------------------------------------


def test_models_lists_gen4_turbo_on_the_sandbox(anonymous: httpx.Client) -> None:
    items = data_of(anonymous.get("/api/v3/models"))
    by_id = {item["id"]: item for item in items}
    gen4 = by_id[MODEL]
    assert gen4["backend"] == "sandbox"
    assert gen4["sandbox"] is True
    assert gen4["ready"] is True
    assert OTHER_MODEL in by_id


def test_openapi_lists_the_routes(anonymous: httpx.Client) -> None:
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, method in [
        ("/api/v3/runwayml/gen4-turbo", "post"),
        ("/api/v3/predictions/{prediction_id}/result", "get"),
        ("/api/v3/predictions/{prediction_id}", "get"),
        ("/api/v3/predictions/{prediction_id}", "delete"),
        ("/api/v3/predictions/{prediction_id}/cancel", "post"),
        ("/api/v3/predictions", "post"),
        ("/api/v3/predictions/delete", "post"),
        ("/api/v3/media/uploads", "post"),
        ("/api/v3/media/upload/binary", "post"),
        ("/api/v3/webhook/secret", "get"),
        ("/api/v3/models", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from the OpenAPI document"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_routes(anonymous: httpx.Client, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 200
    assert response.json()["status"] in {"ok", "ready"}
