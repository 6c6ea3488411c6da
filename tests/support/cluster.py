"""A scale-out deployment on loopback: API replicas (``reel serve --no-worker``) and workers
(``reel worker``) as real processes sharing one PostgreSQL database and one blob store.

Used by the scale-out tests and by ``bench/fault_drill.py``::

    cluster = Cluster(workdir, env={"REEL_DATABASE_URL": url, **s3_env})
    cluster.start(apis=2, workers=3)
    key = cluster.create_key()
    ... cluster.apis[0].url ... cluster.workers[1].kill() ...
    cluster.stop()

Every process logs to its own file under ``workdir``; ``generations()`` reads the workers'
logs for the generations that ran to their end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.server import REEL, LiveServer

MODEL = "runwayml/gen4-turbo"
FINISHED = re.compile(r"prediction ([0-9a-f]{32}): generation finished \(attempt (\d+)\)")


@dataclass
class WorkerProcess:
    data_dir: Path
    env: dict[str, str]
    number: int
    models: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"worker-{self.number}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [*REEL, "worker", "--data-dir", str(self.data_dir), "--sandbox"]
        if self.models:
            args += ["--models", self.models]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it for its life
        self.process = subprocess.Popen(
            args,
            env={**os.environ, "REEL_LOG_LEVEL": "INFO", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost machine would: nothing gets to clean up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the worker hands back its prediction), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    """REEL_DATABASE_URL (PostgreSQL), storage, lease ... for every process."""
    apis: list[LiveServer] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def start(self, *, apis: int, workers: int, models: str | None = None, timeout_s: float = 90) -> Cluster:
        """Start the API replicas and the workers at once (they race to migrate the schema),
        and wait until every API answers and every worker has announced itself."""
        self.apis = [LiveServer(self.data_dir, env=self.env) for _ in range(apis)]
        for api in self.apis:
            api.start("--no-worker", wait_ready=False)
        for _ in range(workers):
            self.add_worker(models)
        for api in self.apis:
            api.wait_ready(timeout_s)
        self.wait_for_workers(workers, timeout_s)
        return self

    def add_worker(self, models: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(self.data_dir, self.env, len(self.workers) + 1, models).start()
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.alive():
                    raise RuntimeError(f"worker {worker.number} exited:\n{worker.log()[-4000:]}")
            models = httpx.get(f"{self.apis[0].url}/api/v3/models", timeout=10).json()["data"]
            if max(item["workers"] for item in models) >= count:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{count} workers did not announce themselves in {timeout_s} s")

    def create_key(self, name: str = "cluster") -> str:
        out = subprocess.run(
            [*REEL, "keys", "create", "--name", name, "--data-dir", str(self.data_dir)],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def worker_holding(self, worker_id: str) -> WorkerProcess | None:
        """The worker process whose id (``host:pid:random``) is ``worker_id``."""
        pid = int(worker_id.split(":")[1])
        return next((w for w in self.workers if w.process is not None and w.pid == pid), None)

    def generations(self) -> Counter[str]:
        """How many times each prediction's generation ran to its end, over every worker."""
        counts: Counter[str] = Counter()
        for worker in self.workers:
            counts.update(match.group(1) for match in FINISHED.finditer(worker.log()))
        return counts

    def server_errors(self) -> list[str]:
        return [line for api in self.apis for line in api.server_errors()]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for api in self.apis:
            api.stop()
