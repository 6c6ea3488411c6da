"""H264Writer, probe_video, count_frames and read_frames against real encodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reel.media.video import H264Writer, count_frames, probe_video, read_frames

WIDTH, HEIGHT, FPS = 320, 240, 24


def _frame(index: int) -> np.ndarray:
    """A frame whose flat colour encodes its index, so decoded frames can be told apart."""
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[...] = (index * 5 % 256, 128, 255 - index * 5 % 256)
    return frame


def _write(path: Path, count: int = 48) -> None:
    with H264Writer(path, width=WIDTH, height=HEIGHT, fps=FPS) as writer:
        for i in range(count):
            writer.write(_frame(i))
        assert writer.frames_written == count


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _write(path)
    return path


def test_probe_reports_h264_constant_rate(clip: Path) -> None:
    info = probe_video(clip)
    assert info.codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.fps == 24.0
    assert info.frame_count == 48
    assert info.duration_s == pytest.approx(2.0, abs=1e-6)
    assert count_frames(clip) == 48


def test_moov_atom_precedes_mdat(clip: Path) -> None:
    data = clip.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_only_the_final_file_is_left(clip: Path) -> None:
    assert [p.name for p in clip.parent.iterdir()] == ["clip.mp4"]


def test_read_frames_returns_rgb_in_requested_order(clip: Path) -> None:
    frames = read_frames(clip, indices=[40, 0, 10])
    assert [f.shape for f in frames] == [(HEIGHT, WIDTH, 3)] * 3
    for index, frame in zip([40, 0, 10], frames, strict=True):
        mean = frame.reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - _frame(index)[0, 0]).max() < 6
    assert len(read_frames(clip)) == 48
    with pytest.raises(ValueError):
        read_frames(clip, indices=[48])


def test_wrong_shape_or_dtype_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with H264Writer(path, width=WIDTH, height=HEIGHT, fps=FPS) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((WIDTH, HEIGHT, 3), dtype=np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32))
        writer.write(_frame(0))
    assert probe_video(path).frame_count == 1


def test_odd_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        H264Writer(tmp_path / "odd.mp4", width=321, height=240, fps=FPS)
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with (
        pytest.raises(RuntimeError, match="boom"),
        H264Writer(path, width=WIDTH, height=HEIGHT, fps=FPS) as writer,
    ):
        for i in range(5):
            writer.write(_frame(i))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_close_is_idempotent_and_nothing_appears_before_it(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    writer = H264Writer(path, width=WIDTH, height=HEIGHT, fps=FPS)
    writer.write(_frame(0))
    assert not path.exists()
    writer.close()
    writer.close()
    assert path.exists()
    with pytest.raises(RuntimeError):
        writer.write(_frame(1))


def test_the_same_frames_encode_to_the_same_bytes(tmp_path: Path) -> None:
    # Noise-like blocks at 960x960, as the tiny test models make: with libx264's AVX-512
    # code, 4 to 17 of 40 such encodes came out different (see x264_options).
    blocks = np.random.default_rng(0).integers(0, 255, (8, 60, 60, 3), dtype=np.uint8)
    frames = [np.kron(block, np.ones((16, 16, 1), dtype=np.uint8)) for block in blocks]
    encodings = set()
    for index in range(16):
        path = tmp_path / f"{index}.mp4"
        with H264Writer(path, width=960, height=960, fps=8) as writer:
            for frame in frames:
                writer.write(frame)
        read_frames(path)  # a decode in between, as a worker does other work between videos
        encodings.add(path.read_bytes())
    assert len(encodings) == 1
