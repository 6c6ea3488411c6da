"""H.264 MP4 output with PyAV, and the small amount of reading back we need.

:class:`H264Writer` is the :class:`~reel.backends.base.FrameSink` every backend writes into.
It encodes constant-frame-rate H.264 (libx264, yuv420p) in an MP4 with the ``moov`` atom
first (``+faststart``) so browsers can start playing before the download ends. The file
appears at its final path only once it is complete: frames go to a temporary name in the
same directory and are renamed into place on a clean close. The same frames give the same
bytes on the same machine (see :func:`x264_options`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.stream import VideoStream

ENCODER_THREADS = 2
"""libx264 threads: the deployment target has two cores to spare for encoding."""


@functools.cache
def x264_options() -> dict[str, str]:
    """Extra libx264 options for this CPU: ``x264-params=asm=AVX2`` where it has AVX-512.

    Why by hand: libx264's AVX-512 code (core 165, as PyAV 18 bundles it) makes its
    macroblock-tree rate control vary from run to run, so the same frames now and then
    encoded to other bytes (decoded pixels up to 0.8 levels apart on average): a same-seed
    video was not the same video. With its AVX2 code every encode was identical, at the same
    size, quality and speed (``bench/x264_determinism.py``; figures in docs/benchmarks.md).
    x264 cannot leave out one instruction set, only list those to use; "AVX2" names AVX2 and
    everything below it, which every AVX-512 CPU also has.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: x264 detects the CPU itself
        return {}
    return {"x264-params": "asm=AVX2"} if " avx512f" in cpuinfo else {}


class H264Writer:
    """Encode RGB frames to an H.264 MP4 at ``path``; a context manager.

    Leaving the ``with`` block normally (or calling :meth:`close`) flushes the encoder and
    renames the finished file into place. Leaving it with an exception (or calling
    :meth:`abort`) discards everything, so ``path`` never holds a half-written video.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: int,
        crf: int = 20,
        preset: str = "veryfast",
    ) -> None:
        # yuv420p subsamples chroma 2x2, so libx264 refuses odd dimensions.
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_written = 0
        self._closed = False
        # Same directory as the target so the final rename is atomic (same filesystem); the
        # leading dot and random part keep it out of the way of listings and other writers.
        self._tmp_path = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.part")
        self._container = av.open(
            str(self._tmp_path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            stream = self._container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset, **x264_options()}
            stream.codec_context.thread_count = ENCODER_THREADS
            # One tick per frame: pts = frame index gives exact constant frame rate.
            stream.time_base = Fraction(1, fps)
            stream.codec_context.time_base = Fraction(1, fps)
        except BaseException:
            self._discard()
            raise
        self._stream: VideoStream = stream

    def write(self, frame: np.ndarray) -> None:
        """Encode one HxWx3 uint8 RGB frame of exactly the writer's size."""
        if self._closed:
            raise RuntimeError("H264Writer is closed")
        expected = (self.height, self.width, 3)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 with shape {expected} (HxWx3 RGB), "
                f"got {frame.dtype} with shape {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file to ``path``. Idempotent."""
        if self._closed:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._discard()
            raise
        self._closed = True
        try:
            os.replace(self._tmp_path, self.path)
        except BaseException:
            self._tmp_path.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Stop without producing a file: the temporary file is removed. Idempotent."""
        if not self._closed:
            self._discard()

    def _discard(self) -> None:
        self._closed = True
        # The container may already be broken (that is often why we are here); the only
        # thing that matters now is that the temporary file goes away.
        with contextlib.suppress(Exception):
            self._container.close()
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    """Frames actually decoded, not the container's claim."""
    duration_s: float
    codec: str
    """Decoder name, e.g. ``h264``."""
    pix_fmt: str


def probe_video(path: Path) -> VideoInfo:
    """Describe the first video stream of ``path``, decoding it to count frames exactly."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        frame_count = sum(1 for _ in container.decode(stream))
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        else:
            duration_s = frame_count / fps if fps else 0.0
        return VideoInfo(
            width=ctx.width,
            height=ctx.height,
            fps=fps,
            frame_count=frame_count,
            duration_s=duration_s,
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt or "",
        )


def count_frames(path: Path) -> int:
    """Count the video frames of ``path`` by demuxing only (one packet per frame), no decode.

    Much cheaper than :func:`probe_video`; exact for the H.264 MP4s :class:`H264Writer` makes.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        # The demuxer ends with an empty flush packet, which is not a frame.
        return sum(1 for packet in container.demux(stream) if packet.size)


def read_frames(path: Path, *, indices: Sequence[int] | None = None) -> list[np.ndarray]:
    """Decode frames of ``path`` to HxWx3 uint8 RGB arrays.

    With ``indices``, return just those frames (0-based, in the order given, repeats
    allowed), decoding only as far as the largest one; without, return every frame.
    """
    wanted: set[int] | None = None
    last = -1
    if indices is not None:
        if any(i < 0 for i in indices):
            raise ValueError(f"frame indices must be >= 0, got {list(indices)}")
        wanted = set(indices)
        if not wanted:
            return []
        last = max(wanted)
    found: dict[int, np.ndarray] = {}
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if wanted is None:
                frames.append(frame.to_ndarray(format="rgb24"))
                continue
            if index in wanted:
                found[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    if indices is None:
        return frames
    missing = sorted(set(indices) - found.keys())
    if missing:
        raise ValueError(f"{path} has no frames at indices {missing}")
    return [found[i] for i in indices]
