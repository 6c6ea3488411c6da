"""Fault injection into real processes: one fault per test, injected into a running
``reel serve`` (its data dir, its S3 endpoint, its PostgreSQL connections) from outside.

Every test shows the same four things, from outside the processes:

- the prediction ends ``completed`` (after the worker waited the fault out) or ``failed`` with
  a reason, or ``cancelled``/deleted when that was the request;
- the worker is still serving: the supervisor logged no ``worker process … exited``, the
  worker pid is the one from before the fault, and it then runs another prediction;
- no file is orphaned: what is left under the data dir's ``blobs/`` (or in the bucket) is
  exactly the surviving predictions' inputs and outputs, and the scratch dirs are empty;
- nothing is generated twice: the worker logs ``generation finished`` once per generation that
  ran to its end (as ``bench/fault_drill.py`` counts them).

Every server makes 1 s clips (a test-only model registry), and four tests whose fault leaves
the server as it was take turns on one (``local_reel``); the others each start their own.
What each test does and why is in docs/faults.md. The ENOSPC tests mount a small tmpfs, so
they need root (or passwordless sudo); the PostgreSQL ones the local server (as every
PostgreSQL test does) and they terminate only their own database's connections.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support import predictions_api
from support.faults import (
    ConnectionKiller,
    blob_files,
    bucket_blobs,
    cancel,
    create_key,
    delete,
    expected_blobs,
    finished_line,
    generations,
    get_prediction,
    runway_failure_code,
    scratch_files,
    serving_http,
    settle,
    short_clip_registry,
    tmpfs,
    wait_for_log,
    wait_until_ended,
    worker_exits,
)
from support.s3 import S3Gateway
from support.server import LiveServer

pytestmark = pytest.mark.e2e

ENOSPC = "No space left on device"
FULL = "64k"
"""Well under one output video (a 1 s 960×960 sandbox clip is about 250 kB)."""
ROOMY = "64m"
PROBE_ERROR = "probe: the worker is still serving"


CLEAN = {
    "worker exits": [],
    "worker replaced": False,
    "orphaned blobs": [],
    "missing blobs": [],
    "scratch files left": [],
}
"""The part of every outcome that no fault may change."""


def clean(*, status: dict[str, str], generated: dict[str, int]) -> dict[str, Any]:
    """The outcome a test expects: these statuses and generation counts, and nothing broken."""
    return {"status": status, "generated": generated, **CLEAN}


class Reel:
    """A ``reel serve`` under test, its key, the worker pid it started with, and where its
    blobs are listed from (the data dir's ``blobs/``, or a bucket).

    A ``shared`` one serves one test after another (:func:`local_reel`): each test is a turn
    that starts with no blob and no scratch file (the turn before deleted all of its
    predictions and saw their files go), and whose log, worker pid and 5xx answers are counted
    from the turn's start, so each test's outcome is as exact as on a server of its own."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        stored: Callable[[], set[str]] | None,
        models_file: Path,
        *,
        shared: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.server = LiveServer(
            data_dir, env={"REEL_SANDBOX": "1", "REEL_MODELS_FILE": str(models_file), **env}
        )
        self.stored = stored or (lambda: blob_files(data_dir))
        self.shared = shared
        self.key = ""
        self.worker_pids: list[int] = []
        self.submitted: list[str] = []
        self.reusable = False
        """Set by a turn that ended cleanly: its predictions and their files gone, same worker."""
        self._log_from = 0
        self._errors_before = 0

    def start(self) -> Reel:
        self.server.start(wait_ready=False)
        # The key is made while the worker starts, once the server answers (its migrations are
        # done), with the server's environment: on PostgreSQL it must go to its database.
        serving_http(self.server)
        with ThreadPoolExecutor(1) as pool:
            key = pool.submit(create_key, self.data_dir, "faults", env=self.server.env)
            self.server.wait_ready()
            self.key = key.result()
        self.worker_pids = self.server.worker_pids()
        assert len(self.worker_pids) == 1, self.worker_pids
        return self

    def next_turn(self) -> Reel:
        """Begin the next test on a shared server: what it checks is counted from now."""
        assert self.shared and self.reusable
        assert self.server.log_path is not None
        self._log_from = self.server.log_path.stat().st_size
        self._errors_before = len(self.server.server_errors())
        self.submitted = []
        self.reusable = False
        self.worker_pids = self.server.worker_pids()
        assert len(self.worker_pids) == 1, self.worker_pids
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def log(self) -> str:
        """The server's log (since this test's turn began, on a shared server)."""
        assert self.server.log_path is not None
        with self.server.log_path.open("rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def submit(self, prompt: str) -> str:
        prediction_id = predictions_api.submit(self.url, self.key, prompt)
        self.submitted.append(prediction_id)
        return prediction_id

    def ended(self, prediction_id: str, timeout_s: float = 120) -> dict[str, Any]:
        return wait_until_ended(self.url, self.key, prediction_id, timeout_s)

    def outcome(self, removed: Iterable[str] = (), **predictions: str) -> dict[str, Any]:
        """Everything a fault test checks, in one value, so that a failure shows all of it:
        each prediction's status (``deleted`` once it is gone) and generation count, the worker
        exits and whether the worker process is another one now, and the blobs that are there
        and should not be (or should and are not) given the predictions that still exist,
        less the ``removed`` keys the test itself deleted, and the scratch files left."""
        states = {name: get_prediction(self.url, self.key, pid) for name, pid in predictions.items()}
        expected = expected_blobs(s for s in states.values() if s is not None) - set(removed)
        found = settle(self.stored, lambda files: files == expected)
        scratch = settle(lambda: scratch_files(self.data_dir), lambda files: not files)
        counts = generations(self.log())
        return {
            "status": {name: state["status"] if state else "deleted" for name, state in states.items()},
            "generated": {name: counts[pid] for name, pid in predictions.items()},
            "worker exits": worker_exits(self.log()),
            "worker replaced": self.server.worker_pids() != self.worker_pids,
            "orphaned blobs": sorted(found - expected),
            "missing blobs": sorted(expected - found),
            "scratch files left": sorted(scratch),
        }

    def worker_warnings(self) -> list[str]:
        """The worker process's warnings: evidence that a fault reached it."""
        tag = f"WARNING [{self.worker_pids[0]}]"
        return [line for line in self.log().splitlines() if tag in " ".join(line.split())]

    def assert_still_serving(self) -> None:
        """The same worker process takes and ends a new prediction (one that fails on request
        after two of its twelve steps: a second or two, rather than a whole clip)."""
        probe = self.submit(f"[sandbox:fail={PROBE_ERROR}]")
        final = self.ended(probe, timeout_s=60)
        assert (final["status"], final["error"]) == ("failed", PROBE_ERROR), final
        assert worker_exits(self.log()) == [] and self.server.worker_pids() == self.worker_pids

    def stop(self, allowed_5xx: tuple[str, ...] = ()) -> None:
        """The end of the test: no 5xx answers (bar ``allowed_5xx``). A server of its own stops
        first; a shared one is cleared for the next test instead (:meth:`_clear`)."""
        if not self.shared:
            self.server.stop()
        errors = [
            line
            for line in self.server.server_errors()[self._errors_before :]
            if not any(f'" {s}' in line for s in allowed_5xx)
        ]
        assert not errors, "requests answered with 5xx:\n" + "\n".join(errors)
        if self.shared:
            self._clear()

    def _clear(self) -> None:
        """Delete every prediction this test submitted and see all of their files go; the
        server serves the next test only if that worked and its worker is the same one."""
        for prediction_id in self.submitted:
            assert delete(self.url, self.key, prediction_id) in (200, 404)
        left = settle(
            lambda: (self.stored(), scratch_files(self.data_dir)), lambda files: files == (set(), set())
        )
        assert left == (set(), set()), f"files left after deleting this test's predictions: {left}"
        self.reusable = worker_exits(self.log()) == [] and self.server.worker_pids() == self.worker_pids


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model registry, but the model these tests submit to makes 1 s clips by
    default (24 frames rather than 120): generation takes a fifth of the time, and nothing a
    test shows depends on the clip's length."""
    return short_clip_registry(
        tmp_path_factory.mktemp("faults-models") / "models.toml", predictions_api.MODEL
    )


@pytest.fixture
def reel(tmp_path: Path, models_file: Path) -> Iterator[Callable[..., Reel]]:
    """Start a ``reel serve`` of the test's own (sandbox, SQLite, local disk unless ``env``
    says otherwise), on the registry of short clips."""
    started: list[Reel] = []

    def start(env: dict[str, str] | None = None, *, stored: Callable[[], set[str]] | None = None) -> Reel:
        running = Reel(tmp_path / "data", env or {}, stored, models_file)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        running.server.stop()


@pytest.fixture(scope="module")
def _shared_servers() -> Iterator[list[Reel]]:
    servers: list[Reel] = []
    yield servers
    for running in servers:
        running.server.stop()


@pytest.fixture
def local_reel(
    _shared_servers: list[Reel], tmp_path_factory: pytest.TempPathFactory, models_file: Path
) -> Iterator[Reel]:
    """A ``reel serve`` (sandbox, SQLite, local disk, default lease) that the tests whose
    fault leaves it as it was take turns on, saving a start-up each. A test that fails, or
    whose turn does not end cleanly (:meth:`Reel._clear`), takes it down with it: the next
    one gets a fresh server."""
    if _shared_servers and _shared_servers[-1].reusable:
        running = _shared_servers[-1].next_turn()
    else:
        data_dir = tmp_path_factory.mktemp("faults-shared") / "data"
        running = Reel(data_dir, {}, None, models_file, shared=True)
        _shared_servers.append(running)
        running.start()
    yield running
    if not running.reusable:
        running.server.stop()


def generating(reel: Reel, prediction_id: str) -> None:
    """Wait until the worker logs that it is generating the prediction: it holds it (its input
    is read) and, with a single worker, nothing else is claimed until it is done."""
    wait_for_log(reel.log, f"prediction {prediction_id}: generating with")


# --- the input, the prediction, or the request going away -----------------------------------


def test_input_blob_gone_when_the_worker_reads_it_fails_that_prediction_only(local_reel: Reel) -> None:
    running = local_reel
    # A long prediction holds the only worker, so the next one waits, claimed by nobody.
    busy = running.submit("busy [sandbox:delay=60]")
    generating(running, busy)
    victim = running.submit("its input disappears")
    after = running.submit("the one after")
    (running.data_dir / "blobs" / "inputs" / f"{victim}.png").unlink()
    assert predictions_api.result(running.url, running.key, victim)["status"] == "created"
    assert cancel(running.url, running.key, busy) == 200  # the worker moves on to the victim now

    final = running.ended(victim)
    assert final["status"] == "failed" and final["error"], final
    assert runway_failure_code(running.url, running.key, victim) == "INTERNAL"
    running.ended(after)
    assert running.outcome(removed=[f"inputs/{victim}.png"], busy=busy, victim=victim, after=after) == clean(
        status={"busy": "cancelled", "victim": "failed", "after": "completed"},
        generated={"busy": 0, "victim": 0, "after": 1},
    )
    running.stop()


def test_prediction_deleted_mid_generation_stops_it_and_leaves_no_file(local_reel: Reel) -> None:
    running = local_reel
    doomed = running.submit("deleted half-way [sandbox:delay=4]")
    predictions_api.wait_for(running.url, running.key, doomed, predictions_api.is_generating)
    assert delete(running.url, running.key, doomed) == 200
    # Its input goes with it; no output and no scratch file may stay.
    assert running.outcome(doomed=doomed) == clean(status={"doomed": "deleted"}, generated={"doomed": 0})
    running.assert_still_serving()
    running.stop()


def _in_last_step(reel: Reel, prediction_id: str) -> None:
    # The sandbox reports progress after each of its 12 steps, capped at 0.99 by the worker.
    predictions_api.wait_for(reel.url, reel.key, prediction_id, lambda d: d["progress"] >= 11 / 12 - 0.01)


def _encoded(reel: Reel, prediction_id: str) -> None:
    # The last frame is encoded and the MP4 closed; the safety check and the write come next.
    wait_for_log(reel.log, finished_line(prediction_id))


@pytest.mark.parametrize(
    ("moment", "prompt"),
    [
        # A second a step (and two frames of the short clip), so the one-second progress
        # heartbeat lands inside the last.
        (_in_last_step, "cancelled in its last step [sandbox:delay=12]"),
        (_encoded, "cancelled once encoded"),
    ],
    ids=["in-the-last-step", "once-encoded"],
)
def test_cancelled_as_encoding_ends_stays_cancelled_and_keeps_no_output(
    reel: Callable[..., Reel], moment: Callable[[Reel, str], None], prompt: str
) -> None:
    running = reel({"REEL_LEASE_S": "4"})  # heartbeats (and progress) every second
    late = running.submit(prompt)
    moment(running, late)
    assert cancel(running.url, running.key, late) == 200, "it completed before the cancel arrived"
    final = running.ended(late)
    assert final["outputs"] == [], final
    found = running.outcome(late=late)
    # Stopped at its last step, or encoded to the end and its output discarded: at most once.
    assert found["generated"]["late"] <= 1
    assert found == clean(status={"late": "cancelled"}, generated=found["generated"])
    running.assert_still_serving()
    running.stop()


# --- disk full --------------------------------------------------------------------------------


def test_disk_full_while_encoding_fails_with_the_reason_and_frees_the_scratch(local_reel: Reel) -> None:
    running = local_reel
    # blobs/.scratch is where the worker's H.264 writer writes (storage.local.scratch_dir()).
    with tmpfs(running.data_dir / "blobs" / ".scratch", FULL) as scratch:
        starved = running.submit("no room to encode")
        final = running.ended(starved)
        assert final["status"] == "failed" and ENOSPC in final["error"], final
        assert runway_failure_code(running.url, running.key, starved) == "INTERNAL"

        scratch.resize(ROOMY)  # space again: the same worker goes on with the next one
        roomy = running.submit("room again")
        running.ended(roomy)
        assert running.outcome(starved=starved, roomy=roomy) == clean(
            status={"starved": "failed", "roomy": "completed"}, generated={"starved": 0, "roomy": 1}
        )
        running.stop()


def test_disk_full_while_writing_the_output_ends_it_once_and_leaves_no_partial_file(
    local_reel: Reel,
) -> None:
    running = local_reel
    # The video is encoded in blobs/.scratch (on the data dir's disk) and then moved into
    # blobs/outputs: on this full tmpfs that move is a copy that runs out of space.
    with tmpfs(running.data_dir / "blobs" / "outputs", FULL) as outputs:
        starved = running.submit("no room for the output")
        wait_for_log(running.log, finished_line(starved))
        # Space comes back a few seconds after the write ran out of it: a worker that retries
        # the write may then complete it; one that does not must have failed it with the reason
        # (and once it has, space can come back at once).
        settle(
            lambda: predictions_api.result(running.url, running.key, starved), predictions_api.has_ended, 4
        )
        outputs.resize(ROOMY)
        final = running.ended(starved)
        if final["status"] == "failed":
            assert ENOSPC in final["error"], final
        roomy = running.submit("room again")
        running.ended(roomy)
        assert running.outcome(starved=starved, roomy=roomy) == clean(
            status={"starved": final["status"], "roomy": "completed"}, generated={"starved": 1, "roomy": 1}
        )
        assert final["status"] in {"completed", "failed"}
        running.stop()


# --- S3 away during the output upload ------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Gateway]:
    """A JuiceFS S3 gateway of this module's own: these tests stop and freeze it."""
    running = S3Gateway(tmp_path_factory.mktemp("faults-s3")).start()
    yield running
    running.stop()


def _on_s3(reel: Callable[..., Reel], gateway: S3Gateway, **env: str) -> Reel:
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    return reel({**gateway.reel_env(prefix), **env}, stored=lambda: bucket_blobs(gateway.list_keys, prefix))


def test_s3_refusing_connections_during_the_upload_completes_it_once(
    reel: Callable[..., Reel], gateway: S3Gateway
) -> None:
    running = _on_s3(reel, gateway)
    video = running.submit("uploaded through an outage [sandbox:delay=2]")
    generating(running, video)  # its input is read from the bucket: the upload is next
    gateway.stop()  # connection refused from now on
    try:
        wait_for_log(running.log, finished_line(video))
        # The first upload attempt and boto3's own retries all fail, and so does the worker's
        # first retry of the upload.
        wait_for_log(running.log, f"prediction {video}: cannot store its video yet", count=2)
    finally:
        gateway.start()
    running.ended(video)
    assert running.outcome(video=video) == clean(status={"video": "completed"}, generated={"video": 1})
    running.assert_still_serving()
    running.stop()


def test_s3_hanging_during_the_upload_holds_the_claim_and_completes_it_once(
    reel: Callable[..., Reel], gateway: S3Gateway
) -> None:
    # A 4 s lease and an endpoint that accepts connections but answers nothing for 8 s: the
    # upload hangs past the lease, so the claim survives only if heartbeats go on meanwhile.
    running = _on_s3(reel, gateway, REEL_LEASE_S="4")
    video = running.submit("uploaded to a frozen endpoint")
    wait_for_log(running.log, finished_line(video))
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(8)
    finally:
        gateway.process.send_signal(signal.SIGCONT)
    running.ended(video)
    assert running.outcome(video=video) == clean(status={"video": "completed"}, generated={"video": 1})
    running.stop()


# --- PostgreSQL connections dropped ---------------------------------------------------------

STORM_S = 3.0
"""How long every connection to the test's database is terminated, every 10 ms."""


def _on_postgres(reel: Callable[..., Reel], url: str) -> Reel:
    return reel({"REEL_DATABASE_URL": url, "REEL_LEASE_S": "5"})


def test_postgres_connections_dropped_during_the_final_write_complete_it_once(
    reel: Callable[..., Reel], postgres_url: str
) -> None:
    running = _on_postgres(reel, postgres_url)
    video = running.submit("written through dropped connections")
    wait_for_log(running.log, finished_line(video))
    # The safety check (about a second) and the write of the result come next.
    with ConnectionKiller(postgres_url) as killer:
        time.sleep(STORM_S)
    assert killer.killed > 0
    reached = running.worker_warnings()
    print(f"{killer.killed} connections terminated; the worker logged:", *reached, sep="\n")
    assert reached, "the dropped connections never reached the worker"
    running.ended(video)
    assert running.outcome(video=video) == clean(status={"video": "completed"}, generated={"video": 1})
    running.assert_still_serving()
    running.stop(allowed_5xx=("503",))  # requests met by the dropped connections answer 503


def test_postgres_connections_dropped_during_the_claim_run_the_next_prediction_once(
    reel: Callable[..., Reel], postgres_url: str
) -> None:
    running = _on_postgres(reel, postgres_url)
    busy = running.submit("busy [sandbox:delay=60]")
    generating(running, busy)
    waiting = running.submit("claimed through dropped connections")
    with ConnectionKiller(postgres_url) as killer:
        # Cancelling frees the worker, which then claims `waiting` while connections drop.
        assert cancel(running.url, running.key, busy) == 200
        time.sleep(STORM_S)
    assert killer.killed > 0
    reached = running.worker_warnings()
    print(f"{killer.killed} connections terminated; the worker logged:", *reached, sep="\n")
    assert reached, "the dropped connections never reached the worker"
    running.ended(waiting)
    assert running.outcome(busy=busy, waiting=waiting) == clean(
        status={"busy": "cancelled", "waiting": "completed"}, generated={"busy": 0, "waiting": 1}
    )
    running.stop(allowed_5xx=("503",))
