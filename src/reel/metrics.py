"""The process's Prometheus metrics: what each process observes as it works.

Counted where things happen: the HTTP middleware (``reel.api.metrics``) times requests, the
lifecycle (``reel.lifecycle.transitions``) counts predictions as they end and times their wait
and their run, the worker samples its GPU memory. What the database knows at scrape time (the
queue, the workers alive) is read then, by ``reel.predictions.fleet_metrics``, not kept here.

``reel serve`` runs the API and a worker in two processes: :func:`use_multiprocess_dir` makes
both write their values to files in one directory (prometheus-client's multiprocess mode) that
``/metrics`` adds up. A ``reel worker`` on its own keeps them in memory and serves them itself.

No label ever holds a key, a prompt or a prediction id: labels are model ids, final statuses,
route templates and HTTP methods and statuses, all from small fixed sets.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Generation takes seconds (the sandbox) to many minutes (14B models on one GPU).
RUN_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 90)

# Every metric has labels, so its values are made at ``.labels()`` time with the value class
# in force then: use_multiprocess_dir may come after this module is imported.
PREDICTIONS_ENDED = Counter(
    "reel_predictions",
    "Predictions that ended, by model and final status (completed, failed, cancelled).",
    ["model", "status"],
)
PREDICTION_DURATION = Histogram(
    "reel_prediction_duration_seconds",
    "From a prediction's start on a worker to its end, for those a worker completed or failed.",
    ["model"],
    buckets=RUN_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "reel_queue_wait_seconds",
    "From a prediction's creation to its start on a worker (observed at each start from waiting).",
    ["model"],
    buckets=WAIT_BUCKETS,
)
HTTP_DURATION = Histogram(
    "reel_http_request_duration_seconds",
    "HTTP requests by method, route template (unmatched: no route) and status, until the answer's end.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
GPU_MEMORY_ALLOCATED = Gauge(
    "reel_gpu_memory_allocated_bytes",
    "GPU memory held by tensors in a worker process (torch.cuda.memory_allocated).",
    ["device"],
    multiprocess_mode="liveall",
)
GPU_MEMORY_RESERVED = Gauge(
    "reel_gpu_memory_reserved_bytes",
    "GPU memory a worker process's caching allocator holds (torch.cuda.memory_reserved).",
    ["device"],
    multiprocess_mode="liveall",
)


def serve_dir(data_dir: Path) -> Path:
    """This ``reel serve``'s metrics directory, ``metrics/serve-<pid>`` in the data dir (API
    replicas may share one data dir). Directories of servers no longer running are removed."""
    base = data_dir / "metrics"
    if base.is_dir():
        for old in base.glob("serve-*"):
            pid = old.name.removeprefix("serve-")
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    return base / f"serve-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_multiprocess_dir(directory: Path) -> None:
    """Make this process and the processes it starts afterwards (they inherit the environment)
    keep their metric values in files under ``directory``, emptied first: values from an earlier
    run must not be added to this one's."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def forget_process(pid: int) -> None:
    """A process that wrote to the multiprocess directory exited: drop its live gauges (its
    counters and histograms stay in the sums, as they should)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
