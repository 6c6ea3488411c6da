"""LoRA adapters per request and text-to-video, through the real API on tiny CPU models.

A ``reel serve`` of its own (REEL_DEVICE=cpu) serves the tiny Wan 2.2 TI2V-5B model under a
plain id, a ``-lora`` id and text-to-video ids, plus the tiny Wan 2.2 A14B with LoRAs; its
LoRA directory holds random adapters written by ``reel models make-tiny-lora``'s code, a
garbage file, a LoRA for another architecture and a safetensors file that is no LoRA. A
second, fresh server answers the "as a fresh worker would" question. Videos are decoded
and compared frame by frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import wavespeed
from runwayml import RunwayML
from runwayml.lib import polling

from reel.media.video import probe_video, read_frames
from support.media import png_base64
from support.server import LiveServer, create_key
from support.tiny_models import TEST_ENV, TINY_FPS

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytestmark = pytest.mark.e2e

PLAIN, WITH_LORA, T2V, T2V_LORA, A14B_LORA = (
    "tiny/ti2v",
    "tiny/ti2v-lora",
    "tiny/t2v",
    "tiny/t2v-lora",
    "tiny/a14b-lora",
)
MAX_LORA_BYTES = 200_000
IMAGE = png_base64(64, 64)


def _registry(root: Path, tiny_dirs: dict[str, Path]) -> Path:
    from reel.backends.diffusers.tiny import registry_snippet

    def table(model_id: str, family: str, extra: str = "") -> str:
        return registry_snippet(model_id, tiny_dirs[family], family) + extra + "\n"

    path = root / "models.toml"
    path.write_text(
        table(PLAIN, "wan2.2-ti2v")
        + table(WITH_LORA, "wan2.2-ti2v", "loras = true\nmax_loras = 2\n")
        + table(T2V, "wan2.2-ti2v", 'task = "t2v"\n')
        + table(T2V_LORA, "wan2.2-ti2v", 'task = "t2v"\nloras = true\n')
        + table(A14B_LORA, "wan2.2-i2v-a14b", "loras = true\n")
    )
    return path


def _lora_dir(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from reel.backends.diffusers.tiny_lora import make_tiny_lora

    folder = root / "loras"
    make_tiny_lora(folder, "wan2.2-ti2v", seed=1, name="one")
    make_tiny_lora(folder, "wan2.2-ti2v", seed=2, name="two")
    make_tiny_lora(folder, "wan2.2-i2v-a14b", seed=3, name="experts")
    (folder / "garbage.safetensors").write_bytes(b"\x00not a safetensors file" * 40)
    # Real LoRA names, the 14B's widths (5120): another architecture than the tiny 5B's (16).
    save_file(
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 5120),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(5120, 4),
        },
        str(folder / "wrong-architecture.safetensors"),
    )
    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(16, 16)}, str(folder / "not-a-lora.safetensors"))
    # Over REEL_MAX_LORA_BYTES when fetched from a URL.
    (folder / "huge.safetensors").write_bytes(b"\x00" * (MAX_LORA_BYTES + 1))
    return folder


class _Files(ThreadingHTTPServer):
    """Serves the LoRA folder over http on loopback, counting requests per path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                file = outer.folder / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory: pytest.TempPathFactory, tiny_dirs: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("lora-models")
    _registry(root, tiny_dirs)
    _lora_dir(root)
    return root


