"""Keeps ``reel serve``'s worker alive in a child process.

The worker runs in its own process so that a crash in model code (or a segfault in a
native library) never takes the API down; the supervisor restarts it with backoff.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from reel import metrics
from reel.settings import Settings

log = logging.getLogger(__name__)

ChildTarget = Callable[[dict[str, Any]], None]
"""What the child process runs, given the settings as a plain dict (it must be picklable)."""


def _child_main(settings_data: dict[str, Any]) -> None:
    from reel.worker.process import run_worker_process

    run_worker_process(Settings(**settings_data), child_of_server=True)


class WorkerSupervisor:
    """Runs ``target`` in a spawned child process and restarts it whenever it exits.

    Restarts back off: ``first_delay_s`` after the first crash, doubling with each crash in a
    row up to ``max_delay_s``, so a worker that dies at start-up does not spin. A worker that
    had run for ``healthy_after_s`` before it exited was healthy: its crash starts the backoff
    again from ``first_delay_s``, so a server that survived a bad spell long ago restarts its
    worker promptly. ``target`` (the real worker by default) is a parameter for tests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        target: ChildTarget = _child_main,
        first_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self._settings_data = settings.model_dump()
        self._target = target
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._healthy_after_s = healthy_after_s
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._started_at = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # stop() never misses a child spawned as it runs
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=self._target, args=(self._settings_data,), name="reel-worker", daemon=False
        )
        self._started_at = time.monotonic()
        self._process.start()
        log.info("worker process started (pid %s)", self._process.pid)

    def _watch(self) -> None:
        delay = self._first_delay_s
        while not self._stop.is_set():
            assert self._process is not None
            self._process.join(timeout=0.5)
            if self._stop.is_set() or self._process.is_alive():
                continue
            metrics.forget_process(self._process.pid or 0)
            ran_s = time.monotonic() - self._started_at
            if ran_s >= self._healthy_after_s:
                delay = self._first_delay_s
            log.error(
                "worker process %s exited with code %s after %.1f s; restarting in %.3g s",
                self._process.pid,
                self._process.exitcode,
                ran_s,
                delay,
            )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._max_delay_s)
            with self._lock:
                if self._stop.is_set():
                    return
                self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        with self._lock:
            self._stop.set()
            process = self._process
        if process is None or not process.is_alive():
            return
        process.terminate()  # SIGTERM: the worker hands back its prediction and exits
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
        metrics.forget_process(process.pid or 0)
