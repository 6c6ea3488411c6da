"""Webhooks (api-contract.md, section 1): one signed POST when a prediction ends, with retries.

A dedicated server is allowed to reach private addresses (the receiver listens on loopback)
and retries quickly; a threaded HTTP receiver records every request it gets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from support.media import png_base64
from support.server import LiveServer, create_key

MODEL = "runwayml/gen4-turbo"
FAIL = "webhook [sandbox:fail]"
POLL_S = 0.1
WEBHOOK_TIMEOUT_S = 1.0
# Long enough for the sender's next poll and a retry after it: nothing more may arrive by then.
QUIET_S = 1.5


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


class Receiver:
    """Records requests; answers each path with its scripted replies in turn, then 200."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._scripts: dict[str, list[Reply]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = list(replies)

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(got := self.received(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(got)} of {count} requests after {timeout_s} s")
            time.sleep(POLL_S)
        return got

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self._requests.append(
                Received(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    at=time.monotonic(),
                )
            )
            script = self._scripts.get(handler.path)
            reply = script.pop(0) if script else Reply()
        time.sleep(reply.delay_s)
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers:
                handler.send_header(name, value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass  # the sender gave up waiting (a timeout test): nobody is listening any more


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("webhooks"),
        env={
            "REEL_ALLOW_PRIVATE_URLS": "1",
            "REEL_WEBHOOK_BACKOFF_S": "0.2",
            "REEL_WEBHOOK_TIMEOUT_S": str(WEBHOOK_TIMEOUT_S),
        },
    ).start()
    yield live
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def client(hook_server: LiveServer) -> Iterator[httpx.Client]:
    key = create_key(hook_server.data_dir, "webhooks")
    with httpx.Client(
        base_url=hook_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as running:
        yield running


@pytest.fixture(scope="module")
def secret(client: httpx.Client) -> str:
    value = data_of(client.get("/api/v3/webhook/secret"))["secret"]
    assert value.startswith("whsec_")
    return str(value)


def data_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 200
    return response.json()["data"]


def submit(client: httpx.Client, prompt: str, webhook: str) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Submit with ``?webhook=``; returns the input sent, the prediction and when the reply came."""
    sent = {"prompt": prompt, "image": png_base64(64, 64), "aspect_ratio": "1:1"}
    response = client.post(f"/api/v3/{MODEL}", params={"webhook": webhook}, json=sent)
    returned_at = time.monotonic()
    data = data_of(response)
    assert data["status"] == "created"
    return sent, data, returned_at


def wait_until_ended(client: httpx.Client, prediction_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        data = data_of(client.get(f"/api/v3/predictions/{prediction_id}/result"))
        if data["status"] in {"completed", "failed", "cancelled"}:
            return dict(data)
        assert time.monotonic() < deadline, f"prediction {prediction_id} still {data['status']}"
        time.sleep(POLL_S)


def expected_signature(secret: str, request: Received) -> str:
    key = secret.removeprefix("whsec_").encode()
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.{request.body.decode()}"
    return "v3," + hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()


def check_signed(secret: str, request: Received) -> dict[str, Any]:
    """Headers of a webhook POST; returns its parsed body."""
    assert request.method == "POST"
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers["webhook-id"]
    timestamp = int(request.headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 60
    signature = request.headers["webhook-signature"]
    assert signature.startswith("v3,")
    assert len(signature) == len("v3,") + 64
    assert hmac.compare_digest(signature, expected_signature(secret, request))
    body = json.loads(request.body)
    assert isinstance(body, dict)
    return body


def unique(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex}"


def test_a_completed_prediction_sends_one_signed_post(
    client: httpx.Client, receiver: Receiver, secret: str, hook_server: LiveServer
) -> None:
    path = unique("completed")
    sent, data, returned_at = submit(client, "webhook: done", receiver.url(path))
    final = wait_until_ended(client, data["id"])
    assert final["status"] == "completed", final

    (request,) = receiver.wait_for(path, 1)
    # The handler answered before anything was sent: the worker delivers, not the request.
    assert request.at > returned_at
    body = check_signed(secret, request)
    # The bare prediction object, no envelope, plus the input.
    assert "code" not in body and "data" not in body and "message" not in body
    assert {k: v for k, v in body.items() if k != "input"} == final
    assert body["id"] == data["id"]
    assert body["status"] == "completed"
    (output,) = body["outputs"]
    assert output.startswith(hook_server.url + "/") and output.endswith(".mp4")
    assert len(body["has_nsfw_contents"]) == 1
    assert body["error"] == ""
    assert body["input"]["prompt"] == sent["prompt"]
    assert body["input"]["aspect_ratio"] == "1:1"
    assert isinstance(body["input"]["image"], str)

    time.sleep(QUIET_S)
    assert len(receiver.received(path)) == 1


def test_a_failed_prediction_sends_one_post_with_its_error(
    client: httpx.Client, receiver: Receiver, secret: str
) -> None:
    path = unique("failed")
    _, data, returned_at = submit(client, FAIL, receiver.url(path))
    final = wait_until_ended(client, data["id"])
    assert final["status"] == "failed"

    (request,) = receiver.wait_for(path, 1)
    assert request.at > returned_at
    body = check_signed(secret, request)
    assert body["status"] == "failed"
    assert "failure requested" in body["error"]
    assert body["outputs"] == []
    assert {k: v for k, v in body.items() if k != "input"} == final
    assert body["input"]["prompt"] == FAIL

    time.sleep(QUIET_S)
    assert len(receiver.received(path)) == 1


def test_server_errors_are_retried_with_the_same_webhook_id(
    client: httpx.Client, receiver: Receiver, secret: str
) -> None:
    path = unique("flaky")
    receiver.script(path, Reply(500), Reply(500))  # then 200
    _, data, _ = submit(client, FAIL, receiver.url(path))

    attempts = receiver.wait_for(path, 3)
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1
    for request in attempts:
        assert check_signed(secret, request)["id"] == data["id"]
    assert attempts[0].at < attempts[1].at < attempts[2].at

    time.sleep(QUIET_S)
    assert len(receiver.received(path)) == 3


def test_a_timeout_is_retried(client: httpx.Client, receiver: Receiver, secret: str) -> None:
    path = unique("slow")
    receiver.script(path, Reply(200, delay_s=WEBHOOK_TIMEOUT_S + 1.5))  # then an immediate 200
    submit(client, FAIL, receiver.url(path))

    first, second = receiver.wait_for(path, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    check_signed(secret, second)

    time.sleep(QUIET_S)
    assert len(receiver.received(path)) == 2


def test_redirects_are_not_followed_and_count_as_failures(
    client: httpx.Client, receiver: Receiver, secret: str
) -> None:
    path, target = unique("redirect"), unique("target")
    receiver.script(path, *[Reply(302, (("Location", receiver.url(target)),))] * 10)
    submit(client, FAIL, receiver.url(path))

    attempts = receiver.wait_for(path, 2)
    assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"]
    check_signed(secret, attempts[1])
    assert receiver.received(target) == []
