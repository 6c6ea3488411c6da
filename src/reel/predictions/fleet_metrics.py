"""``GET /metrics``: this process's metrics (or, under ``reel serve``, its API's and its worker's
added up) and what the database says at scrape time.

The database is the truth for the fleet's state: how many predictions wait and run per model,
and how many workers are alive per model, are read from it at each scrape, so every API
replica reports the same numbers (take ``max`` across replicas, not ``sum``). Counters and
histograms are per process (``reel.metrics``): Prometheus adds them up across targets.

Who may read it: loopback clients, and any client with ``Authorization: Bearer
REEL_METRICS_TOKEN`` when that is set (see :func:`may_scrape`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reel import metrics
from reel.catalog.registry import MODELS
from reel.lifecycle.states import Status
from reel.predictions.readiness import live_workers
from reel.store.tables import Prediction

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def may_scrape(client_host: str | None, authorization: str, token: str | None) -> bool:
    """Loopback clients may; others only with ``Authorization: Bearer <token>`` (when a token is
    set). Behind a reverse proxy on the same host, the proxy must pass the client's address
    (uvicorn honours ``X-Forwarded-For`` from 127.0.0.1), or every client looks local."""
    if token:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
    if not client_host:
        return False
    try:
        return ipaddress.ip_address(client_host).is_loopback
    except ValueError:
        return False


class FleetCollector(Collector):
    """Queue depth, running predictions and live workers per model, read when scraped."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self._sessions() as session:
            by_status = session.execute(
                select(Prediction.model, Prediction.status, func.count())
                .where(
                    Prediction.status.in_([Status.CREATED, Status.PROCESSING]),
                    Prediction.deleted_at.is_(None),
                )
                .group_by(Prediction.model, Prediction.status)
            ).all()
            workers = live_workers(session)
        counts = {(model, status): int(count) for model, status, count in by_status}
        alive = Counter(model for worker in workers for model in worker.models)
        # Every model of the catalog, so a queue that empties reads 0, not "no data".
        models = sorted({*MODELS, *(model for model, _status in counts), *alive})
        yield _gauge(
            "reel_queue_depth",
            "Predictions waiting for a worker, per model (from the database).",
            ((model, counts.get((model, Status.CREATED), 0)) for model in models),
        )
        yield _gauge(
            "reel_predictions_running",
            "Predictions a worker is running, per model (from the database).",
            ((model, counts.get((model, Status.PROCESSING), 0)) for model in models),
        )
        yield _gauge(
            "reel_workers_alive",
            "Worker processes alive (seen in the last 10 s) serving each model (from the database).",
            ((model, alive.get(model, 0)) for model in models),
        )


def _gauge(name: str, documentation: str, samples: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["model"])
    for model, value in samples:
        family.add_metric([model], value)
    return family


class _ProcessMetrics(Collector):
    """This process's own metrics (the default registry), when it is alone."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class MetricsService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._fleet = FleetCollector(sessions)

    def render(self) -> bytes:
        """The exposition text: the processes' metrics, then the fleet's from the database."""
        registry = CollectorRegistry(auto_describe=False)
        directory = metrics.multiprocess_dir()
        if directory is not None:
            MultiProcessCollector(registry, path=directory)
        else:
            registry.register(_ProcessMetrics())
        registry.register(self._fleet)
        return generate_latest(registry)
