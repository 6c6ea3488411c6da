"""Keeps ``reel serve``'s worker alive in a child process.

The worker runs in its own process so that a crash in model code (or a segfault in a
native library) never takes the API down; the supervisor restarts it with backoff.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from multiprocessing.process import BaseProcess
from typing import Any

from reel.settings import Settings

log = logging.getLogger(__name__)


def _child_main(settings_data: dict[str, Any]) -> None:
    from reel.worker.process import run_worker_process

    run_worker_process(Settings(**settings_data), child_of_server=True)


class WorkerSupervisor:
    def __init__(self, settings: Settings) -> None:
        self._settings_data = settings.model_dump()
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=_child_main, args=(self._settings_data,), name="reel-worker", daemon=False
        )
        self._process.start()
        log.info("worker process started (pid %s)", self._process.pid)

    def _watch(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            assert self._process is not None
            self._process.join(timeout=0.5)
            if self._stop.is_set() or self._process.is_alive():
                continue
            log.error(
                "worker process %s exited with code %s; restarting in %.0f s",
                self._process.pid,
                self._process.exitcode,
                delay,
            )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        process = self._process
        if process is None or not process.is_alive():
            return
        process.terminate()  # SIGTERM: the worker hands back its prediction and exits
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
