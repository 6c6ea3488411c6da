"""Periodic clean-up run by every worker: expired uploads and lapsed upload tickets
(``FileService.sweep_expired``), and what retention (``REEL_RETENTION_S``) expired: ended
predictions with their files, idempotency keys and webhook deliveries (``RetentionSweep``).

Every worker runs it, every ``REEL_HOUSEKEEPING_INTERVAL_S``, so it runs wherever Reel runs
(one machine or a fleet); a sweep is harmless when another worker ran one a moment before.
Each sweep call deletes one bounded batch in short transactions; a round calls them until
nothing expired is left, so a backlog (retention just turned on over years of data) never
holds a long transaction or the SQLite write lock.
"""

from __future__ import annotations

import threading

from reel.predictions.files import FileService
from reel.predictions.retention import RetentionSweep
from reel.worker.periodic import every

HOUSEKEEPING_INTERVAL_S = 600.0


class Housekeeping:
    def __init__(
        self,
        files: FileService,
        retention: RetentionSweep | None = None,
        *,
        interval_s: float = HOUSEKEEPING_INTERVAL_S,
    ) -> None:
        self._files = files
        self._retention = retention
        self._interval_s = interval_s

    def run_once(self) -> int:
        """Sweep until nothing expired is left; returns how many uploads, predictions, output
        files, idempotency keys and webhook deliveries went."""
        total = 0
        while swept := self._files.sweep_expired():
            total += swept
        if self._retention is not None:
            while counts := self._retention.sweep_once():
                total += counts.predictions + counts.files + counts.idempotency_keys
                total += counts.webhook_deliveries
        return total

    def run_forever(self, stop: threading.Event) -> None:
        every(self._interval_s, stop, "housekeeping", self.run_once)
