"""Render docs/grafana-dashboard.json's panels from real data: a picture of the dashboard.

Grafana itself is not installable on the machine this was made on (not in Debian, no server
on PyPI or npm), so this does what Grafana would do, minus Grafana:

1. starts ``reel serve --sandbox`` on a fresh data dir and Debian's ``prometheus`` (apt-get
   install prometheus) scraping its ``/metrics`` every 5 s;
2. drives load for ``--minutes``: a steady trickle of submissions, a burst that builds a
   queue, some ``[sandbox:fail]`` prompts, some cancels, result polling and a few bad requests;
3. asks Prometheus (``/api/v1/query_range``) for every target of every panel of the dashboard
   JSON, exactly as written there, and draws the answers with matplotlib in the dashboard's
   grid layout.

    .venv/bin/python bench/metrics_dashboard.py --minutes 8 --out docs/grafana-dashboard.png

matplotlib is not a Reel dependency: ``pip install matplotlib`` into the venv first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.media import png_base64  # noqa: E402
from support.server import LiveServer, create_key, free_port  # noqa: E402

MODEL = "runwayml/gen4-turbo"
STEP_S = 5


def start_prometheus(workdir: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        "scrape_configs:\n  - job_name: reel-api\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 - the child holds it
    process = subprocess.Popen(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


class Load:
    """Submitters and pollers against one server, for a given time."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.image = png_base64()
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def submit(self, prompt: str) -> str | None:
        reply = self.client.post(f"/api/v3/{MODEL}", json={"prompt": prompt, "image": self.image})
        if reply.status_code != 200:
            return None
        prediction_id: str = reply.json()["data"]["id"]
        with self.lock:
            self.ids.append(prediction_id)
        return prediction_id

    def submitter(self, minutes: float) -> None:
        started = time.monotonic()
        rng = random.Random(7)
        burst_done = False
        while not self.stop.is_set():
            elapsed = (time.monotonic() - started) / 60
            if not burst_done and elapsed > minutes * 0.3:
                for n in range(10):  # a queue builds up, then drains
                    self.submit(f"burst {n}")
                burst_done = True
            roll = rng.random()
            prompt = "a slow push-in [sandbox:fail]" if roll < 0.15 else "a slow push-in"
            prediction_id = self.submit(prompt)
            if prediction_id and roll > 0.9:
                self.client.post(f"/api/v3/predictions/{prediction_id}/cancel")
            self.stop.wait(rng.uniform(10, 22))

    def poller(self) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            with self.lock:
                recent = self.ids[-10:]
            if recent:
                self.client.get(f"/api/v3/predictions/{rng.choice(recent)}/result")
            if rng.random() < 0.05:
                self.client.post("/api/v3/predictions", json={"page": 1, "page_size": 10})
            if rng.random() < 0.02:
                self.client.get("/api/v3/predictions/not-a-prediction/result")  # a 404
            if rng.random() < 0.02:
                httpx.get(f"{self.url}/api/v3/predictions/x/result", timeout=10)  # no key: a 401
            self.stop.wait(rng.uniform(0.05, 0.3))


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{prometheus}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP_S},
        timeout=30,
    )
    reply.raise_for_status()
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def render(dashboard: dict[str, Any], prometheus: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(20, rows * 0.52), facecolor="#111217")
    grid = figure.add_gridspec(rows, 24, hspace=2.2, wspace=1.2, left=0.04, right=0.99, top=0.95, bottom=0.05)
    figure.suptitle(
        f"{dashboard['title']} — docs/grafana-dashboard.json's queries on Prometheus, drawn with matplotlib "
        "(not Grafana; see docs/metrics.md)",
        color="#d8d9da",
        fontsize=13,
    )
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(grid[pos["y"] : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]])
        axes.set_facecolor("#181b1f")
        axes.set_title(panel["title"], color="#d8d9da", fontsize=10, loc="left")
        axes.tick_params(colors="#9fa7b3", labelsize=7)
        for spine in axes.spines.values():
            spine.set_color("#2c3235")
        axes.grid(color="#2c3235", linewidth=0.6)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        drawn = 0
        for target in panel["targets"]:
            for series in query_range(prometheus, target["expr"], start, end):
                points = [(datetime.fromtimestamp(t, UTC), float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if v == v]  # NaN: no data in that window
                if not points:
                    continue
                times, values = zip(*points, strict=True)
                if unit == "bytes":
                    values = tuple(v / 2**30 for v in values)
                label = legend(target["legendFormat"], series["metric"])
                axes.plot(times, values, linewidth=1.6, label=label)
                drawn += 1
        suffix = {"s": "seconds", "reqps": "requests/s", "percentunit": "share", "bytes": "GiB"}.get(unit, "")
        axes.set_ylabel(suffix, color="#9fa7b3", fontsize=8)
        axes.set_xlim(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        axes.set_ylim(bottom=0)
        if drawn:
            axes.legend(
                fontsize=7, facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da", loc="upper left"
            )
        else:
            axes.text(
                0.5, 0.5, "No data", color="#9fa7b3", ha="center", va="center", transform=axes.transAxes
            )
    figure.savefig(out, dpi=80, facecolor=figure.get_facecolor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grafana-dashboard.png")
    args = parser.parse_args()
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    workdir = Path(tempfile.mkdtemp(prefix="reel-dashboard-"))
    server = LiveServer(workdir / "data", env={"REEL_LOG_FORMAT": "json"}).start("--sandbox")
    prometheus, prometheus_url = start_prometheus(workdir, server.port)
    try:
        load = Load(server.url, create_key(server.data_dir, "dashboard"))
        start = time.time()
        threads = [threading.Thread(target=load.submitter, args=(args.minutes,))]
        threads += [threading.Thread(target=load.poller) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(args.minutes * 60)
        load.stop.set()
        for thread in threads:
            thread.join()
        time.sleep(2 * STEP_S)  # a last scrape or two
        end = time.time()
        render(dashboard, prometheus_url, start, end, args.out)
        print(f"{len(load.ids)} predictions submitted; wrote {args.out}")
    finally:
        prometheus.send_signal(signal.SIGTERM)
        prometheus.wait(30)
        server.stop()
        if not os.environ.get("KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
