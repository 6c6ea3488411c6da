"""Periodic clean-up run by every worker: expired uploads (see ``FileService.sweep_expired``).

Every worker runs it, so it runs wherever Reel runs (one machine or a fleet); a sweep is
harmless when another worker ran one a moment before.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import OperationalError

from reel.errors import ServiceUnavailable
from reel.wiring import Services

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 600.0


class Housekeeping:
    def __init__(self, services: Services, *, interval_s: float = HOUSEKEEPING_INTERVAL_S) -> None:
        self._services = services
        self._interval_s = interval_s

    def run_once(self) -> int:
        """Sweep until nothing expired is left; returns how many files went."""
        total = 0
        while swept := self._services.files.sweep_expired():
            total += swept
        return total

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            try:
                self.run_once()
            except (ServiceUnavailable, OperationalError) as exc:  # the database or storage is away
                log.warning("housekeeping: %s; trying again later", exc)
            except Exception:
                log.exception("housekeeping failed; trying again later")
