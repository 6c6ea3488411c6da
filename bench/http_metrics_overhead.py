"""What the HTTP metrics middleware costs: the API with and without it, side by side.

Each variant is the app ``reel serve --no-worker`` runs (prometheus-client's multiprocess mode
on, uvicorn with its access log, SQLite), in a process of its own; the only difference is
whether ``HttpMetricsMiddleware`` is in the stack. ``wrk`` (Debian's) measures ``/healthz``
and result polls (``GET /api/v3/predictions/{id}/result`` with a valid key), alternating the
variants for ``--rounds`` rounds:

    .venv/bin/python bench/http_metrics_overhead.py --seconds 10 --rounds 2
    .venv/bin/python bench/http_metrics_overhead.py --micro 200000   # the middleware alone
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def serve(variant: str, port: int, data_dir: Path) -> None:
    from reel import metrics
    from reel.logs import setup_logging

    setup_logging()
    metrics.use_multiprocess_dir(metrics.serve_dir(data_dir))
    import io

    import uvicorn
    from PIL import Image

    from reel.api.app import create_app
    from reel.api.http_metrics import HttpMetricsMiddleware
    from reel.settings import Settings
    from reel.wiring import build_services

    services = build_services(Settings(data_dir=data_dir, sandbox=True, port=port))
    plaintext, _info = services.keys.create("bench")
    png = io.BytesIO()
    Image.new("RGB", (640, 360), (200, 40, 40)).save(png, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    owner = services.keys.authenticate(plaintext)
    body = {"prompt": "x", "image": image}
    submission = services.predictions.submit(owner, "runwayml/gen4-turbo", body, None)
    (data_dir / "target.json").write_text(json.dumps({"key": plaintext, "id": submission.prediction.id}))
    app = create_app(services)
    if variant == "without":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HttpMetricsMiddleware]
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")


def micro(requests: int) -> None:
    """The middleware's own time per request: a trivial ASGI app with and without it, in one
    process, multiprocess mode on (each observation is written to an mmap'ed file)."""
    import asyncio

    from reel import metrics

    metrics.use_multiprocess_dir(Path(tempfile.mkdtemp(prefix="reel-mw-micro-")))
    from fastapi.routing import APIRoute

    from reel.api.http_metrics import HttpMetricsMiddleware

    route = APIRoute("/api/v3/predictions/{prediction_id}/result", lambda: None)

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        scope["route"] = route  # as FastAPI's router sets it
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async def sink(message: object) -> None:
        pass

    async def run(handler: object) -> float:
        scope = {"type": "http", "method": "GET", "path": "/x"}
        started = time.perf_counter()
        for _ in range(requests):
            await handler(dict(scope), None, sink)  # type: ignore[operator]
        return (time.perf_counter() - started) / requests * 1e6

    for _round in range(3):
        bare = asyncio.run(run(app))
        wrapped = asyncio.run(run(HttpMetricsMiddleware(app)))
        extra = wrapped - bare
        print(f"app alone {bare:5.2f} µs/request, with the middleware {wrapped:5.2f} µs: +{extra:.2f} µs")


def wrk(url: str, seconds: int, key: str | None = None) -> tuple[float, str]:
    args = ["wrk", "-t2", "-c200", f"-d{seconds}s", "--latency", url]
    if key:
        args[1:1] = ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rate, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["with", "without"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--micro", type=int, metavar="N", help="time N requests in-process instead")
    args = parser.parse_args()
    if args.micro:
        micro(args.micro)
        return
    if args.serve:
        serve(args.serve, args.port, args.data_dir)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from support.server import free_port

    for _round in range(args.rounds):
        for variant in ("without", "with"):
            workdir = Path(tempfile.mkdtemp(prefix="reel-mw-"))
            port = free_port()
            command = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
            process = subprocess.Popen([*command, "--data-dir", str(workdir)])
            try:
                url = f"http://127.0.0.1:{port}"
                for _ in range(300):
                    try:
                        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                target = json.loads((workdir / "target.json").read_text())
                health = wrk(f"{url}/healthz", args.seconds)
                poll = wrk(f"{url}/api/v3/predictions/{target['id']}/result", args.seconds, target["key"])
                line = (
                    f"{variant:>8}: /healthz {health[0]:7.0f}/s p99 {health[1]:>8}   "
                    f"result {poll[0]:7.0f}/s p99 {poll[1]:>8}"
                )
                print(line, flush=True)
            finally:
                process.terminate()
                process.wait(30)
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
