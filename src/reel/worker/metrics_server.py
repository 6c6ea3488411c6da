"""A worker's own metrics: its GPU memory, sampled, and (``reel worker --metrics-port``) a
``/metrics`` endpoint of its own for Prometheus to scrape in a scale-out fleet.

Under ``reel serve`` the worker serves nothing itself: its values go to the server's
multiprocess directory and the API's ``/metrics`` adds them up (``reel.metrics``).
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from reel import metrics
from reel.predictions.fleet_metrics import may_scrape
from reel.worker.periodic import every

log = logging.getLogger(__name__)

GPU_SAMPLE_S = 5.0


def sample_gpu_memory(torch: Any | None = None) -> int:
    """Set the GPU memory gauges for each CUDA device this process uses; returns how many.

    Only where torch is already loaded and has already set CUDA up: a sandbox worker never
    imports torch for this, and asking an unused GPU would create a CUDA context (hundreds of
    MiB of GPU memory) just to report it."""
    torch = torch if torch is not None else sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    count = int(torch.cuda.device_count())
    for index in range(count):
        device = f"cuda:{index}"
        metrics.GPU_MEMORY_ALLOCATED.labels(device).set(torch.cuda.memory_allocated(index))
        metrics.GPU_MEMORY_RESERVED.labels(device).set(torch.cuda.memory_reserved(index))
    return count


def sample_gpu_memory_forever(stop: threading.Event) -> None:
    every(GPU_SAMPLE_S, stop, "GPU memory sample", sample_gpu_memory)


def _handler(token: str | None) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found\n", "text/plain; charset=utf-8")
            elif not may_scrape(self.client_address[0], self.headers.get("Authorization", ""), token):
                self._answer(
                    403,
                    b"metrics are served to loopback clients and to requests bearing REEL_METRICS_TOKEN\n",
                    "text/plain; charset=utf-8",
                )
            else:
                self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every 15 s is not news

    return MetricsHandler


def start_metrics_server(host: str, port: int, token: str | None) -> ThreadingHTTPServer:
    """Serve this process's metrics at ``http://host:port/metrics`` from a daemon thread."""
    server = ThreadingHTTPServer((host, port), _handler(token))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
