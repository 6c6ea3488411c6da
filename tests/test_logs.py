"""``REEL_LOG_FORMAT``: JSON lines with the prediction's fields from the log context."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading

import pytest

from reel.logs import JsonFormatter, prediction_context, setup_logging


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.getLogger("reel.test").makeRecord(
        "reel.test",
        logging.WARNING,
        __file__,
        1,
        message,
        args,
        exc_info,  # type: ignore[arg-type]
    )


def test_a_line_outside_any_prediction_has_the_base_fields_only() -> None:
    entry = json.loads(JsonFormatter().format(_record("worker %s serving %s", "w1", "m")))
    assert set(entry) == {"time", "level", "process", "logger", "message"}
    assert entry["message"] == "worker w1 serving m" and entry["level"] == "WARNING"
    assert entry["logger"] == "reel.test" and entry["time"].endswith("+00:00")


def test_lines_inside_a_prediction_context_carry_its_fields() -> None:
    with prediction_context("p1", key_id="k1", model="runwayml/gen4-turbo"):
        entry = json.loads(JsonFormatter().format(_record("generating")))
    assert (entry["prediction_id"], entry["key_id"], entry["model"]) == ("p1", "k1", "runwayml/gen4-turbo")
    assert "prediction_id" not in json.loads(JsonFormatter().format(_record("after")))


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise OSError("disk\nfull")
    except OSError:
        line = JsonFormatter().format(_record("encoding failed", exc_info=sys.exc_info()))
    assert "\n" not in line
    entry = json.loads(line)
    assert "Traceback" in entry["exception"] and "OSError: disk\nfull" in entry["exception"]


def test_a_thread_started_in_a_copy_of_the_context_keeps_it() -> None:
    seen: list[str] = []

    def log_it() -> None:
        seen.append(JsonFormatter().format(_record("heartbeat refused")))

    with prediction_context("p2", key_id="k2", model="m"):
        thread = threading.Thread(target=contextvars.copy_context().run, args=(log_it,))
        thread.start()
        thread.join()
    assert json.loads(seen[0])["prediction_id"] == "p2"


def test_setup_logging_picks_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv("REEL_LOG_FORMAT", "json")
        setup_logging()
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("REEL_LOG_FORMAT", "text")
        setup_logging()
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("REEL_LOG_FORMAT", "xml")
        with pytest.raises(ValueError, match="REEL_LOG_FORMAT"):
            setup_logging()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
