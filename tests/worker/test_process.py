"""`reel worker` as a process: which models it serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reel.settings import Settings
from reel.worker.process import requested_models, served_backends

REEL = [sys.executable, "-m", "reel.cli"]


def test_models_limits_the_backends_a_worker_serves(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, sandbox=True, worker_models=" runwayml/gen4-turbo ,")
    assert requested_models(settings) == ["runwayml/gen4-turbo"]
    assert list(served_backends(settings)) == ["runwayml/gen4-turbo"]
    everything = Settings(data_dir=data_dir, sandbox=True)
    assert len(served_backends(everything)) > 1


def test_an_unknown_model_stops_the_worker_before_it_starts(data_dir: Path) -> None:
    out = subprocess.run(
        [
            *REEL,
            "worker",
            "--sandbox",
            "--data-dir",
            str(data_dir),
            "--models",
            "runwayml/gen4-turbo,no/such",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no/such" in out.stderr and "runwayml/gen4-turbo" in out.stderr
