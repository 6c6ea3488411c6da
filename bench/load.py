"""Load Reel must hold, measured with compiled load generators against a real `reel serve`.

    .venv/bin/python bench/load.py [--stages poll,submit,soak] [--duration-s 20]
        [--soak-s 600] [--json FILE] [--workdir DIR]

Needs Debian's ``wrk`` and ``hey`` (``apt-get install wrk hey``). Each stage starts its own
``reel serve --sandbox`` (SQLite, local disk: what ``make serve`` runs without a GPU) on a
free port with a data dir of its own, and takes its ratios side by side in the same run:

- ``poll``: ``GET /api/v3/predictions/{id}/result`` of a completed prediction with a valid
  key, 200 connections, against the same server's ``/healthz`` (run alternately, twice each).
  Goal: at least 0.6x /healthz's rate, p99 at most 3x /healthz's p99.
- ``submit``: ``POST /api/v3/runwayml/gen4-turbo`` with an 800x600 PNG data URI, 20
  connections, API only (``--no-worker``). Goal: p99 under 100 ms.
- ``soak``: 200 pollers (wrk) and 20 submitters (hey, 1 submission per second each) for
  ``--soak-s`` with the worker running (1-second clips, so it keeps up with part of it);
  RSS of the API and the worker process sampled every 10 s. Goal: 0 errors, 0 5xx, RSS flat
  (within 10 % after warm-up: see ``rss_drift`` for the two ways it is read).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.faults import short_clip_registry  # noqa: E402
from support.server import LiveServer, create_key  # noqa: E402

MODEL = "runwayml/gen4-turbo"


def wrk(
    url: str, connections: int, duration_s: float, *, key: str | None = None, script: Path | None = None
) -> dict[str, Any]:
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{round(duration_s)}s", "--latency"]
    args += ["--timeout", "10s"]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": round(rps, 1),
        "p50_ms": round(_ms(*p50.groups()), 2) if p50 else None,
        "p99_ms": round(_ms(*p99.groups()), 2) if p99 else None,
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def png_data_uri(width: int = 800, height: int = 600) -> str:
    image = Image.effect_mandelbrot((width, height), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def submit_body() -> str:
    return json.dumps({"prompt": "a slow push-in", "image": png_data_uri(), "aspect_ratio": "4:3"})


def post_script(workdir: Path, key: str) -> Path:
    body = workdir / "body.json"
    body.write_text(submit_body())
    script = workdir / "post.lua"
    script.write_text(
        "local f = io.open(" + json.dumps(str(body)) + ", 'r')\n"
        "wrk.body = f:read('*a')\nf:close()\n"
        "wrk.method = 'POST'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
    )
    return script


def start_server(workdir: Path, name: str, *args: str, env: dict[str, str] | None = None) -> LiveServer:
    data_dir = workdir / name
    data_dir.mkdir(parents=True)
    registry = short_clip_registry(data_dir / "models.toml", MODEL)
    server = LiveServer(
        data_dir,
        env={
            "REEL_SANDBOX": "1",
            "REEL_MODELS_FILE": str(registry),
            "REEL_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
    )
    return server.start(*args)


def completed_prediction(server: LiveServer, key: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    reply = httpx.post(
        f"{server.url}/api/v3/{MODEL}",
        json={"prompt": "p", "image": png_data_uri(64, 64), "aspect_ratio": "1:1"},
        headers=headers,
        timeout=30,
    )
    reply.raise_for_status()
    prediction_id: str = reply.json()["data"]["id"]
    for _ in range(600):
        data = httpx.get(f"{server.url}/api/v3/predictions/{prediction_id}/result", headers=headers).json()[
            "data"
        ]
        if data["status"] == "completed":
            return prediction_id
        time.sleep(0.1)
    raise RuntimeError("the warm-up prediction did not complete")


def stage_poll(workdir: Path, duration_s: float) -> dict[str, Any]:
    server = start_server(workdir, "poll")
    try:
        key = create_key(server.data_dir)
        prediction_id = completed_prediction(server, key)
        result_url = f"{server.url}/api/v3/predictions/{prediction_id}/result"
        runs: dict[str, list[dict[str, Any]]] = {"healthz": [], "result": []}
        for _ in range(2):
            runs["healthz"].append(wrk(f"{server.url}/healthz", 200, duration_s))
            runs["result"].append(wrk(result_url, 200, duration_s, key=key))
        healthz_rps = sum(r["rps"] for r in runs["healthz"]) / 2
        result_rps = sum(r["rps"] for r in runs["result"]) / 2
        healthz_p99 = sum(r["p99_ms"] for r in runs["healthz"]) / 2
        result_p99 = sum(r["p99_ms"] for r in runs["result"]) / 2
        return {
            "runs": runs,
            "rate_ratio": round(result_rps / healthz_rps, 3),
            "p99_ratio": round(result_p99 / healthz_p99, 3),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for rs in runs.values() for r in rs),
            "server_5xx": len(server.server_errors()),
        }
    finally:
        server.stop()


def stage_submit(workdir: Path, duration_s: float) -> dict[str, Any]:
    server = start_server(workdir, "submit", "--no-worker")
    try:
        key = create_key(server.data_dir)
        script = post_script(workdir, key)
        wrk(f"{server.url}/api/v3/{MODEL}", 20, 3, script=script)  # warm-up
        run = wrk(f"{server.url}/api/v3/{MODEL}", 20, duration_s, script=script)
        return {"run": run, "server_5xx": len(server.server_errors())}
    finally:
        server.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def stage_soak(workdir: Path, soak_s: float) -> dict[str, Any]:
    server = start_server(workdir, "soak")
    assert server.process is not None
    try:
        key = create_key(server.data_dir)
        prediction_id = completed_prediction(server, key)
        (worker_pid,) = server.worker_pids()
        body = workdir / "soak-body.json"
        body.write_text(submit_body())
        samples: list[dict[str, float]] = []
        stop = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not stop.wait(10):
                samples.append(
                    {
                        "t_s": round(time.monotonic() - started),
                        "api_mib": rss_mib(server.process.pid),  # type: ignore[union-attr]
                        "worker_mib": rss_mib(worker_pid),
                    }
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        submitters = subprocess.Popen(
            [
                "hey",
                "-z",
                f"{soak_s}s",
                "-c",
                "20",
                "-q",
                "1",
                "-t",
                "30",
                "-m",
                "POST",
                "-T",
                "application/json",
                "-H",
                f"Authorization: Bearer {key}",
                "-D",
                str(body),
                f"{server.url}/api/v3/{MODEL}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        pollers = wrk(f"{server.url}/api/v3/predictions/{prediction_id}/result", 200, soak_s, key=key)
        hey_out, _ = submitters.communicate(timeout=soak_s + 120)
        stop.set()
        sampler.join()
        statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", hey_out)}
        hey_errors = re.search(r"Error distribution:(.*)", hey_out, re.S)
        average = re.search(r"Average:\s+([\d.]+) secs", hey_out)
        p99 = re.search(r"99% in ([\d.]+) secs", hey_out)
        return {
            "pollers": pollers,
            "submitters": {
                "statuses": statuses,
                "errors": hey_errors.group(1).strip() if hey_errors else "",
                "mean_ms": round(float(average.group(1)) * 1000, 1) if average else None,
                "p99_ms": round(float(p99.group(1)) * 1000, 1) if p99 else None,
            },
            "predictions": prediction_counts(server),
            "rss_samples": samples,
            "rss_after_warmup": rss_drift(samples),
            "worker_still_the_same": server.worker_pids() == [worker_pid],
            "server_5xx": len(server.server_errors()),
        }
    finally:
        server.stop()


def rss_drift(samples: list[dict[str, float]], warm_up_s: float = 60) -> dict[str, dict[str, float]]:
    """Per process, after warm-up: the peak's growth over the first sample (a process whose
    RSS swings within each job, as the worker's does with each clip, shows its swing here) and
    the trend, the last minute's mean against the first minute's (what a leak shows in)."""
    warm = [s for s in samples if s["t_s"] >= warm_up_s] or samples
    first = [s for s in warm if s["t_s"] < warm[0]["t_s"] + 60]
    last = [s for s in warm if s["t_s"] > warm[-1]["t_s"] - 60]
    drift: dict[str, dict[str, float]] = {}
    for proc in ("api_mib", "worker_mib"):
        mean_first = sum(s[proc] for s in first) / len(first)
        mean_last = sum(s[proc] for s in last) / len(last)
        peak = max(s[proc] for s in warm)
        drift[proc] = {
            "peak_over_first_pct": round(100 * (peak - warm[0][proc]) / warm[0][proc], 1),
            "last_minute_over_first_minute_pct": round(100 * (mean_last - mean_first) / mean_first, 1),
        }
    return drift


def prediction_counts(server: LiveServer) -> dict[str, Any]:
    """What the server says it did, from its own /metrics (answered to loopback clients)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    ended: dict[str, float] = {}
    waiting = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "reel_predictions_total":
                ended[sample.labels["status"]] = ended.get(sample.labels["status"], 0) + sample.value
            elif sample.name == "reel_queue_depth":
                waiting += sample.value
    return {"ended": ended, "waiting": waiting}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default="poll,submit")
    parser.add_argument("--duration-s", type=float, default=20)
    parser.add_argument("--soak-s", type=float, default=600)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install wrk hey")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reel-load-"))
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    for stage in args.stages.split(","):
        print(f"--- {stage}", file=sys.stderr)
        if stage == "poll":
            results[stage] = stage_poll(workdir, args.duration_s)
        elif stage == "submit":
            results[stage] = stage_submit(workdir, args.duration_s)
        elif stage == "soak":
            results[stage] = stage_soak(workdir, args.soak_s)
        else:
            sys.exit(f"unknown stage {stage!r}")
        print(json.dumps(results[stage], indent=1), file=sys.stderr)
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
