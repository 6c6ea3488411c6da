"""Runway's view of a prediction, checked against the official SDK's own task types.

The HTTP tests see the states a live worker produces; these also cover the failures a test
server cannot produce on demand (an output refused by the safety classifier, a worker that
kept dying) and check every rendered task parses as the SDK's type for its status.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter
from runwayml.types import task_retrieve_response as sdk

from reel.api.runway_view import prediction_id, task_id, task_object
from reel.lifecycle.clock import new_prediction_id, utcnow
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.storage.local import LocalBlobStore
from reel.store.tables import Prediction

BASE = "http://reel.test"
TASK = TypeAdapter(sdk.TaskRetrieveResponse)


def row(
    status: Status,
    *,
    error: str = "",
    failure_code: FailureCode | None = None,
    progress: float = 0.0,
    output_file_ids: tuple[str, ...] = (),
) -> Prediction:
    return Prediction(
        id=new_prediction_id(),
        key_id="k",
        model="runwayml/gen4-turbo",
        status=status,
        error=error,
        failure_code=failure_code,
        progress=progress,
        outputs=[f"outputs/{file_id}.mp4" for file_id in output_file_ids],
        output_file_ids=list(output_file_ids),
        created_at=utcnow(),
    )


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.mark.parametrize(
    ("status", "sdk_type"),
    [
        (Status.CREATED, sdk.Pending),
        (Status.PROCESSING, sdk.Running),
        (Status.COMPLETED, sdk.Succeeded),
        (Status.FAILED, sdk.Failed),
        (Status.CANCELLED, sdk.Cancelled),
    ],
)
def test_every_status_parses_as_the_sdks_type(status: Status, sdk_type: type, blobs: LocalBlobStore) -> None:
    prediction = row(status, progress=0.5, error="boom", output_file_ids=("f" * 32,))
    task = TASK.validate_python(task_object(prediction, BASE, blobs))
    assert isinstance(task, sdk_type)
    assert task.id == task_id(prediction.id)


def test_a_succeeded_task_lists_its_output_urls(blobs: LocalBlobStore) -> None:
    prediction = row(Status.COMPLETED, output_file_ids=("a" * 32,))
    assert task_object(prediction, BASE, blobs)["output"] == [f"{BASE}/files/{'a' * 32}/output.mp4"]


@pytest.mark.parametrize(
    ("code", "runway_code"),
    [
        (FailureCode.GENERATION, "INTERNAL"),
        (FailureCode.INTERNAL, "INTERNAL"),
        (FailureCode.UNSAFE_OUTPUT, "SAFETY.OUTPUT.VIDEO"),
        (None, "INTERNAL"),
    ],
)
def test_failure_codes(code: FailureCode | None, runway_code: str, blobs: LocalBlobStore) -> None:
    task = task_object(row(Status.FAILED, error="why", failure_code=code), BASE, blobs)
    assert task["failureCode"] == runway_code
    assert task["failure"] == "why"


def test_task_ids_are_uuids_of_prediction_ids() -> None:
    pid = new_prediction_id()
    tid = task_id(pid)
    assert len(tid) == 36 and tid.count("-") == 4
    assert prediction_id(tid) == pid
    assert prediction_id(tid.upper()) == pid
    assert prediction_id("not-a-uuid") == "not-a-uuid"
