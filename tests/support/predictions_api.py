"""Submitting and polling predictions over raw HTTP, for tests that drive server processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from support.media import png_base64

MODEL = "runwayml/gen4-turbo"


def submit(base_url: str, key: str, prompt: str) -> str:
    """Submit a 1:1 sandbox prediction; returns its id."""
    reply = httpx.post(
        f"{base_url}/api/v3/{MODEL}",
        json={"prompt": prompt, "image": png_base64(), "aspect_ratio": "1:1"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    prediction_id: str = reply.json()["data"]["id"]
    return prediction_id


def result(base_url: str, key: str, prediction_id: str) -> dict[str, Any]:
    reply = httpx.get(
        f"{base_url}/api/v3/predictions/{prediction_id}/result",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    return data


def wait_for(
    base_url: str,
    key: str,
    prediction_id: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout_s: float = 90,
) -> dict[str, Any]:
    """Poll until ``condition`` holds for the prediction's state; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    data = result(base_url, key, prediction_id)
    while not condition(data):
        assert time.monotonic() < deadline, f"condition not met in {timeout_s} s; last state {data}"
        time.sleep(0.1)
        data = result(base_url, key, prediction_id)
    return data


def is_generating(data: dict[str, Any]) -> bool:
    """The worker has started and reported progress."""
    return bool(data["status"] == "processing" and data["progress"] > 0)


def has_ended(data: dict[str, Any]) -> bool:
    return data["status"] in {"completed", "failed", "cancelled"}
