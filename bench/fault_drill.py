"""Fault drill: a scale-out deployment under a worker crash and a database restart.

    .venv/bin/python bench/fault_drill.py [--predictions 200] [--apis 2] [--workers 3]
                                          [--lease 5] [--storage s3|local] [--json FILE]

Starts 2 API replicas (`reel serve --no-worker`) and 3 sandbox workers (`reel worker`) on a
fresh database of the local PostgreSQL server and a bucket of a JuiceFS S3 gateway on
loopback (tests/support/s3.py); submits the predictions through the official `wavespeed`
SDK, alternating between the replicas; SIGKILLs one worker in the middle of a generation;
restarts PostgreSQL once while predictions are running and others wait; then checks that
every prediction completed, none was lost, counts the generations that ran to their end
more than once (the workers log each one), and measures how long the killed worker's job
took to restart on another worker.

WARNING: this restarts the machine's PostgreSQL server (`pg_ctlcluster ... restart`), which
breaks every connection to it, other programs' included.

Results go to docs/fault-drill.md. `tests/test_fault_drill.py` runs a small version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import wavespeed
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reel.media.video import probe_video
from reel.store.db import make_engine
from support.cluster import MODEL, Cluster
from support.media import png_base64
from support.postgres import cluster_version, fresh_database, restart_server
from support.s3 import S3Gateway

PREFIX = "drill"


@dataclass
class DrillReport:
    predictions: int
    apis: int
    workers: int
    lease_s: float
    storage: str
    wall_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    sdk_errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Accepted predictions that did not end completed."""
    generated_more_than_once: dict[str, int] = field(default_factory=dict)
    """Prediction id → generations that ran to their end (any over 1 is listed)."""
    output_objects: int = 0
    killed_worker: str = ""
    killed_prediction: str = ""
    death_to_restart_s: float | None = None
    """From the SIGKILL to another worker claiming the killed worker's prediction."""
    postgres_outage_s: float = 0.0
    """How long PostgreSQL refused connections during its restart, seen from the drill."""
    api_answers_during_restart: dict[str, int] = field(default_factory=dict)
    """HTTP status → count, for result polls sent while the database was restarting."""
    api_5xx_lines: dict[str, int] = field(default_factory=dict)
    """HTTP status → count of 5xx answers in the API replicas' access logs."""
    worker_tracebacks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _count(engine: Any, sql: str, **params: Any) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar() or 0)
    except Exception:  # PostgreSQL restarting: try again on the next look
        return -1


def run_drill(
    workdir: Path,
    *,
    predictions: int = 200,
    apis: int = 2,
    workers: int = 3,
    lease_s: float = 5.0,
    storage: str = "s3",
    say: Callable[[str], None] = print,
) -> DrillReport:
    report = DrillReport(predictions, apis, workers, lease_s, storage)
    say(
        f"WARNING: this drill restarts the machine's PostgreSQL server (cluster {cluster_version()}/main); "
        "every connection to it breaks for a few seconds."
    )
    started = time.monotonic()
    gateway = S3Gateway(workdir / "s3").start() if storage == "s3" else None
    with fresh_database() as database_url:
        env = {"REEL_DATABASE_URL": database_url, "REEL_SANDBOX": "1", "REEL_LEASE_S": str(lease_s)}
        if gateway is not None:
            env.update(gateway.reel_env(PREFIX))
        cluster = Cluster(workdir, env)
        engine = make_engine(database_url)
        try:
            cluster.start(apis=apis, workers=workers)
            say(f"{apis} API replicas and {workers} workers up; submitting {predictions} predictions")
            _drive(cluster, engine, report, say, gateway)
        finally:
            cluster.stop()
            engine.dispose()
            if gateway is not None:
                gateway.stop()
    report.wall_s = round(time.monotonic() - started, 1)
    return report


