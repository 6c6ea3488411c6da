"""Keys are tenants: one key's predictions and uploads are invisible and unusable to another.

A foreign prediction must look exactly like one that does not exist (404), so that ids cannot
be probed; a revoked key stops working at once. Nothing here needs a process boundary: it runs
against the app in-process (``support.inprocess``), and keys are revoked with the CLI's own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from reel.cli import app as reel_cli
from support.inprocess import InProcessReel
from support.media import png_base64, png_bytes

MODEL = "runwayml/gen4-turbo"
# Long enough to still be running while the other key pokes at it; deleted at the end.
SLOW = "isolation [sandbox:delay=60]"


def revoke(reel_app: InProcessReel, key_id: str) -> Result:
    """``reel keys revoke``, as an operator runs it beside the server: the CLI's code, which builds
    services of its own on the same database (typer's runner calls it in this process)."""
    return CliRunner().invoke(reel_cli, ["keys", "revoke", key_id, "--data-dir", str(reel_app.data_dir)])


def data_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["code"] == 200
    return payload["data"]


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == status
    assert payload["data"] is None
    for word in words:
        assert word in payload["message"]


def history_ids(client: httpx.Client) -> tuple[int, list[str]]:
    data = data_of(client.post("/api/v3/predictions", json={"page_size": 100}))
    return data["total"], [item["id"] for item in data["items"]]


@pytest.fixture(scope="module")
def me(reel_app: InProcessReel) -> Iterator[httpx.Client]:
    with reel_app.client(reel_app.create_key("tests")) as client:
        yield client


@pytest.fixture(scope="module")
def them(reel_app: InProcessReel) -> Iterator[httpx.Client]:
    with reel_app.client(reel_app.create_key("someone else")) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(reel_app: InProcessReel) -> Iterator[httpx.Client]:
    with reel_app.client() as client:
        yield client


@pytest.fixture(scope="module")
def mine(me: httpx.Client) -> Iterator[dict[str, Any]]:
    data = data_of(
        me.post(f"/api/v3/{MODEL}", json={"prompt": SLOW, "image": png_base64(64, 64), "aspect_ratio": "1:1"})
    )
    yield data
    me.delete(f"/api/v3/predictions/{data['id']}")


def test_another_keys_prediction_is_a_404_everywhere(
    me: httpx.Client, them: httpx.Client, mine: dict[str, Any]
) -> None:
    pid = mine["id"]
    assert_error(them.get(f"/api/v3/predictions/{pid}/result"), 404, pid)
    assert_error(them.get(f"/api/v3/predictions/{pid}"), 404, pid)
    assert_error(them.post(f"/api/v3/predictions/{pid}/cancel"), 404, pid)
    assert_error(them.delete(f"/api/v3/predictions/{pid}"), 404, pid)
    assert data_of(them.post("/api/v3/predictions/delete", json={"ids": [pid]})) == {"deleted_count": 0}
    # Indistinguishable from an id that never existed.
    unknown = them.get(f"/api/v3/predictions/{'f' * 32}/result").json()
    assert (
        unknown["message"].replace("f" * 32, pid) == them.get(f"/api/v3/predictions/{pid}").json()["message"]
    )
    # None of that touched it: the owner still sees it, neither cancelled nor deleted.
    data = data_of(me.get(f"/api/v3/predictions/{pid}/result"))
    assert data["status"] in {"created", "processing"}


def test_another_keys_history_does_not_include_it(
    me: httpx.Client, them: httpx.Client, mine: dict[str, Any]
) -> None:
    their_total, theirs = history_ids(them)
    assert mine["id"] not in theirs
    assert mine["id"] not in [
        item["id"] for item in data_of(them.post("/api/v3/predictions", json={"model": MODEL}))["items"]
    ]
    _, ours = history_ids(me)
    assert mine["id"] in ours
    # Their total counts only their own predictions: submitting as me does not change it.
    extra = data_of(
        me.post(f"/api/v3/{MODEL}", json={"prompt": SLOW, "image": png_base64(64, 64), "aspect_ratio": "1:1"})
    )
    try:
        assert history_ids(them)[0] == their_total
    finally:
        me.delete(f"/api/v3/predictions/{extra['id']}")


@pytest.mark.parametrize("suffix", ["", "?x=1"])
def test_another_key_cannot_use_my_upload_as_image(
    me: httpx.Client, them: httpx.Client, anonymous: httpx.Client, suffix: str
) -> None:
    raw = png_bytes(96, 64)
    ticket = data_of(me.post("/api/v3/media/uploads", json={"filename": "mine.png", "size": len(raw)}))
    assert anonymous.put(ticket["upload"]["url"], content=raw).status_code == 200
    url = ticket["download_url"] + suffix
    total_before, _ = history_ids(them)
    response = them.post(f"/api/v3/{MODEL}", json={"prompt": "steal", "image": url, "aspect_ratio": "1:1"})
    assert_error(response, 400, "image")
    assert history_ids(them)[0] == total_before
    # The same URL works for its owner (then the prediction is dropped).
    created = data_of(me.post(f"/api/v3/{MODEL}", json={"prompt": SLOW, "image": url, "aspect_ratio": "1:1"}))
    me.delete(f"/api/v3/predictions/{created['id']}")


def test_another_key_cannot_use_my_legacy_upload_as_image(me: httpx.Client, them: httpx.Client) -> None:
    raw = png_bytes(64, 96)
    uploaded = data_of(me.post("/api/v3/media/upload/binary", files={"file": ("mine.png", raw, "image/png")}))
    response = them.post(
        f"/api/v3/{MODEL}", json={"prompt": "steal", "image": uploaded["download_url"], "aspect_ratio": "1:1"}
    )
    assert_error(response, 400, "image")


def test_a_revoked_key_is_a_401(reel_app: InProcessReel) -> None:
    key = reel_app.create_key("to revoke")
    key_id = key.split("_")[1]
    with reel_app.client(key) as client:
        assert data_of(client.get("/api/v3/webhook/secret"))["secret"].startswith("whsec_")
        made = data_of(
            client.post(
                f"/api/v3/{MODEL}", json={"prompt": SLOW, "image": png_base64(64, 64), "aspect_ratio": "1:1"}
            )
        )
        client.post(f"/api/v3/predictions/{made['id']}/cancel")

        revoked = revoke(reel_app, key_id)
        assert revoked.exit_code == 0, revoked.output

        for response in (
            client.get("/api/v3/webhook/secret"),
            client.get(f"/api/v3/predictions/{made['id']}/result"),
            client.post("/api/v3/predictions", json={}),
            client.post(f"/api/v3/{MODEL}", json={"prompt": "x", "image": png_base64(64, 64)}),
            client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 10}),
        ):
            assert_error(response, 401, "API key")
    # Revoking twice says so, and fails.
    assert revoke(reel_app, key_id).exit_code != 0


def test_revoking_one_key_leaves_the_others_working(
    reel_app: InProcessReel, me: httpx.Client, anonymous: httpx.Client
) -> None:
    key = reel_app.create_key("short-lived")
    revoked = revoke(reel_app, key.split("_")[1])
    assert revoked.exit_code == 0, revoked.output
    assert_error(anonymous.get("/api/v3/webhook/secret", headers={"Authorization": f"Bearer {key}"}), 401)
    assert data_of(me.get("/api/v3/webhook/secret"))["secret"].startswith("whsec_")
