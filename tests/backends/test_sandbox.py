"""The sandbox backend: real frames into a real encoder, determinism, directives, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reel.backends.base import GenerationCancelled, GenerationError, GenerationRequest
from reel.backends.sandbox import (
    DEFAULT_FAIL_MESSAGE,
    READINESS_MESSAGE,
    SandboxBackend,
    SandboxDirectives,
    parse_directives,
)
from reel.media.video import H264Writer, probe_video, read_frames

OUTPUT_SIZES = [(1280, 720), (720, 1280), (1104, 832), (832, 1104), (960, 960)]


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())


def _image(seed: int = 0, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A smooth, textured test picture (random gradients plus a few blocks)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [
        127
        + 100
        * np.sin(x / rng.uniform(20, 80) + rng.uniform(0, 6))
        * np.cos(y / rng.uniform(20, 80) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return Image.fromarray(np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8))


def _request(
    *,
    image: Image.Image | None = None,
    prompt: str = "a slow pan over the hills",
    width: int = 320,
    height: int = 240,
    num_frames: int = 12,
    seed: int | None = 42,
) -> GenerationRequest:
    return GenerationRequest(
        prediction_id="p1",
        model="sandbox/i2v",
        prompt=prompt,
        image=image if image is not None else _image(),
        width=width,
        height=height,
        fps=24,
        num_frames=num_frames,
        seed=seed,
    )


def _run(request: GenerationRequest, backend: SandboxBackend | None = None) -> ListSink:
    sink = ListSink()
    (backend or SandboxBackend()).generate(request, sink, lambda _f: None, lambda: False)
    return sink


def test_kind_and_readiness() -> None:
    backend = SandboxBackend()
    assert backend.kind == "sandbox"
    assert backend.readiness() == (True, READINESS_MESSAGE)
    assert "not AI generation" in READINESS_MESSAGE


@pytest.mark.parametrize(("width", "height"), OUTPUT_SIZES)
def test_each_output_size_encodes(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "out.mp4"
    request = _request(width=width, height=height, num_frames=12)
    with H264Writer(path, width=width, height=height, fps=24) as writer:
        SandboxBackend().generate(request, writer, lambda _f: None, lambda: False)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count, info.codec) == (width, height, 12, "h264")
    assert info.duration_s == pytest.approx(0.5)


def test_full_five_second_clip(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    request = _request(image=_image(size=(1600, 1200)), width=1280, height=720, num_frames=120)
    with H264Writer(path, width=1280, height=720, fps=24) as writer:
        SandboxBackend().generate(request, writer, lambda _f: None, lambda: False)
    info = probe_video(path)
    assert info.frame_count == 120
    assert info.fps == 24.0
    assert info.duration_s == pytest.approx(5.0)


def test_same_seed_gives_identical_frames(tmp_path: Path) -> None:
    first, second = _run(_request()), _run(_request())
    assert len(first.frames) == 12
    for a, b in zip(first.frames, second.frames, strict=True):
        assert a.shape == (240, 320, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)

    # Encoded and decoded back: the same video (see reel.media.video.x264_options).
    decoded = []
    request = _request(width=1280, height=720, num_frames=12)
    for name in ("a.mp4", "b.mp4"):
        with H264Writer(tmp_path / name, width=1280, height=720, fps=24) as writer:
            SandboxBackend().generate(request, writer, lambda _f: None, lambda: False)
        decoded.append(read_frames(tmp_path / name))
    assert len(decoded[0]) == 12
    for a, b in zip(*decoded, strict=True):
        assert np.array_equal(a, b)


def test_frames_move_and_seed_changes_the_motion() -> None:
    frames = _run(_request(seed=1)).frames
    assert not np.array_equal(frames[0], frames[-1])
    other = _run(_request(seed=2)).frames
    assert not np.array_equal(frames[-1], other[-1])


def test_prompt_drives_the_motion_without_a_seed() -> None:
    a = _run(_request(seed=None, prompt="one")).frames
    b = _run(_request(seed=None, prompt="one")).frames
    c = _run(_request(seed=None, prompt="two")).frames
    assert np.array_equal(a[-1], b[-1])
    assert not np.array_equal(a[-1], c[-1])


def test_output_is_derived_from_the_input() -> None:
    a = _run(_request(image=_image(seed=1))).frames
    b = _run(_request(image=_image(seed=2))).frames
    assert not np.array_equal(a[0], b[0])

    red = Image.new("RGB", (640, 480), (200, 30, 30))
    for frame in _run(_request(image=red)).frames:
        mean = frame.reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - (200, 30, 30)).max() < 10


def test_first_frame_matches_the_input_cover_fit() -> None:
    """The first frame is the centre crop of the input, resized: not stretched."""
    # Left third blue, middle green, right third red; a 9:2 input into a 4:3 output keeps
    # only (most of) the green middle: 267 of its 300 pixel columns.
    source = np.zeros((200, 900, 3), dtype=np.uint8)
    source[:, :300] = (0, 0, 255)
    source[:, 300:600] = (0, 255, 0)
    source[:, 600:] = (255, 0, 0)
    first = _run(_request(image=Image.fromarray(source))).frames[0]
    # Ignore the label corner.
    top = first[:120].reshape(-1, 3).mean(axis=0)
    assert top[1] > 240 and top[0] < 15 and top[2] < 15


def test_progress_is_monotonic_and_ends_at_one() -> None:
    seen: list[float] = []
    SandboxBackend(step_count=5).generate(_request(num_frames=12), ListSink(), seen.append, lambda: False)
    assert len(seen) == 5
    assert seen == sorted(seen)
    assert seen[0] > 0 and seen[-1] == 1.0


def test_fewer_frames_than_steps() -> None:
    seen: list[float] = []
    sink = ListSink()
    SandboxBackend(step_count=12).generate(_request(num_frames=3), sink, seen.append, lambda: False)
    assert len(sink.frames) == 3
    assert seen[-1] == 1.0


def test_cancel_mid_way() -> None:
    seen: list[float] = []
    sink = ListSink()
    with pytest.raises(GenerationCancelled):
        SandboxBackend(step_count=6).generate(
            _request(num_frames=12), sink, seen.append, lambda: len(seen) >= 2
        )
    assert len(seen) == 2
    assert len(sink.frames) == 4


def test_cancel_during_delay_is_prompt() -> None:
    cancelled = threading.Event()
    timer = threading.Timer(0.3, cancelled.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(GenerationCancelled):
            SandboxBackend().generate(
                _request(prompt="[sandbox:delay=60]"), ListSink(), lambda _f: None, cancelled.is_set
            )
    finally:
        timer.cancel()
    # Generous bound: only shows the 60 s delay was cut short.
    assert time.monotonic() - started < 20


def test_delay_directive_slows_generation() -> None:
    started = time.monotonic()
    _run(_request(prompt="pan left [Sandbox:Delay=0.5]"))
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a cat [sandbox:fail]", DEFAULT_FAIL_MESSAGE),
        ("[SANDBOX:FAIL=model exploded: out of memory] a cat", "model exploded: out of memory"),
    ],
)
def test_fail_directive_fails_after_some_progress(prompt: str, message: str) -> None:
    seen: list[float] = []
    with pytest.raises(GenerationError) as info:
        SandboxBackend().generate(_request(prompt=prompt), ListSink(), seen.append, lambda: False)
    assert str(info.value) == message
    assert seen and 0 < seen[-1] < 1


def test_default_fail_message() -> None:
    assert DEFAULT_FAIL_MESSAGE == "sandbox: failure requested by the prompt tag [sandbox:fail]"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a plain prompt", SandboxDirectives()),
        ("[sandbox:delay=5]", SandboxDirectives(delay_s=5.0)),
        ("x [SandBox:DELAY=0.25] y", SandboxDirectives(delay_s=0.25)),
        ("[ sandbox : delay = 2 ]", SandboxDirectives(delay_s=2.0)),
        ("[sandbox:delay=100000]", SandboxDirectives(delay_s=600.0)),
        ("[sandbox:fail]", SandboxDirectives(fail=DEFAULT_FAIL_MESSAGE)),
        ("[sandbox:fail=]", SandboxDirectives(fail=DEFAULT_FAIL_MESSAGE)),
        ("[sandbox:fail=Disk Full!]", SandboxDirectives(fail="Disk Full!")),
        (
            "[sandbox:delay=1] and [sandbox:fail=late]",
            SandboxDirectives(delay_s=1.0, fail="late"),
        ),
        ("[sandbox:delay=1][sandbox:delay=3]", SandboxDirectives(delay_s=3.0)),
        ("sandbox:delay=5 without brackets", SandboxDirectives()),
    ],
)
def test_parse_directives(prompt: str, expected: SandboxDirectives) -> None:
    assert parse_directives(prompt) == expected


def test_invalid_delay_is_an_error() -> None:
    with pytest.raises(GenerationError) as info:
        parse_directives("[sandbox:delay=abc]")
    assert str(info.value) == "prompt: [sandbox:delay=abc] needs a number of seconds"
    for bad in ("[sandbox:delay]", "[sandbox:delay=-1]", "[sandbox:delay=nan]", "[sandbox:delay=inf]"):
        with pytest.raises(GenerationError, match="needs a number of seconds"):
            parse_directives(bad)


def test_unknown_directive_is_an_error() -> None:
    with pytest.raises(GenerationError, match=r"unknown sandbox tag \[sandbox:dealy=5\]"):
        parse_directives("[sandbox:dealy=5]")


def test_invalid_directive_fails_generate_before_any_frame() -> None:
    sink = ListSink()
    with pytest.raises(GenerationError):
        SandboxBackend().generate(
            _request(prompt="[sandbox:delay=soon]"), sink, lambda _f: None, lambda: False
        )
    assert sink.frames == []


def test_messages_never_look_like_upstream_http_errors() -> None:
    import reel.backends.sandbox as module

    source = Path(module.__file__).read_text()
    assert "HTTP 5" not in source and "HTTP 429" not in source


def test_step_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SandboxBackend(step_count=0)