def _drive(
    cluster: Cluster, engine: Any, report: DrillReport, say: Callable[[str], None], gateway: S3Gateway | None
) -> None:
    key = cluster.create_key("drill")
    clients = [
        wavespeed.Client(api_key=key, base_url=api.url, max_connection_retries=30, retry_interval=0.5)
        for api in cluster.apis
    ]
    image = png_base64(320, 320)
    outputs: dict[int, str] = {}

    def submit(n: int) -> None:
        client = clients[n % len(clients)]
        try:
            result = client.run(
                MODEL,
                {"prompt": f"drill clip {n}", "image": image, "aspect_ratio": "1:1"},
                timeout=3600,
                poll_interval=2.0,
            )
            outputs[n] = result["outputs"][0]
        except Exception as exc:  # recorded: every prediction must complete
            report.sdk_errors.append(f"#{n}: {type(exc).__name__}: {exc}")

    pool = ThreadPoolExecutor(report.predictions)
    futures = [pool.submit(submit, n) for n in range(report.predictions)]
    total = report.predictions

    def done() -> int:
        return _count(engine, "SELECT count(*) FROM predictions WHERE status = 'completed'")

    # 1. SIGKILL a worker in the middle of a generation.
    _wait(lambda: done() >= max(2, total // 10), "a tenth of the predictions to complete")
    victim_row = _wait(lambda: _generating(engine), "a generation in progress")
    worker_id, prediction_id = victim_row
    victim = cluster.worker_holding(worker_id)
    assert victim is not None, f"no worker process for {worker_id}"
    victim.kill()
    killed_at = time.monotonic()
    report.killed_worker, report.killed_prediction = worker_id, prediction_id
    say(f"SIGKILLed worker {worker_id} while it generated {prediction_id}")
    _wait(
        lambda: (
            _count(
                engine,
                "SELECT count(*) FROM predictions WHERE id = :id AND attempts >= 2 AND worker_id <> :w",
                id=prediction_id,
                w=worker_id,
            )
            > 0
        ),
        "another worker to restart the killed worker's prediction",
        timeout_s=report.lease_s * 10 + 120,
    )
    report.death_to_restart_s = round(time.monotonic() - killed_at, 2)
    say(f"restarted elsewhere {report.death_to_restart_s} s after the kill")

    # 2. Restart PostgreSQL while predictions run and others wait, polling the API meanwhile.
    _wait(lambda: done() >= total * 2 // 5, "two fifths of the predictions to complete")
    answers: Counter[str] = Counter()
    probing = threading.Event()
    probe = threading.Thread(
        target=_probe_api, args=(cluster.apis[0].url, key, prediction_id, probing, answers), daemon=True
    )
    probing.set()
    probe.start()
    say("restarting PostgreSQL ...")
    report.postgres_outage_s = round(restart_server(), 2)
    time.sleep(2.0)
    probing.clear()
    probe.join(10)
    report.api_answers_during_restart = dict(answers)
    say(f"PostgreSQL back after {report.postgres_outage_s} s; API answers meanwhile: {dict(answers)}")

    # 3. Everything ends.
    for future in futures:
        future.result()
    pool.shutdown()
    _check(cluster, engine, report, outputs, gateway)


def _generating(engine: Any) -> tuple[str, str] | None:
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT worker_id, id FROM predictions WHERE status = 'processing' "
                    "AND progress > 0.1 AND progress < 0.6 ORDER BY started_at LIMIT 1"
                )
            ).first()
    except Exception:
        return None
    return (str(row[0]), str(row[1])) if row else None


def _probe_api(
    url: str, key: str, prediction_id: str, probing: threading.Event, answers: Counter[str]
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while probing.is_set():
        try:
            reply = httpx.get(f"{url}/api/v3/predictions/{prediction_id}/result", headers=headers, timeout=10)
            body = reply.json()
            envelope = set(body) == {"code", "message", "data"} and body["code"] == reply.status_code
            answers[f"{reply.status_code}{'' if envelope else ' (not in the envelope)'}"] += 1
        except Exception as exc:
            answers[type(exc).__name__] += 1
        time.sleep(0.05)


def _wait(condition: Callable[[], Any], what: str, timeout_s: float = 1800) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")


def _check(
    cluster: Cluster, engine: Any, report: DrillReport, outputs: dict[int, str], gateway: S3Gateway | None
) -> None:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM predictions")).all()
        left_in_queue = conn.execute(text("SELECT count(*) FROM procrastinate_jobs")).scalar()
    report.statuses = dict(Counter(status for _id, status in rows))
    report.lost = sorted(pid for pid, status in rows if status != "completed")
    if len(rows) != report.predictions:
        report.problems.append(f"{len(rows)} predictions stored, {report.predictions} submitted")
    if report.lost:
        report.problems.append(f"{len(report.lost)} predictions did not complete")
    if report.sdk_errors:
        report.problems.append(f"{len(report.sdk_errors)} SDK calls failed")
    if left_in_queue:
        report.problems.append(f"{left_in_queue} jobs left in procrastinate's queue")
    generations = cluster.generations()
    report.generated_more_than_once = {pid: n for pid, n in generations.items() if n > 1}
    missing = [pid for pid, _status in rows if generations[pid] == 0]
    if missing:
        report.problems.append(f"{len(missing)} completed predictions have no generation in the logs")
    if gateway is not None:
        report.output_objects = len(gateway.list_keys(f"{PREFIX}/outputs/"))
    else:
        report.output_objects = len(list((cluster.data_dir / "blobs" / "outputs").glob("*.mp4")))
    if report.output_objects != report.predictions:
        report.problems.append(f"{report.output_objects} output videos stored for {report.predictions}")
    if len(set(outputs.values())) != len(outputs):
        report.problems.append("two predictions returned the same output URL")
    for n, url in list(outputs.items())[:3]:  # a few videos, decoded back
        path = cluster.workdir / f"sample-{n}.mp4"
        path.write_bytes(httpx.get(url, timeout=60, follow_redirects=True).content)
        if probe_video(path).codec != "h264":
            report.problems.append(f"output {url} is not an H.264 video")
    statuses: Counter[str] = Counter()
    for line in cluster.server_errors():
        statuses[line.split('HTTP/1.1" ', 1)[1][:3]] += 1
    report.api_5xx_lines = dict(statuses)
    if set(statuses) - {"503"}:
        report.problems.append(f"the APIs answered 5xx other than 503: {dict(statuses)}")
    bad_probe = {
        answer: n for answer, n in report.api_answers_during_restart.items() if answer not in ("200", "503")
    }
    if bad_probe:
        report.problems.append(f"answers during the restart other than 200 or an enveloped 503: {bad_probe}")
    report.worker_tracebacks = sum(worker.log().count("Traceback") for worker in cluster.workers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=200)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--lease", type=float, default=5.0, help="REEL_LEASE_S for every process")
    parser.add_argument("--storage", choices=["s3", "local"], default="s3")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="reel-drill-"))
    report = run_drill(
        workdir,
        predictions=args.predictions,
        apis=args.apis,
        workers=args.workers,
        lease_s=args.lease,
        storage=args.storage,
    )
    summary = {**asdict(report), "passed": report.passed, "workdir": str(workdir)}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.keep and report.passed:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
