"""Submit → delete and submit → cancel, at random moments, against a real `reel serve --sandbox`.

    .venv/bin/python bench/submit_delete_storm.py [--rounds 1000] [--clients 4] [--seed 1]
        [--max-wait-ms 300] [--late-wait-ms 8000] [--json FILE] [--workdir DIR] [--keep]

starts `reel serve --sandbox` on a free port with a data dir of its own (SQLite, local disk);

    .venv/bin/python bench/submit_delete_storm.py --server http://127.0.0.1:8000 --key rk_... \\
        --data-dir ./data [--server-log serve.log]

drives one that is already running (`make serve`, sandbox backend; `make serve 2>&1 | tee
serve.log` gives the log to check the worker's exits in). It must be otherwise idle: every
blob that appears under the data dir during the storm is judged.

Each round submits one 1:1 prediction and then deletes it or cancels it (a coin toss) at a
random moment, one of:

- ``queued`` (3 in 10): 0..max-wait ms after the submit answered (waiting, or being claimed);
- ``claimed`` (2 in 10): as soon as a poll (every 5 ms) reads it ``processing``: between the
  claim and the read of its input, the race that used to kill the worker;
- ``running`` (4 in 10): 0..max-wait ms after a poll (every 25 ms) first reads it
  ``processing``: the read of its input and the first steps;
- ``late`` (1 in 10): 0..late-wait ms after it reads ``processing``: the last steps, the
  encoder's flush, the safety check and the write of the output.

``--clients`` rounds run at once. Afterwards it waits until every prediction of a cancel
round has ended (``--settle-s``) and checks, exiting 1 on any violation:

- worker exits in the server log (``worker process … exited with code``): 0, and for a server
  it started, the worker pid is the one it started with;
- predictions that never ended (a cancelled round's still ``created``/``processing``, or a
  deleted one still readable): 0;
- orphan blobs: files under the data dir's ``blobs/`` that were not there before and that no
  surviving prediction owns (its input, its output): 0; and no survivor's blob missing;
- scratch files left (``blobs/.scratch``, ``scratch/``): 0;
- predictions generated more than once (``generation finished`` lines): 0;
- 5xx answers to the storm's requests, and survivors that ended ``failed`` (no round asks for
  a failure): 0.

Results go to docs/faults.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.faults import blob_files, expected_blobs, generations, scratch_files, tracebacks, worker_exits
from support.media import png_base64
from support.server import LiveServer, create_key

MODEL = "runwayml/gen4-turbo"
POLL_S = {"claimed": 0.005, "running": 0.025, "late": 0.025}
START_TIMEOUT_S = 300.0
"""How long a round waits to read ``processing`` (a worker in restart backoff is slow)."""
MOMENT_WEIGHTS = {"queued": 3, "claimed": 2, "running": 4, "late": 1}


@dataclass
class Round:
    number: int
    action: str
    moment: str
    wait_ms: float
    prediction_id: str = ""
    seen_processing: bool | None = None
    """For ``running``/``late`` rounds: whether a poll read ``processing`` before the action."""
    answer: str = ""
    """The action's HTTP status, and for a cancel the status it reported: ``200 cancelled``."""
    error: str = ""


@dataclass
class StormReport:
    rounds: int
    clients: int
    seed: int
    max_wait_ms: float
    late_wait_ms: float
    server: str = ""
    wall_s: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    """``action moment answer`` → rounds."""
    round_errors: list[str] = field(default_factory=list)
    http_5xx: int = 0
    survivors: dict[str, int] = field(default_factory=dict)
    """Final status → predictions of cancel rounds."""
    failed_survivors: list[str] = field(default_factory=list)
    never_ended: list[str] = field(default_factory=list)
    deleted_but_readable: list[str] = field(default_factory=list)
    blobs_before: int = 0
    blobs_after: int = 0
    blobs_expected_after: int = 0
    orphan_blobs: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    scratch_left: list[str] = field(default_factory=list)
    worker_exits: list[str] | None = None
    """None when there was no server log to read."""
    worker_pid_changed: bool | None = None
    generated_more_than_once: dict[str, int] = field(default_factory=dict)
    generations_finished: int | None = None
    tracebacks: int | None = None
    violations: list[str] = field(default_factory=list)


