"""One logging setup for every process (``reel serve``, its worker, ``reel worker``).

``REEL_LOG_FORMAT=text`` (the default): time, level, process, logger, message on one line.
``REEL_LOG_FORMAT=json``: one JSON object per line with the same fields (and ``exception``
when there is one), plus ``prediction_id``, ``key_id`` and ``model`` on every line logged
while a prediction is being handled: the worker running it and the service submitting,
cancelling or deleting it say so with :func:`prediction_context`, so no log call repeats them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class PredictionFields:
    prediction_id: str
    key_id: str | None = None
    model: str | None = None


_current: ContextVar[PredictionFields | None] = ContextVar("reel_prediction", default=None)


@contextmanager
def prediction_context(
    prediction_id: str, *, key_id: str | None = None, model: str | None = None
) -> Iterator[None]:
    """Every record logged inside (in this thread or task) is about this prediction."""
    token = _current.set(PredictionFields(prediction_id, key_id, model))
    try:
        yield
    finally:
        _current.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = _current.get()
        if fields is not None:
            entry.update(asdict(fields))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def setup_logging() -> None:
    level = os.environ.get("REEL_LOG_LEVEL", "INFO").upper()
    log_format = os.environ.get("REEL_LOG_FORMAT", "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ValueError(f"REEL_LOG_FORMAT: expected text or json, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
