"""The real app, driven in-process: no ``reel serve``, no socket, milliseconds per request.

For tests of validation and rendering (status codes, error shapes, bodies, served files). What
needs a process boundary (the SDKs, signals, crashes, scale-out, the browser) stays on
``support.server.LiveServer``.

The app is assembled as ``reel serve`` assembles it: ``build_services(settings)`` on a fresh
data dir, then ``create_app(services, companion=...)``, whose lifespan starts and stops the
worker. ``public_base`` is ``http://127.0.0.1:<port>`` as for a live server, so the URLs the API
hands out are absolute; the clients given here answer every URL from the app, so following them
works, but nothing listens on that port.

Requests go through ``httpx.ASGITransport`` on an event loop in a thread of its own, behind a
plain ``httpx.Client``: tests stay synchronous, and a streamed request body (``content=`` an
iterator) reaches the app chunk by chunk, as it would over a socket (Starlette's ``TestClient``
reads it into one message, which would hide how the body limits count).

Two things stand in for a live server's log:

* every response passes one check: a 5xx fails the test at the request that got it, unless the
  test wraps the request in :meth:`InProcessReel.expecting_server_errors`;
* the ``reel`` loggers' records (INFO and up, API and worker alike) are kept for
  :meth:`InProcessReel.log`, for tests that wait for what the worker says.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from reel.api.app import create_app
from reel.backends.build import build_backends
from reel.dispatch.table import make_worker_id
from reel.settings import Settings
from reel.wiring import Services, build_services
from reel.worker.presence import Presence
from reel.worker.runner import Worker
from support.server import free_port

WORKER_JOIN_S = 20.0


# --- requests ---------------------------------------------------------------------------------


class _StreamedBody(httpx.AsyncByteStream):
    """A sync client's request body, handed to the app one chunk at a time as it asks."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._stream:
            yield chunk


class _BlockingASGITransport(httpx.BaseTransport):
    """``httpx.ASGITransport`` for a sync ``httpx.Client``: each request runs on ``portal``'s loop."""

    def __init__(self, app: FastAPI, portal: BlockingPortal) -> None:
        # An app error is a 500 response (logged by reel.api.errors), which the 5xx check reports.
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._handle, request)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, stream=_StreamedBody(request.stream)
        )
        response = await self._asgi.handle_async_request(forwarded)
        body = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(body))


# --- the log ----------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _reel_log() -> Iterator[_Records]:
    """Keep the ``reel`` loggers' INFO records (``reel serve`` logs at INFO in the tests too)."""
    logger = logging.getLogger("reel")
    records = _Records()
    level = logger.level
    logger.addHandler(records)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


# --- the worker -------------------------------------------------------------------------------


class InProcessWorker:
    """The worker ``reel serve`` supervises, as threads of this process, started and stopped by
    the app's lifespan (it is the app's companion, so ``/readyz`` expects it as it expects the
    supervised process). Like that process it builds its own ``Services`` on the same database
    and serves every model with the sandbox; it runs the generation loop and the presence
    heartbeat, not the webhook sender or housekeeping (tests that need those use a live server).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._services: Services | None = None
        self._worker: Worker | None = None
        self._presence: Presence | None = None

    def start(self) -> None:
        # The one place the tests' in-process worker is put together: adapt it here when
        # reel.worker.runner.Worker's constructor changes.
        services = build_services(self._settings, run_migrations=False)
        backends = build_backends(sandbox=True)
        worker_id = make_worker_id()
        self._services = services
        self._worker = Worker(services, backends, worker_id)
        self._presence = Presence(services.sessions, worker_id, backends)
        self._presence.beat()  # ready before the first request, as `reel serve` waits for it
        self._threads = [
            threading.Thread(target=self._presence.run_forever, args=(self._stop,), name="presence"),
            threading.Thread(target=self._worker.run_forever, name=f"worker {worker_id}"),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        assert self._services is not None and self._worker is not None and self._presence is not None
        self._worker.shutting_down.set()  # as on SIGTERM: a running prediction is handed back
        self._stop.set()
        for thread in self._threads:
            thread.join(WORKER_JOIN_S)
            assert not thread.is_alive(), f"{thread.name} did not stop in {WORKER_JOIN_S} s"
        self._services.dispatcher.leave(self._worker.worker_id)
        self._presence.leave()
        self._services.engine.dispose()


# --- the app ----------------------------------------------------------------------------------


class InProcessReel:
    """The app and its data dir; :meth:`client` gives HTTP clients, :meth:`create_key` keys.

    ``url``, ``port``, ``data_dir`` and ``log()`` mean what they mean on ``LiveServer``.
    """

    def __init__(self, services: Services, app: FastAPI, portal: BlockingPortal, records: _Records) -> None:
        self.services = services
        self.app = app
        self._portal = portal
        self._records = records
        self._expected_5xx = 0
        self.server_errors: list[str] = []
        """5xx responses no test expected (each also failed the request that got it)."""

    @property
    def url(self) -> str:
        return self.services.settings.public_base

    @property
    def port(self) -> int:
        return self.services.settings.port

    @property
    def data_dir(self) -> Path:
        return self.services.settings.data_dir

    def create_key(self, name: str = "test") -> str:
        plaintext, _info = self.services.keys.create(name)
        return plaintext

    def client(self, key: str | None = None) -> httpx.Client:
        """A client of the app (``Authorization: Bearer key`` on every request, if ``key``).
        Absolute URLs work with any host: they all reach the app."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            transport=_BlockingASGITransport(self.app, self._portal),
            base_url=self.url,
            headers=headers,
            event_hooks={"request": [self._mark_log], "response": [self._refuse_server_errors]},
        )

    @contextmanager
    def expecting_server_errors(self) -> Iterator[None]:
        """Let 5xx answers through, for a test that provokes one on purpose."""
        self._expected_5xx += 1
        try:
            yield
        finally:
            self._expected_5xx -= 1

    def log(self) -> str:
        return "\n".join(self._records.lines)

    def _mark_log(self, request: httpx.Request) -> None:
        request.extensions["reel_log_mark"] = len(self._records.lines)

    def _refuse_server_errors(self, response: httpx.Response) -> None:
        if response.status_code < 500 or self._expected_5xx:
            return
        response.read()
        request = response.request
        failure = f"{request.method} {request.url} -> {response.status_code} {response.text}"
        self.server_errors.append(failure)
        logged = self._records.lines[request.extensions["reel_log_mark"] :]
        errors = [line for line in logged if line.startswith(("ERROR", "CRITICAL"))]
        raise AssertionError("the app answered with a 5xx:\n" + "\n".join([failure, *errors]))


@contextmanager
def in_process_reel(data_dir: Path, *, worker: bool = True, **settings: Any) -> Iterator[InProcessReel]:
    """The app on ``data_dir`` (SQLite, local blobs), with an in-process sandbox worker unless
    ``worker=False`` (as ``reel serve --no-worker``). ``settings`` override ``REEL_*``; on leaving,
    fails if any 5xx went unexpected."""
    config = Settings(data_dir=data_dir, sandbox=True, host="127.0.0.1", port=free_port(), **settings)
    services = build_services(config)
    app = create_app(services, companion=InProcessWorker(config) if worker else None)
    with ExitStack() as stack:
        records = stack.enter_context(_reel_log())
        portal = stack.enter_context(start_blocking_portal())
        stack.callback(services.engine.dispose)
        stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        reel = InProcessReel(services, app, portal, records)
        yield reel
    assert not reel.server_errors, "requests answered with 5xx:\n" + "\n".join(reel.server_errors)