@pytest.fixture(scope="module")
def files(lora_root: Path) -> Iterator[_Files]:
    server = _Files(lora_root / "loras")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _start(root: Path, name: str, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    env = {
        **TEST_ENV,
        "REEL_MODELS_FILE": str(root / "models.toml"),
        "REEL_DEVICE": "cpu",
        "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
        "REEL_LORA_DIR": str(root / "loras"),
        "REEL_MAX_LORA_BYTES": str(MAX_LORA_BYTES),
        "REEL_LORA_CACHE": "2",
        # The LoRA URLs are on a loopback server; the refusal of blocked addresses is tested
        # in-process (tests/predictions/test_lora_inputs.py) and on the worker's store below.
        "REEL_ALLOW_PRIVATE_URLS": "1",
    }
    return LiveServer(tmp_path_factory.mktemp(name), env=env).start()


@pytest.fixture(scope="module")
def lora_server(lora_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = _start(lora_root, "lora-server", tmp_path_factory)
    yield live
    live.stop()
    errors = live.server_errors()
    assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def key(lora_server: LiveServer) -> str:
    return create_key(lora_server.data_dir, "lora tests")


@pytest.fixture(scope="module")
def client(lora_server: LiveServer, key: str) -> wavespeed.Client:
    return wavespeed.Client(api_key=key, base_url=lora_server.url, max_connection_retries=0)


@pytest.fixture(scope="module")
def http(lora_server: LiveServer, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lora_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


def _body(loras: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "a kite",
        "image": IMAGE,
        "aspect_ratio": "16:9",
        "duration": 1,
        "seed": 7,
    }
    if loras is not None:
        body["loras"] = loras
    return {**body, **extra}


def _wait(http: httpx.Client, prediction_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data: dict[str, Any] = http.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"prediction {prediction_id} did not end in {timeout_s} s")


def _submit(http: httpx.Client, model: str, body: dict[str, Any]) -> str:
    answer = http.post(f"/api/v3/{model}", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["id"])


def _frames(url: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"{time.monotonic_ns()}.mp4"
    path.write_bytes(httpx.get(url, timeout=30).raise_for_status().content)
    return np.stack(read_frames(path)).astype(np.int16)


def _video(http: httpx.Client, model: str, body: dict[str, Any], tmp_path: Path) -> np.ndarray:
    data = _wait(http, _submit(http, model, body))
    assert data["status"] == "completed", data["error"]
    return _frames(data["outputs"][0], tmp_path)


def _failure(http: httpx.Client, model: str, body: dict[str, Any]) -> str:
    data = _wait(http, _submit(http, model, body))
    assert data["status"] == "failed"
    return str(data["error"])


@pytest.fixture(scope="module")
def reference(http: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The videos without LoRA, with LoRA one and with LoRA two, made one after another."""
    tmp = tmp_path_factory.mktemp("reference")
    return {
        "none": _video(http, WITH_LORA, _body(), tmp),
        "one": _video(http, WITH_LORA, _body([{"path": "one", "scale": 1.0}]), tmp),
        "two": _video(http, WITH_LORA, _body([{"path": "two.safetensors", "scale": 1.0}]), tmp),
    }


def test_scale_zero_is_no_lora_and_a_nonzero_scale_changes_the_video(
    http: httpx.Client, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    zero = _video(http, WITH_LORA, _body([{"path": "one", "scale": 0}]), tmp_path)
    assert np.array_equal(zero, reference["none"])
    assert np.abs(reference["one"] - reference["none"]).mean() > 1
    half = _video(http, WITH_LORA, _body([{"path": "one", "scale": 0.5}]), tmp_path)
    assert not np.array_equal(half, reference["one"])
    assert not np.array_equal(half, reference["none"])


def test_two_loras_give_two_videos_and_both_together_a_third(
    http: httpx.Client, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    assert np.abs(reference["one"] - reference["two"]).mean() > 1
    both = _video(
        http, WITH_LORA, _body([{"path": "one", "scale": 1}, {"path": "two", "scale": 1}]), tmp_path
    )
    for alone in ("none", "one", "two"):
        assert not np.array_equal(both, reference[alone])


def test_concurrent_predictions_with_different_loras_do_not_bleed(
    http: httpx.Client, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # Submitted at once, run back to back by the one worker in an interleaved order; with
    # REEL_LORA_CACHE=2, adapters are also evicted and loaded again on the way.
    order = ["one", "none", "two", "one", "none", "two"]
    lists = {"none": None, "one": [{"path": "one", "scale": 1.0}], "two": [{"path": "two", "scale": 1.0}]}
    ids = [_submit(http, WITH_LORA, _body(lists[name])) for name in order]
    for name, prediction_id in zip(order, ids, strict=True):
        data = _wait(http, prediction_id)
        assert data["status"] == "completed", data["error"]
        assert np.array_equal(_frames(data["outputs"][0], tmp_path), reference[name]), name


def test_after_a_lora_the_next_prediction_equals_a_fresh_workers(
    http: httpx.Client,
    reference: dict[str, np.ndarray],
    lora_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    _video(http, WITH_LORA, _body([{"path": "two", "scale": 2}]), tmp_path)  # a LoRA just ran
    after = _video(http, PLAIN, _body(), tmp_path)  # the same loaded pipeline, no LoRA
    fresh = _start(lora_root, "fresh-server", tmp_path_factory)
    try:
        fresh_key = create_key(fresh.data_dir, "fresh")
        with httpx.Client(
            base_url=fresh.url, headers={"Authorization": f"Bearer {fresh_key}"}, timeout=60
        ) as c:
            expected = _video(c, PLAIN, _body(), tmp_path)
    finally:
        fresh.stop()
    assert np.array_equal(after, expected)
    assert np.array_equal(after, reference["none"])


def test_a_lora_from_a_url_is_stored_by_content_and_fetched_once(
    http: httpx.Client,
    files: _Files,
    lora_server: LiveServer,
    lora_root: Path,
    tmp_path: Path,
    reference: dict[str, np.ndarray],
) -> None:
    import hashlib

    url = files.url("one.safetensors")
    video = _video(http, WITH_LORA, _body([{"path": url, "scale": 1.0}]), tmp_path)
    assert np.array_equal(video, reference["one"])  # the same bytes as the file named "one"
    _video(http, WITH_LORA, _body([{"path": url, "scale": 1.0}], seed=8), tmp_path)
    assert files.hits["/one.safetensors"] == 1
    digest = hashlib.sha256((lora_root / "loras" / "one.safetensors").read_bytes()).hexdigest()
    assert (lora_server.data_dir / "loras" / "sha256" / f"{digest}.safetensors").is_file()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("garbage", "loras[0].path: not a LoRA file: not a readable .safetensors file"),
        ("not-a-lora", "loras[0].path: not a LoRA file: its tensors are not LoRA weights"),
        (
            "wrong-architecture",
            "loras[0].path: a LoRA for another architecture: "
            "blocks.0.attn1.to_q takes 16 inputs here, the LoRA expects 5120",
        ),
        ("missing", "loras[0].path: no LoRA file 'missing' in the server's LoRA directory"),
        ("someone/unknown-lora", "ask the operator to run `reel models pull-lora someone/unknown-lora`"),
    ],
    ids=["garbage", "not-a-lora", "wrong-architecture", "missing-file", "unknown-repo"],
)
def test_a_bad_lora_fails_the_prediction_with_the_reason(
    http: httpx.Client, lora_server: LiveServer, path: str, expected: str
) -> None:
    prediction_id = _submit(http, WITH_LORA, _body([{"path": path, "scale": 1.0}]))
    data = _wait(http, prediction_id)
    assert data["status"] == "failed"
    assert expected in data["error"]
    # Failed before any denoising: the generation's first log line never came.
    assert f"prediction {prediction_id}: {WITH_LORA} at" not in lora_server.log()
    assert f"prediction {prediction_id} failed" in lora_server.log()


def test_an_oversized_url_fails_naming_the_limit(http: httpx.Client, files: _Files) -> None:
    error = _failure(http, WITH_LORA, _body([{"path": files.url("huge.safetensors"), "scale": 1.0}]))
    assert f"larger than {MAX_LORA_BYTES} bytes (REEL_MAX_LORA_BYTES)" in error


def test_the_worker_refuses_a_blocked_address_even_when_the_submit_passed(
    tmp_path: Path, files: _Files
) -> None:
    from reel.backends.base import GenerationError
    from reel.backends.diffusers.lora_files import LoraStore

    store = LoraStore(cache_dir=tmp_path, lora_dir=None, max_bytes=MAX_LORA_BYTES, allow_private_urls=False)
    before = dict(files.hits)
    with pytest.raises(GenerationError, match=r"loras\[0\]\.path: URL refused: "):
        store.resolve(files.url("two.safetensors"), "loras[0].path")
    assert files.hits == before  # the address was refused before any connection


def test_a14b_experts_take_their_own_loras(http: httpx.Client, tmp_path: Path) -> None:
    base = _video(http, A14B_LORA, _body(), tmp_path)
    high = _video(http, A14B_LORA, _body(high_noise_loras=[{"path": "experts", "scale": 1.0}]), tmp_path)
    low = _video(http, A14B_LORA, _body(low_noise_loras=[{"path": "experts", "scale": 1.0}]), tmp_path)
    both = _video(http, A14B_LORA, _body([{"path": "experts", "scale": 1.0}]), tmp_path)
    assert not np.array_equal(high, base) and not np.array_equal(low, base)
    assert not np.array_equal(high, low) and not np.array_equal(both, high)
    assert np.array_equal(_video(http, A14B_LORA, _body(), tmp_path), base)


# --- text-to-video ------------------------------------------------------------------------------


def test_text_to_video_through_the_wavespeed_sdk(client: wavespeed.Client, tmp_path: Path) -> None:
    result = client.run(
        T2V,
        {"prompt": "a red kite", "size": "720*1280", "duration": 1, "seed": 3},
        poll_interval=0.05,
        timeout=120,
    )
    path = tmp_path / "t2v.mp4"
    path.write_bytes(httpx.get(result["outputs"][0], timeout=30).content)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (720, 1280, TINY_FPS)


def test_text_to_video_with_a_lora(http: httpx.Client, tmp_path: Path) -> None:
    body = {"prompt": "a red kite", "duration": 1, "seed": 3}
    plain = _video(http, T2V_LORA, body, tmp_path)
    styled = _video(http, T2V_LORA, {**body, "loras": [{"path": "one", "scale": 1.0}]}, tmp_path)
    assert plain.shape == (TINY_FPS, 720, 1280, 3)  # 16:9 when no ratio is given
    assert not np.array_equal(plain, styled)
    assert np.array_equal(_video(http, T2V, body, tmp_path), plain)


def test_text_to_video_through_the_runway_sdk(
    lora_server: LiveServer, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "POLL_TIME", 0.1)
    monkeypatch.setattr(polling, "POLL_JITTER", 0.0)
    with RunwayML(api_key=key, base_url=lora_server.url, max_retries=0) as runway:
        task = runway.text_to_video.create(
            model=T2V,  # type: ignore[arg-type]
            prompt_text="a red kite",
            ratio="960:960",  # type: ignore[arg-type]
            duration=2,
            seed=9,
        ).wait_for_task_output(timeout=120)
    assert task.status == "SUCCEEDED"
    path = tmp_path / "runway.mp4"
    path.write_bytes(httpx.get(task.output[0], timeout=30).content)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (960, 960, 2 * TINY_FPS)
