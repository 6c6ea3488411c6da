"""Periodic clean-up run by every worker: expired uploads (see ``FileService.sweep_expired``).

Every worker runs it, so it runs wherever Reel runs (one machine or a fleet); a sweep is
harmless when another worker ran one a moment before.
"""

from __future__ import annotations

import threading

from reel.predictions.files import FileService
from reel.worker.periodic import every

HOUSEKEEPING_INTERVAL_S = 600.0


class Housekeeping:
    def __init__(self, files: FileService, *, interval_s: float = HOUSEKEEPING_INTERVAL_S) -> None:
        self._files = files
        self._interval_s = interval_s

    def run_once(self) -> int:
        """Sweep until nothing expired is left; returns how many files went."""
        total = 0
        while swept := self._files.sweep_expired():
            total += swept
        return total

    def run_forever(self, stop: threading.Event) -> None:
        every(self._interval_s, stop, "housekeeping", self.run_once)
