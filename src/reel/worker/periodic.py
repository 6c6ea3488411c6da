"""What the worker's threads wait out, and the loop that runs their periodic jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from reel.errors import ServiceUnavailable

log = logging.getLogger(__name__)

UNAVAILABLE = (ServiceUnavailable, OperationalError)
"""The database or the blob store is away: wait, then try again."""


def every(interval_s: float, stop: threading.Event, what: str, job: Callable[[], object]) -> None:
    """Run ``job`` every ``interval_s`` seconds until ``stop`` is set. A failed round is logged
    (an outage as a warning, anything else with its traceback) and the next round tries again."""
    while not stop.wait(interval_s):
        try:
            job()
        except UNAVAILABLE as exc:
            log.warning("%s failed (%s); retrying", what, exc)
        except Exception:
            log.exception("%s failed; retrying", what)
