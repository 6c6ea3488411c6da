"""A small run of bench/fault_drill.py: 2 API replicas and 3 workers on PostgreSQL and S3, one
worker SIGKILLed mid-generation and PostgreSQL restarted, every prediction through the SDK.

The full drill (200 predictions) is run from the script; its results are in docs/fault-drill.md.
This restarts the machine's PostgreSQL server once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fault_drill import run_drill  # bench/ is not a package

PREDICTIONS = 16


@pytest.mark.e2e
def test_nothing_is_lost_or_generated_twice_through_a_worker_crash_and_a_database_restart(
    tmp_path: Path,
) -> None:
    report = run_drill(tmp_path, predictions=PREDICTIONS, lease_s=5.0, storage="s3", say=print)
    assert report.problems == []
    assert report.statuses == {"completed": PREDICTIONS}
    assert report.lost == [] and report.sdk_errors == []
    assert report.generated_more_than_once == {}
    assert report.output_objects == PREDICTIONS
    assert report.death_to_restart_s is not None  # the killed worker's prediction ran elsewhere
    assert set(report.api_answers_during_restart) <= {"200", "503"}
    assert set(report.api_5xx_lines) <= {"503"}