class Storm:
    def __init__(self, base_url: str, key: str, args: argparse.Namespace) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.args = args
        self.image = png_base64()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.http_5xx = 0
        self.done = 0

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30)
            self._local.client = client
        return client

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reply = self._client().request(method, path, **kwargs)
        if reply.status_code >= 500:
            with self._lock:
                self.http_5xx += 1
        return reply

    def status(self, prediction_id: str) -> str | None:
        """The prediction's status, or None once it is deleted."""
        reply = self._send("GET", f"/api/v3/predictions/{prediction_id}/result")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        status: str = reply.json()["data"]["status"]
        return status

    def plan(self, number: int) -> Round:
        rng = random.Random(f"{self.args.seed}:{number}")
        action = rng.choice(["delete", "cancel"])
        weights = self.args.moments
        moment = rng.choices(list(weights), weights=list(weights.values()))[0]
        ceiling = {"claimed": 0.0, "late": self.args.late_wait_ms}.get(moment, self.args.max_wait_ms)
        return Round(number, action, moment, round(rng.uniform(0, ceiling), 1))

    def run_round(self, number: int) -> Round:
        planned = self.plan(number)
        try:
            self._run(planned)
        except Exception as exc:  # reported as a violation, the storm goes on
            planned.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.done += 1
            if self.done % 50 == 0:
                print(f"  {self.done} rounds done", file=sys.stderr, flush=True)
        return planned

    def _run(self, planned: Round) -> None:
        body = {"prompt": f"storm round {planned.number}", "image": self.image, "aspect_ratio": "1:1"}
        reply = self._send("POST", f"/api/v3/{MODEL}", json=body)
        reply.raise_for_status()
        planned.prediction_id = prediction_id = reply.json()["data"]["id"]
        if planned.moment != "queued":
            deadline = time.monotonic() + START_TIMEOUT_S
            while (status := self.status(prediction_id)) == "created" and time.monotonic() < deadline:
                time.sleep(POLL_S[planned.moment])
            planned.seen_processing = status == "processing"
        if planned.wait_ms:
            time.sleep(planned.wait_ms / 1000)
        if planned.action == "delete":
            reply = self._send("DELETE", f"/api/v3/predictions/{prediction_id}")
            planned.answer = str(reply.status_code)
        else:
            reply = self._send("POST", f"/api/v3/predictions/{prediction_id}/cancel")
            data = reply.json().get("data") or {}
            planned.answer = f"{reply.status_code} {data.get('status', '')}".strip()

    def settle(self, rounds: list[Round], report: StormReport) -> list[dict[str, Any]]:
        """Wait for every cancel round's prediction to end; check that deleted ones are gone.
        Returns the survivors' final states."""
        deadline = time.monotonic() + self.args.settle_s
        survivors: list[dict[str, Any]] = []
        for planned in rounds:
            if not planned.prediction_id:
                continue
            if planned.action == "delete":
                if self.status(planned.prediction_id) is not None:
                    report.deleted_but_readable.append(planned.prediction_id)
                continue
            while True:
                reply = self._send("GET", f"/api/v3/predictions/{planned.prediction_id}/result")
                reply.raise_for_status()
                data: dict[str, Any] = reply.json()["data"]
                if data["status"] in {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if data["status"] not in {"completed", "failed", "cancelled"}:
                report.never_ended.append(f"{planned.prediction_id} ({data['status']})")
                continue
            survivors.append(data)
            if data["status"] == "failed":
                report.failed_survivors.append(f"{planned.prediction_id}: {data['error']}")
        return survivors


def _wait_for_tidy(data_dir: Path, allowed: set[str], scratch_before: set[str], timeout_s: float) -> None:
    """The worker tidies up moments after the last status change: give it ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if blob_files(data_dir) <= allowed and scratch_files(data_dir) <= scratch_before:
            return
        time.sleep(0.2)


def run_storm(args: argparse.Namespace, say: Any = print) -> StormReport:
    report = StormReport(args.rounds, args.clients, args.seed, args.max_wait_ms, args.late_wait_ms)
    server: LiveServer | None = None
    if args.server:
        base_url, key, data_dir = args.server.rstrip("/"), args.key, Path(args.data_dir)
        log_path = Path(args.server_log) if args.server_log else None
    else:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="reel-storm-"))
        data_dir = workdir / "data"
        server = LiveServer(data_dir).start("--sandbox")
        key = create_key(data_dir, "storm")
        base_url, log_path = server.url, server.log_path
        say(f"started reel serve --sandbox at {base_url}, data dir {data_dir}")
    report.server = base_url
    log_offset = log_path.stat().st_size if log_path and log_path.exists() else 0
    worker_pids = server.worker_pids() if server else []
    blobs_before = blob_files(data_dir)
    scratch_before = scratch_files(data_dir)
    report.blobs_before = len(blobs_before)

    storm = Storm(base_url, key, args)
    started = time.monotonic()
    try:
        say(f"{args.rounds} rounds, {args.clients} clients at once (seed {args.seed})")
        with ThreadPoolExecutor(args.clients) as pool:
            rounds = list(pool.map(storm.run_round, range(args.rounds)))
        say("all rounds sent; waiting for the survivors to end")
        survivors = storm.settle(rounds, report)
        owned = expected_blobs(survivors)
        _wait_for_tidy(data_dir, blobs_before | owned, scratch_before, timeout_s=30)
        report.wall_s = round(time.monotonic() - started, 1)

        after = blob_files(data_dir)
        report.blobs_after = len(after)
        report.blobs_expected_after = len(blobs_before | owned)
        report.orphan_blobs = sorted(after - blobs_before - owned)
        report.missing_blobs = sorted(owned - after)
        report.scratch_left = sorted(scratch_files(data_dir) - scratch_before)
        report.answers = dict(sorted(Counter(f"{r.action} {r.moment} {r.answer}" for r in rounds).items()))
        report.round_errors = [f"round {r.number}: {r.error}" for r in rounds if r.error]
        report.survivors = dict(Counter(s["status"] for s in survivors))
        report.http_5xx = storm.http_5xx
        if server is not None:
            report.worker_pid_changed = server.worker_pids() != worker_pids
        if log_path is not None and log_path.exists():
            with open(log_path, "rb") as handle:
                handle.seek(log_offset)
                log = handle.read().decode(errors="replace")
            report.worker_exits = worker_exits(log)
            counts = generations(log)
            report.generations_finished = sum(counts.values())
            report.generated_more_than_once = {pid: n for pid, n in counts.items() if n > 1}
            report.tracebacks = tracebacks(log)
    finally:
        if server is not None:
            server.stop()
    report.violations = _violations(report)
    if server is not None and not report.violations and not args.keep:
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    elif server is not None:
        say(f"kept {data_dir.parent} (server log {log_path})")
    return report


def _violations(report: StormReport) -> list[str]:
    found = []
    checks = [
        (len(report.worker_exits or []), "worker exits in the server log"),
        (int(bool(report.worker_pid_changed)), "worker process replaced"),
        (len(report.never_ended), "predictions that never ended"),
        (len(report.deleted_but_readable), "deleted predictions still readable"),
        (len(report.orphan_blobs), "orphan blobs"),
        (len(report.missing_blobs), "survivors' blobs missing"),
        (len(report.scratch_left), "scratch files left"),
        (len(report.generated_more_than_once), "predictions generated more than once"),
        (report.http_5xx, "5xx answers"),
        (len(report.failed_survivors), "survivors that failed"),
        (len(report.round_errors), "rounds that raised"),
    ]
    for count, what in checks:
        if count:
            found.append(f"{count} {what}")
    return found


def _print(report: StormReport) -> None:
    print(f"\nserver {report.server}: {report.rounds} rounds, {report.clients} clients, {report.wall_s} s")
    print("answers (action, moment, HTTP status and the status a cancel reported):")
    for what, count in report.answers.items():
        print(f"  {what}: {count}")
    print(f"survivors (cancel rounds) by final status: {report.survivors}")
    exits = "not checked (no server log)" if report.worker_exits is None else len(report.worker_exits)
    print(f"worker exits in the server log: {exits}")
    for line in report.worker_exits or []:
        print(f"  {line}")
    if report.worker_pid_changed is not None:
        print(f"worker process replaced: {report.worker_pid_changed}")
    print(f"predictions that never ended: {len(report.never_ended)}")
    print(f"deleted predictions still readable: {len(report.deleted_but_readable)}")
    print(
        f"blob files under blobs/: {report.blobs_before} before, {report.blobs_after} after "
        f"({report.blobs_expected_after} expected: the survivors' inputs and outputs)"
    )
    print(f"orphan blobs: {len(report.orphan_blobs)}; survivors' blobs missing: {len(report.missing_blobs)}")
    for name in report.orphan_blobs[:20] + report.missing_blobs[:20]:
        print(f"  {name}")
    print(f"scratch files left: {len(report.scratch_left)}")
    for name in report.scratch_left[:20]:
        print(f"  {name}")
    if report.generations_finished is not None:
        print(
            f"generations run to their end: {report.generations_finished}; "
            f"more than once: {len(report.generated_more_than_once)}"
        )
        print(f"tracebacks in the server log: {report.tracebacks}")
    print(f"5xx answers: {report.http_5xx}; survivors that failed: {len(report.failed_survivors)}")
    for line in report.failed_survivors[:10] + report.round_errors[:10]:
        print(f"  {line}")
    print("PASS" if not report.violations else "FAIL: " + "; ".join(report.violations))


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in MOMENT_WEIGHTS:
            raise argparse.ArgumentTypeError(
                f"unknown moment {name!r}; the moments: {', '.join(MOMENT_WEIGHTS)}"
            )
        weights[name.strip()] = float(weight or 1)
    return weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="rounds running at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=300.0, help="queued and running rounds")
    parser.add_argument("--late-wait-ms", type=float, default=8000.0, help="late rounds")
    parser.add_argument(
        "--moments",
        type=_weights,
        default=MOMENT_WEIGHTS,
        help="relative weights of the moments, e.g. queued=1,claimed=1 (default: %(default)s)",
    )
    parser.add_argument("--settle-s", type=float, default=300.0, help="for survivors to end")
    parser.add_argument("--server", help="URL of a running reel serve (default: start one)")
    parser.add_argument("--key", help="API key for --server")
    parser.add_argument("--data-dir", help="data dir of --server")
    parser.add_argument("--server-log", help="log of --server, to count worker exits in")
    parser.add_argument("--workdir", help="where a started server keeps its data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep a started server's data dir")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    if args.server and not (args.key and args.data_dir):
        parser.error("--server needs --key and --data-dir")
    report = run_storm(args)
    _print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
