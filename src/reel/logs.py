"""One logging format for every process: time, level, process, logger, message."""

from __future__ import annotations

import logging
import os


def setup_logging() -> None:
    level = os.environ.get("REEL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        force=True,
    )
