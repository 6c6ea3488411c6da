"""A worker process: the entry point behind ``reel worker`` and the one ``reel serve`` supervises.

A worker needs only the database and the blob store: run as many as there are GPUs, on any
machine that reaches both. ``REEL_WORKER_MODELS`` (``reel worker --models``) limits it to
some model ids, so that it only takes predictions for the models it has loaded.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from types import FrameType

from reel.backends.base import Backend
from reel.backends.build import build_backends
from reel.dispatch.table import make_worker_id
from reel.logs import setup_logging
from reel.settings import Settings
from reel.wiring import build_services
from reel.worker.housekeeping import Housekeeping
from reel.worker.metrics_server import sample_gpu_memory_forever, start_metrics_server
from reel.worker.presence import Presence
from reel.worker.runner import Worker
from reel.worker.webhooks import WebhookSender

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed ``reel serve`` leaves no orphan."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        log.warning("could not tie the worker's life to its parent (not Linux?)")


def requested_models(settings: Settings) -> list[str]:
    """The model ids ``REEL_WORKER_MODELS`` names (empty: all)."""
    return [model.strip() for model in settings.worker_models.split(",") if model.strip()]


def served_backends(settings: Settings) -> dict[str, Backend]:
    backends = build_backends(sandbox=settings.sandbox, settings=settings)
    wanted = requested_models(settings)
    if not wanted:
        return backends
    unknown = [model for model in wanted if model not in backends]
    if unknown:
        raise ValueError(
            f"--models: {', '.join(unknown)} not in the model registry; known: {', '.join(sorted(backends))}"
        )
    return {model: backends[model] for model in wanted}


def run_worker_process(settings: Settings, *, child_of_server: bool = False) -> None:
    setup_logging()
    if child_of_server:
        _die_with_parent()
    services = build_services(settings, run_migrations=not child_of_server)
    backends = served_backends(settings)
    # Before the worker announces itself: a port already taken stops it here, not half-started.
    metrics_server = None
    if settings.metrics_port is not None and not child_of_server:
        metrics_server = start_metrics_server(
            settings.metrics_host, settings.metrics_port, settings.metrics_token
        )
    worker_id = make_worker_id()
    worker = Worker(services, backends, worker_id)
    presence = Presence(services.sessions, worker_id, backends)
    presence.beat()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "worker %s: %s received, handing back any running prediction",
            worker_id,
            signal.Signals(signum).name,
        )
        worker.shutting_down.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=presence.run_forever, args=(stop,), name="presence", daemon=True),
        threading.Thread(
            target=WebhookSender(services.sessions, services.settings, worker_id).run_forever,
            args=(stop,),
            name="webhooks",
            daemon=True,
        ),
        threading.Thread(
            target=Housekeeping(
                services.files, services.retention, interval_s=settings.housekeeping_interval_s
            ).run_forever,
            args=(stop,),
            name="housekeeping",
            daemon=True,
        ),
    ]
    threads.append(
        threading.Thread(target=sample_gpu_memory_forever, args=(stop,), name="gpu-memory", daemon=True)
    )
    for thread in threads:
        thread.start()
    try:
        worker.run_forever()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        services.dispatcher.leave(worker_id)
        try:
            presence.leave()
        except Exception as exc:  # the database may be down at shutdown; the row expires anyway
            log.warning("worker %s: could not remove its presence row (%s)", worker_id, exc)
        log.info("worker %s stopped", worker_id)
