"""The LISTEN thread: wakes idle workers when a job is queued, and flags a running claim the
moment its abort is requested."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection

import psycopg
from procrastinate.manager import get_channel_for_queues
from psycopg import sql as pg_sql

from reel.store.db import CONNECT_TIMEOUT_S

log = logging.getLogger(__name__)

LISTEN_TICK_S = 1.0
"""How often the listener looks for new queues to LISTEN to."""


class JobListener:
    """One dedicated connection LISTENing to procrastinate's channels of the queues asked for.

    ``on_abort(job_id)`` is called for each abort notification; ``on_lost()`` when the
    connection breaks (the dispatcher then stops trusting its view of the database). ``wake``
    is set for every queued job, and whenever notifications may have been missed.
    """

    def __init__(self, conninfo: str, on_abort: Callable[[int], None], on_lost: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._on_abort = on_abort
        self._on_lost = on_lost
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._queues: set[str] = set()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def listen_to(self, queues: Collection[str]) -> None:
        """Add ``queues`` to those listened to, starting the thread if it is not running."""
        with self._lock:
            self._queues.update(queues)
            self._closing.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen_forever, name="job-notifications", daemon=True
                )
                self._thread.start()

    def stop(self, *, wait: bool = False) -> None:
        self._closing.set()
        thread = self._thread
        if wait and thread is not None:
            thread.join(timeout=LISTEN_TICK_S * 3)

    def _listen_forever(self) -> None:
        backoff = 0.5
        while not self._closing.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    backoff = 0.5
                    listening: set[str] = set()
                    # Jobs inserted while nobody listened are fetched now.
                    self.wake.set()
                    while not self._closing.is_set():
                        with self._lock:
                            wanted = set(self._queues)
                        for queue in sorted(wanted - listening):
                            for channel in get_channel_for_queues([queue]):
                                conn.execute(pg_sql.SQL("LISTEN {}").format(pg_sql.Identifier(channel)))
                            listening.add(queue)
                        for notification in conn.notifies(timeout=LISTEN_TICK_S):
                            self._on_notification(notification.payload)
            except psycopg.Error as exc:
                self._on_lost()
                self.wake.set()  # poll instead while the notifications are down
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("job notifications lost (%s); reconnecting in %.1f s", first_line, backoff)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _on_notification(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("type") == "job_inserted":
            self.wake.set()
        elif message.get("type") == "abort_job_requested":
            self._on_abort(int(message.get("job_id", 0)))
