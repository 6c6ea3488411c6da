"""The free-space guard: new work is refused while the disk it would be written to is low.

A prediction accepted with the disk nearly full fails later, part-way through writing its
video (``No space left on device``), after the caller waited for it. Refusing it up front
with a 503 is kinder: nothing is created, and the caller (or its SDK) tries again later.

Checked on every submit and upload, so it must be cheap: each directory's free space is
read with one ``statvfs`` (``shutil.disk_usage``) at most once per :data:`CACHE_S`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from reel.errors import LowDiskSpace

CACHE_S = 1.0
"""How long one reading of a directory's free space is trusted."""


class FreeSpaceGuard:
    """Refuses new work while any of ``directories`` has less than ``min_free_bytes`` free.

    ``min_free_bytes`` 0 turns the guard off. ``free_bytes`` reads a directory's free space
    (``shutil.disk_usage(path).free`` by default; tests may pass another).
    """

    def __init__(
        self,
        directories: Sequence[Path],
        min_free_bytes: int,
        *,
        cache_s: float = CACHE_S,
        free_bytes: Callable[[Path], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directories = list(dict.fromkeys(directories))
        self._min_free_bytes = min_free_bytes
        self._cache_s = cache_s
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: dict[Path, tuple[float, int]] = {}

    def check(self) -> None:
        """Raise :class:`~reel.errors.LowDiskSpace` if a directory is low on space."""
        if self._min_free_bytes <= 0:
            return
        for directory in self._directories:
            free = self._free(directory)
            if free < self._min_free_bytes:
                raise LowDiskSpace(
                    f"{directory} has {free} bytes free, under REEL_MIN_FREE_BYTES "
                    f"({self._min_free_bytes}); new predictions and uploads are refused until "
                    "space is freed"
                )

    def _free(self, directory: Path) -> int:
        now = self._clock()
        with self._lock:
            reading = self._readings.get(directory)
            if reading is not None and now - reading[0] < self._cache_s:
                return reading[1]
        free = self._free_bytes(directory)
        with self._lock:
            self._readings[directory] = (now, free)
        return free


ALWAYS_ROOM = FreeSpaceGuard([], 0)
"""A guard that never refuses (for services built without one)."""
