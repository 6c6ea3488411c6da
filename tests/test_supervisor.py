"""The worker supervisor restarts a crashed worker with backoff, and starts the backoff again
after a worker that ran healthily crashes. Real spawned child processes; small delays."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reel.settings import Settings
from reel.supervisor import WorkerSupervisor

HEALTHY_AFTER_S = 4.0  # far above how long a crashing child lives, even on a loaded machine
PLAN = ["crash", "crash", "crash", "run-then-crash", "crash", "run"]
"""What each child does, in the order they are started."""


def planned_child(settings_data: dict[str, Any]) -> None:
    """A stand-in worker that follows ``PLAN``; it counts its starts in the data dir."""
    data_dir = Path(settings_data["data_dir"])
    starts = len(list(data_dir.glob("start-*")))
    (data_dir / f"start-{starts}").touch()
    step = PLAN[min(starts, len(PLAN) - 1)]
    if step == "run-then-crash":
        time.sleep(HEALTHY_AFTER_S + 0.5)
    elif step == "run":
        time.sleep(120)  # until the supervisor stops it
    sys.exit(1)


def test_the_restart_backoff_starts_again_after_a_worker_ran_healthily(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reel.supervisor")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    supervisor = WorkerSupervisor(
        Settings(data_dir=data_dir),
        target=planned_child,
        first_delay_s=0.05,
        max_delay_s=0.2,
        healthy_after_s=HEALTHY_AFTER_S,
    )
    supervisor.start()
    try:
        deadline = time.monotonic() + 60
        while len(list(data_dir.glob("start-*"))) < len(PLAN) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(data_dir.glob("start-*"))) == len(PLAN), caplog.text
    finally:
        supervisor.stop()
    exits = [r.getMessage() for r in caplog.records if "exited with code" in r.getMessage()]
    assert all(re.match(r"worker process \d+ exited with code 1 ", line) for line in exits), exits
    delays = [float(re.findall(r"restarting in ([\d.]+) s", line)[0]) for line in exits]
    # Three crashes in a row back off to the cap; the one after a healthy run starts again.
    assert delays == [0.05, 0.1, 0.2, 0.05, 0.1], exits
    started = [int(m) for m in re.findall(r"worker process started \(pid (\d+)\)", caplog.text)]
    assert len(started) == len(PLAN)
    for pid in started:  # stop() left no child behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
