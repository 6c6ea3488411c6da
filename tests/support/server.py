"""Start a real ``reel serve`` process on loopback, as a user would, and stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REEL = [sys.executable, "-m", "reel.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_key(data_dir: Path, name: str = "test") -> str:
    out = subprocess.run(
        [*REEL, "keys", "create", "--name", name, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1, f"keys create must print the key alone on stdout, got {out.stdout!r}"
    return lines[0]


@dataclass
class LiveServer:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra_args: str, wait_ready: bool = True) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        env = {**os.environ, "REEL_LOG_LEVEL": "INFO", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it for its life
        self.process = subprocess.Popen(
            [*REEL, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *extra_args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes this server supervises (its children)."""
        assert self.process is not None
        # Children are listed per thread: the supervisor thread restarts workers.
        tasks = Path(f"/proc/{self.process.pid}/task").glob("*/children")
        pids = [int(p) for task in tasks for p in task.read_text().split()]
        # multiprocessing's resource tracker is a child too; the worker is the spawned one.
        return [pid for pid in pids if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing gets to clean up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def server_errors(self) -> list[str]:
        """Access-log lines for 5xx responses (bar readiness saying "not yet", which is its job)."""
        return [
            line
            for line in self.log().splitlines()
            if re.search(r'HTTP/1\.1" 5\d\d', line) and '"GET /readyz' not in line
        ]
